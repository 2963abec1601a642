//! Shared tables (`$sht(table=>key)`): `KSR.htable.sht_get(table, key)`
//! (nil when unset), `sht_sets(table, key, s)`, `sht_seti(table, key, i)`
//! and `sht_rm(table, key)`: 1, or -1 for a value that is not an integer.
//! Tables are created on first write (or defined in `[htable]`, with
//! `autoexpire`) and shared by every worker; a write past `[htable]
//! max_entries` keys returns -1. `sht_match_name(table, op, value)`: 1 when
//! a live key matches (`op` "eq", "ne", "sw" (starts with) or "re"
//! (regular expression, Rust syntax)), else -1.

use super::module::{kemi_bool, lua_int, Cx, Fail, Module};
use crate::pv::PvValue;
use mlua::{LuaString, Value};

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func("sht_get", |cx, (table, key): (String, String)| {
        Ok(cx.value(cx.shared().sht_get(&table, &key))?)
    })?;
    m.func(
        "sht_sets",
        |cx, (table, key, value): (String, String, LuaString)| {
            let value = PvValue::Str(value.as_bytes().to_vec());
            set(cx, &table, &key, value)
        },
    )?;
    m.func(
        "sht_seti",
        |cx, (table, key, value): (String, String, Value)| {
            let i = lua_int(&value).ok_or_else(|| {
                Fail::new(format_args!("{table}=>{key}: the value is not an integer"))
            })?;
            set(cx, &table, &key, PvValue::Int(i))
        },
    )?;
    m.func("sht_rm", |cx, (table, key): (String, String)| {
        let _ = cx.shared().sht_set(&table, &key, None);
        Ok(1)
    })?;
    m.func(
        "sht_match_name",
        |cx, (table, op, value): (String, String, String)| {
            let shared = cx.shared();
            let found = match op.as_str() {
                "eq" => shared.sht_any_key(&table, |k| k == value),
                "ne" => shared.sht_any_key(&table, |k| k != value),
                "sw" => shared.sht_any_key(&table, |k| k.starts_with(&value)),
                "re" => {
                    let re = regex::Regex::new(&value).map_err(|e| {
                        Fail::new(format_args!("bad regular expression {value:?}: {e}"))
                    })?;
                    shared.sht_any_key(&table, |k| re.is_match(k))
                }
                other => {
                    return Err(Fail::new(format_args!(
                        "operator {other:?}: use eq, ne, sw or re"
                    )))
                }
            };
            Ok(kemi_bool(found))
        },
    )
}

fn set(cx: &Cx<'_>, table: &str, key: &str, value: PvValue) -> Result<i64, Fail> {
    cx.shared()
        .sht_set(table, key, Some(value))
        .map_err(|full| {
            Fail::new(format_args!(
                "{table}=>{key}: the table holds [htable] max_entries = {} keys; not set",
                full.max
            ))
        })?;
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::super::testing::Vm;

    #[test]
    fn tables_are_shared_with_sht_pvs() {
        let vm = Vm::new();
        let r = vm.eval::<(i64, i64, i64, String, i64, i64)>(
            r#"KSR.htable.sht_sets("t", "k", "v"), KSR.htable.sht_seti("t", "n", 4.0),
               KSR.htable.sht_seti("t", "bad", "x"), KSR.htable.sht_get("t", "k"),
               KSR.htable.sht_get("t", "n"), KSR.pv.get("$sht(t=>n)")"#,
        );
        assert_eq!(r, (1, 1, -1, "v".into(), 4, 4));
        // Another VM of the same engine sees them.
        let other = vm.sibling();
        assert_eq!(other.eval::<String>(r#"KSR.htable.sht_get("t", "k")"#), "v");
        assert_eq!(other.eval::<i64>(r#"KSR.htable.sht_rm("t", "k")"#), 1);
        assert!(vm
            .eval::<Option<String>>(r#"KSR.htable.sht_get("t", "k")"#)
            .is_none());
        assert!(vm
            .eval::<Option<String>>(r#"KSR.htable.sht_get("t", "bad")"#)
            .is_none());
    }

    #[test]
    fn match_name_finds_live_keys() {
        let vm = Vm::new();
        let r = vm.eval::<(i64, i64, i64, i64, i64, i64, i64)>(
            r#"KSR.htable.sht_seti("ipban", "192.0.2.1", 1),
               KSR.htable.sht_match_name("ipban", "eq", "192.0.2.1"),
               KSR.htable.sht_match_name("ipban", "eq", "192.0.2.2"),
               KSR.htable.sht_match_name("ipban", "sw", "192.0.2."),
               KSR.htable.sht_match_name("ipban", "re", "^192\\.0\\.2\\.[0-9]$"),
               KSR.htable.sht_match_name("nosuch", "eq", "x"),
               KSR.htable.sht_match_name("ipban", "gt", "x")"#,
        );
        assert_eq!(r, (1, 1, -1, 1, 1, -1, -1));
    }
}
