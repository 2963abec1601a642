//! The `KSR` object: Kamailio's KEMI functions, with their names, argument
//! order and return conventions (positive: success, negative: failure).

use crate::engine::{with_current, with_vars, Engine, Unwind};
use crate::json;
use crate::ops::EventOps;
use crate::pv::{EvField, Pv, PvValue};
use mlua::{Lua, Table, Value};
use std::sync::Arc;
use tracing::{debug, error, info, warn};

/// Install `KSR`, `package.preload.cjson` and the helpers on a new VM.
pub(crate) fn install(lua: &Lua, engine: &Arc<Engine>) -> mlua::Result<()> {
    let ksr = lua.create_table()?;
    install_log(lua, &ksr)?;
    install_x(lua, &ksr)?;
    install_pv(lua, &ksr, engine)?;
    install_evapi(lua, &ksr, engine)?;
    install_htable(lua, &ksr, engine)?;
    install_jansson(lua, &ksr, engine)?;
    crate::route::install(lua, &ksr, engine)?;
    lua.globals().set("KSR", ksr)?;

    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    let loader = lua.create_function(|lua, _: mlua::MultiValue| json::cjson_module(lua))?;
    preload.set("cjson", loader.clone())?;
    preload.set("cjson.safe", loader)?;
    Ok(())
}

/// Log levels as Kamailio names them.
fn log_at(level: &str, msg: &str) -> bool {
    let msg = msg.trim_end_matches(['\n', '\r']);
    match level {
        "dbg" | "debug" => debug!(target: "script", "{msg}"),
        "info" | "notice" => info!(target: "script", "{msg}"),
        "warn" | "warning" => warn!(target: "script", "{msg}"),
        "err" | "error" | "crit" | "alert" | "bug" => error!(target: "script", "{msg}"),
        _ => return false,
    }
    true
}

fn install_log(lua: &Lua, ksr: &Table) -> mlua::Result<()> {
    for level in ["dbg", "info", "notice", "warn", "err", "crit", "alert"] {
        ksr.set(
            level,
            lua.create_function(move |_, msg: mlua::LuaString| {
                log_at(level, &msg.to_string_lossy());
                Ok(())
            })?,
        )?;
    }
    ksr.set(
        "log",
        lua.create_function(|_, (level, msg): (String, mlua::LuaString)| {
            let msg = msg.to_string_lossy();
            if !log_at(&level, &msg) {
                warn!(target: "script", level, "KSR.log: unknown level; message: {msg}");
            }
            Ok(())
        })?,
    )
}

fn install_x(lua: &Lua, ksr: &Table) -> mlua::Result<()> {
    let x = lua.create_table()?;
    x.set(
        "exit",
        lua.create_function(|_, ()| Err::<(), _>(mlua::Error::external(Unwind::Exit)))?,
    )?;
    x.set(
        "drop",
        lua.create_function(|_, ()| Err::<(), _>(mlua::Error::external(Unwind::Drop)))?,
    )?;
    ksr.set("x", x)
}

/// A pseudo-variable value as a Lua value.
pub(crate) fn pv_to_lua(lua: &Lua, v: Option<PvValue>) -> mlua::Result<Value> {
    Ok(match v {
        None => Value::Nil,
        Some(PvValue::Int(i)) => Value::Integer(i),
        Some(PvValue::Str(s)) => Value::String(lua.create_string(&s)?),
    })
}

fn parse_pv(name: &str) -> Option<Pv> {
    match Pv::parse(name) {
        Ok(pv) => Some(pv),
        Err(e) => {
            warn!(target: "script", "{e}");
            None
        }
    }
}

