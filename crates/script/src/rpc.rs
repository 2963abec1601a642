//! The script engine's admin RPC methods, with Kamailio's names,
//! parameters and result shapes:
//!
//! - `htable.get TABLE KEY` → `{"item": {"name", "value", "flags",
//!   "expire"}}` (`flags` 2 for a string, 0 for an integer, as Kamailio's;
//!   `expire` "NEVER" or the UTC time `YYYY-MM-DD HH:MM:SS`);
//! - `htable.sets TABLE KEY VALUE`, `htable.seti TABLE KEY INT` →
//!   `"Ok. Key set to new value."`;
//! - `htable.delete TABLE KEY` → `"Ok. Key deleted."`;
//! - `htable.dump TABLE` → `[{"entry", "size", "slot": [{"name", "value",
//!   "type"}]}]`: our tables have no hash slots, so all live entries come
//!   in one slot (`entry` 0), sorted by name; `[]` for an empty table;
//! - `app_lua.reload [POS]` → `{"file", "old", "new"}`: the script file
//!   read again and checked; see [`Engine::reload`].
//!
//! They act on the same shared tables as the script's `KSR.htable` and
//! `$sht`. A table must exist (defined in `[htable]`, or written once by
//! the script): an unknown one is an error naming it, as Kamailio's "No
//! such htable".

use crate::engine::Engine;
use crate::pv::PvValue;
use crate::shared::NoTable;
use rpc::{object, Params, Registry, RpcError, RpcResult};
use serde_json::{json, Value};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One of this file's methods.
type Method = fn(&Engine, &Params) -> RpcResult;

/// Add `htable.*` and `app_lua.reload`, acting on `engine`. The registry
/// holds the engine weakly: the engine holds the registry (for
/// `KSR.jsonrpcs.exec`), and a method called after the engine is gone
/// fails cleanly.
pub fn register(registry: &Registry, engine: &Arc<Engine>) {
    let methods: [(&str, &'static str, Method); 6] = [
        (
            "htable.get",
            "One entry of a shared table: htable.get TABLE KEY.",
            get,
        ),
        (
            "htable.sets",
            "Set a string: htable.sets TABLE KEY VALUE.",
            sets,
        ),
        (
            "htable.seti",
            "Set an integer: htable.seti TABLE KEY VALUE.",
            seti,
        ),
        (
            "htable.delete",
            "Remove an entry: htable.delete TABLE KEY.",
            delete,
        ),
        (
            "htable.dump",
            "Every live entry of a shared table: htable.dump TABLE.",
            dump,
        ),
        (
            "app_lua.reload",
            "Read the script file again; if it loads, new messages run it (app_lua.reload [POS]).",
            reload,
        ),
    ];
    for (name, help, f) in methods {
        let weak: Weak<Engine> = Arc::downgrade(engine);
        registry.register(name, help, move |p| {
            let engine = weak
                .upgrade()
                .ok_or_else(|| RpcError::failed("the script engine has stopped"))?;
            f(&engine, p)
        });
    }
}

fn no_table(table: &str) -> RpcError {
    RpcError::not_found(format!("no htable {table:?}"))
}

fn no_key(table: &str, key: &str) -> RpcError {
    RpcError::not_found(format!("no key {key:?} in htable {table:?}"))
}

fn value_json(v: &PvValue) -> Value {
    match v {
        PvValue::Int(i) => json!(i),
        PvValue::Str(s) => json!(String::from_utf8_lossy(s)),
    }
}

fn get(engine: &Engine, p: &Params) -> RpcResult {
    let table = p.str(0, "htable name")?;
    let key = p.str(1, "key name")?;
    p.no_more(2)?;
    let (value, left) = engine
        .handles
        .shared()
        .sht_entry(table, key)
        .map_err(|NoTable| no_table(table))?
        .ok_or_else(|| no_key(table, key))?;
    let flags = match value {
        PvValue::Int(_) => 0,
        PvValue::Str(_) => 2,
    };
    let expire = match left {
        None => "NEVER".to_string(),
        Some(d) => utc_text(SystemTime::now() + d),
    };
    Ok(
        json!({"item": {"name": key, "value": value_json(&value), "flags": flags, "expire": expire}}),
    )
}

fn set(engine: &Engine, table: &str, key: &str, value: PvValue) -> RpcResult {
    let shared = engine.handles.shared();
    if !shared.sht_exists(table) {
        return Err(no_table(table));
    }
    shared.sht_set(table, key, Some(value)).map_err(|full| {
        RpcError::failed(format!(
            "htable {table:?} holds [htable] max_entries = {} keys; {key:?} not set",
            full.max
        ))
    })?;
    Ok(json!("Ok. Key set to new value."))
}

fn sets(engine: &Engine, p: &Params) -> RpcResult {
    let table = p.str(0, "htable name")?;
    let key = p.str(1, "key name")?;
    let value = p.str(2, "value")?;
    p.no_more(3)?;
    set(engine, table, key, PvValue::from(value))
}

fn seti(engine: &Engine, p: &Params) -> RpcResult {
    let table = p.str(0, "htable name")?;
    let key = p.str(1, "key name")?;
    let value = p.int(2, "value")?;
    p.no_more(3)?;
    set(engine, table, key, PvValue::Int(value))
}

fn delete(engine: &Engine, p: &Params) -> RpcResult {
    let table = p.str(0, "htable name")?;
    let key = p.str(1, "key name")?;
    p.no_more(2)?;
    let removed = engine
        .handles
        .shared()
        .sht_delete(table, key)
        .map_err(|NoTable| no_table(table))?;
    if !removed {
        return Err(no_key(table, key));
    }
    Ok(json!("Ok. Key deleted."))
}

fn dump(engine: &Engine, p: &Params) -> RpcResult {
    let table = p.str(0, "htable name")?;
    p.no_more(1)?;
    let entries = engine
        .handles
        .shared()
        .sht_dump(table)
        .map_err(|NoTable| no_table(table))?;
    if entries.is_empty() {
        return Ok(json!([]));
    }
    let slot: Vec<Value> = entries
        .iter()
        .map(|(k, v)| {
            let kind = match v {
                PvValue::Int(_) => "int",
                PvValue::Str(_) => "str",
            };
            json!({"name": k, "value": value_json(v), "type": kind})
        })
        .collect();
    Ok(json!([{"entry": 0, "size": slot.len(), "slot": slot}]))
}

fn reload(engine: &Engine, p: &Params) -> RpcResult {
    // Kamailio's app_lua can hold several scripts, chosen by position;
    // we have one: 0, or -1 for "all".
    match p.opt_int(0, "script position")? {
        None | Some(0 | -1) => {}
        Some(n) => {
            return Err(RpcError::invalid_params(format!(
                "parameter 1 (script position) {n}: there is one script, 0"
            )))
        }
    }
    p.no_more(1)?;
    let r = engine
        .reload("app_lua.reload")
        .map_err(|e| RpcError::failed(format!("reload refused, the old script stays: {e}")))?;
    Ok(object([
        ("file", json!(r.file.display().to_string())),
        ("old", json!(r.old)),
        ("new", json!(r.new)),
    ]))
}

/// `YYYY-MM-DD HH:MM:SS` in UTC (Kamailio prints local time in this form).
fn utc_text(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_text_is_calendar_time() {
        let at = |s: u64| utc_text(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01 00:00:00");
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(at(1_798_761_599), "2026-12-31 23:59:59");
        assert_eq!(at(4_107_542_400), "2100-03-01 00:00:00");
    }
}