/// Read a pseudo-variable in the VM's current context.
pub(crate) fn pv_get(lua: &Lua, engine: &Engine, pv: &Pv) -> Option<PvValue> {
    match pv {
        Pv::Var(n) => with_vars(lua, |v| v.0.get(n).cloned()),
        Pv::Shv(n) => engine.shared.shv_get(n),
        Pv::Sht(t, k) => engine.shared.sht_get(t, k),
        Pv::Evapi(field) => with_current(lua, |cur| {
            let ev = cur.evapi.as_ref()?;
            Some(match field {
                EvField::Msg => PvValue::Str(ev.msg.as_ref()?.to_vec()),
                EvField::SrcAddr => PvValue::from(ev.client.peer().ip().to_string().as_str()),
                EvField::SrcPort => PvValue::Int(ev.client.peer().port().into()),
                EvField::ConIdx => PvValue::Int(ev.client.conidx() as i64),
            })
        }),
        _ => crate::route::sip_pv_get(lua, pv),
    }
}

/// Write (`Some`) or unset (`None`) a pseudo-variable; false when it is
/// not writable here.
pub(crate) fn pv_set(lua: &Lua, engine: &Engine, pv: &Pv, value: Option<PvValue>) -> bool {
    match pv {
        Pv::Var(n) => {
            with_vars(lua, |v| match value {
                Some(x) => v.0.insert(n.clone(), x),
                None => v.0.remove(n),
            });
            true
        }
        Pv::Shv(n) => {
            engine.shared.shv_set(n, value);
            true
        }
        Pv::Sht(t, k) => {
            engine.shared.sht_set(t, k, value);
            true
        }
        _ => crate::route::sip_pv_set(lua, pv, value),
    }
}

/// An integer argument that Lua may hand over as a float (5.1 scripts).
pub(crate) fn lua_int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        Value::Number(n) if n.fract() == 0.0 && n.is_finite() => Some(*n as i64),
        Value::String(s) => s.to_str().ok()?.trim().parse().ok(),
        _ => None,
    }
}

fn install_pv(lua: &Lua, ksr: &Table, engine: &Arc<Engine>) -> mlua::Result<()> {
    let pv = lua.create_table()?;
    let e = Arc::downgrade(engine);
    pv.set(
        "get",
        lua.create_function(move |lua, name: String| {
            let Some(engine) = e.upgrade() else {
                return Ok(Value::Nil);
            };
            let v = parse_pv(&name).and_then(|p| pv_get(lua, &engine, &p));
            pv_to_lua(lua, v)
        })?,
    )?;
    let e = Arc::downgrade(engine);
    pv.set(
        "gete",
        lua.create_function(move |lua, name: String| {
            let Some(engine) = e.upgrade() else {
                return Ok(Value::Nil);
            };
            let v = parse_pv(&name).and_then(|p| pv_get(lua, &engine, &p));
            pv_to_lua(lua, Some(v.unwrap_or(PvValue::Str(Vec::new()))))
        })?,
    )?;
    let e = Arc::downgrade(engine);
    pv.set(
        "is_null",
        lua.create_function(move |lua, name: String| {
            let Some(engine) = e.upgrade() else {
                return Ok(true);
            };
            Ok(parse_pv(&name)
                .and_then(|p| pv_get(lua, &engine, &p))
                .is_none())
        })?,
    )?;
    let e = Arc::downgrade(engine);
    pv.set(
        "sets",
        lua.create_function(move |lua, (name, value): (String, mlua::LuaString)| {
            let Some(engine) = e.upgrade() else {
                return Ok(-1);
            };
            let ok = parse_pv(&name).is_some_and(|p| {
                pv_set(
                    lua,
                    &engine,
                    &p,
                    Some(PvValue::Str(value.as_bytes().to_vec())),
                )
            });
            Ok(if ok { 1 } else { -1 })
        })?,
    )?;
    let e = Arc::downgrade(engine);
    pv.set(
        "seti",
        lua.create_function(move |lua, (name, value): (String, Value)| {
            let Some(engine) = e.upgrade() else {
                return Ok(-1);
            };
            let Some(i) = lua_int(&value) else {
                warn!(target: "script", pv = name, "KSR.pv.seti: value is not an integer");
                return Ok(-1);
            };
            let ok =
                parse_pv(&name).is_some_and(|p| pv_set(lua, &engine, &p, Some(PvValue::Int(i))));
            Ok(if ok { 1 } else { -1 })
        })?,
    )?;
    let e = Arc::downgrade(engine);
    pv.set(
        "unset",
        lua.create_function(move |lua, name: String| {
            let Some(engine) = e.upgrade() else {
                return Ok(-1);
            };
            let ok = parse_pv(&name).is_some_and(|p| pv_set(lua, &engine, &p, None));
            Ok(if ok { 1 } else { -1 })
        })?,
    )?;
    ksr.set("pv", pv)
}

fn install_evapi(lua: &Lua, ksr: &Table, engine: &Arc<Engine>) -> mlua::Result<()> {
    let t = lua.create_table()?;
    install_sends(lua, &t, engine, false)?;
    install_sends(lua, &t, engine, true)?;
    t.set(
        "close",
        lua.create_function(|lua, ()| {
            Ok(with_current(lua, |cur| match &cur.evapi {
                Some(ev) => {
                    ev.client.close();
                    1
                }
                None => {
                    warn!(target: "script", "KSR.evapi.close: not inside an evapi event");
                    -1
                }
            }))
        })?,
    )?;
    t.set(
        "set_tag",
        lua.create_function(|lua, tag: mlua::LuaString| {
            let client = with_current(lua, |cur| cur.evapi.as_ref().map(|e| e.client.clone()));
            let Some(client) = client else {
                warn!(target: "script", "KSR.evapi.set_tag: not inside an evapi event");
                return Ok(-1);
            };
            Ok(match client.set_tag(&tag.as_bytes()) {
                Ok(()) => 1,
                Err(e) => {
                    warn!(target: "script", conidx = client.conidx(), "KSR.evapi.set_tag: {e}");
                    -1
                }
            })
        })?,
    )?;
    let e = Arc::downgrade(engine);
    t.set(
        "client_count",
        lua.create_function(move |_, tag: Option<mlua::LuaString>| {
            let Some(h) = e.upgrade().and_then(|e| e.evapi.clone()) else {
                return Ok(0);
            };
            Ok(match tag {
                Some(t) => h.tag_count(&t.as_bytes()),
                None => h.client_count(),
            } as i64)
        })?,
    )?;
    ksr.set("evapi", t)
}

/// One of the event socket's ways to send: (handle, data, tag).
pub(crate) type SendFn = fn(&dyn EventOps, &[u8], &[u8]) -> Result<usize, evapi::SendError>;

/// The four ways to send, by their KEMI names (plain, async), and whether
/// they take a tag. `*_rr` are ours: unicast taking the clients of a tag in
/// turn.
fn sends() -> [(&'static str, &'static str, SendFn, bool); 4] {
    [
        ("relay", "async_relay", |h, d, _| h.relay(d), false),
        (
            "relay_multicast",
            "async_multicast",
            |h, d, t| h.multicast(d, t),
            true,
        ),
        (
            "relay_unicast",
            "async_unicast",
            |h, d, t| h.unicast(d, t),
            true,
        ),
        (
            "relay_unicast_rr",
            "async_unicast_rr",
            |h, d, t| h.unicast_round_robin(d, t),
            true,
        ),
    ]
}

/// Install the plain sends, or the async ones (which suspend the current
/// transaction first: see `route::async_send`). Empty data, or a missing
/// or empty tag, is -1 before anything else happens.
fn install_sends(lua: &Lua, t: &Table, engine: &Arc<Engine>, suspend: bool) -> mlua::Result<()> {
    for (plain, async_name, send, tagged) in sends() {
        let name = if suspend { async_name } else { plain };
        let e = Arc::downgrade(engine);
        t.set(
            name,
            lua.create_function(
                move |lua, (data, tag): (mlua::LuaString, Option<mlua::LuaString>)| {
                    let Some(engine) = e.upgrade() else {
                        return Ok(-1);
                    };
                    let data = data.as_bytes().to_vec();
                    let tag = tag.map(|t| t.as_bytes().to_vec()).unwrap_or_default();
                    if data.is_empty() || (tagged && tag.is_empty()) {
                        warn!(target: "script", "KSR.evapi.{name}: empty event data or tag");
                        return Ok(-1);
                    }
                    Ok(if suspend {
                        crate::route::async_send(lua, &engine, name, send, &data, &tag)
                    } else {
                        evapi_send(&engine, name, send, &data, &tag)
                    })
                },
            )?,
        )?;
    }
    Ok(())
}

/// Send through the event socket, with Kamailio's return convention.
pub(crate) fn evapi_send(
    engine: &Engine,
    name: &str,
    send: SendFn,
    data: &[u8],
    tag: &[u8],
) -> i64 {
    let Some(h) = engine.evapi.as_deref() else {
        warn!(target: "script", "KSR.evapi.{name}: no event socket is running");
        return -1;
    };
    match send(h, data, tag) {
        Ok(_) => 1,
        Err(e) => {
            warn!(target: "script", "KSR.evapi.{name}: {e}");
            -1
        }
    }
}

fn install_htable(lua: &Lua, ksr: &Table, engine: &Arc<Engine>) -> mlua::Result<()> {
    let t = lua.create_table()?;
    let e = Arc::downgrade(engine);
    t.set(
        "sht_get",
        lua.create_function(move |lua, (table, key): (String, String)| {
            let v = e.upgrade().and_then(|e| e.shared.sht_get(&table, &key));
            pv_to_lua(lua, v)
        })?,
    )?;
    let e = Arc::downgrade(engine);
    t.set(
        "sht_sets",
        lua.create_function(
            move |_, (table, key, value): (String, String, mlua::LuaString)| {
                let Some(engine) = e.upgrade() else {
                    return Ok(-1);
                };
                engine
                    .shared
                    .sht_set(&table, &key, Some(PvValue::Str(value.as_bytes().to_vec())));
                Ok(1)
            },
        )?,
    )?;
    let e = Arc::downgrade(engine);
    t.set(
        "sht_seti",
        lua.create_function(move |_, (table, key, value): (String, String, Value)| {
            let Some(engine) = e.upgrade() else {
                return Ok(-1);
            };
            let Some(i) = lua_int(&value) else {
                return Ok(-1);
            };
            engine.shared.sht_set(&table, &key, Some(PvValue::Int(i)));
            Ok(1)
        })?,
    )?;
    let e = Arc::downgrade(engine);
    t.set(
        "sht_rm",
        lua.create_function(move |_, (table, key): (String, String)| {
            let Some(engine) = e.upgrade() else {
                return Ok(-1);
            };
            engine.shared.sht_set(&table, &key, None);
            Ok(1)
        })?,
    )?;
    ksr.set("htable", t)
}

fn install_jansson(lua: &Lua, ksr: &Table, engine: &Arc<Engine>) -> mlua::Result<()> {
    let t = lua.create_table()?;
    let e = Arc::downgrade(engine);
    t.set(
        "get",
        lua.create_function(
            move |lua, (path, text, pvname): (String, mlua::LuaString, String)| {
                let Some(engine) = e.upgrade() else {
                    return Ok(-1);
                };
                let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&text.as_bytes()) else {
                    warn!(target: "script", "KSR.jansson.get: the document is not valid JSON");
                    return Ok(-1);
                };
                let Some(found) = json::path_get(&doc, &path) else {
                    return Ok(-1);
                };
                let value = match found {
                    serde_json::Value::String(s) => PvValue::from(s.as_str()),
                    serde_json::Value::Number(n) => match n.as_i64() {
                        Some(i) => PvValue::Int(i),
                        None => PvValue::from(n.to_string().as_str()),
                    },
                    serde_json::Value::Bool(b) => PvValue::Int(*b as i64),
                    serde_json::Value::Null => return Ok(-1),
                    other => PvValue::from(other.to_string().as_str()),
                };
                let ok = parse_pv(&pvname).is_some_and(|p| pv_set(lua, &engine, &p, Some(value)));
                Ok(if ok { 1 } else { -1 })
            },
        )?,
    )?;
    ksr.set("jansson", t)
}
