//! The admin RPC methods from the script (Kamailio's jsonrpcs):
//! `KSR.jsonrpcs.exec(request)` runs a JSON-RPC request through the same
//! registry as `POST /RPC` and `evapi ctl`, on this thread, and leaves the
//! answer in `$jsonrpl(code)`, `$jsonrpl(text)` and `$jsonrpl(body)`:
//! 200 and "OK" on success, else the error's code and message; the body
//! is the whole JSON-RPC response, as Kamailio's.
//!
//! Returns 1 when the request was answered (also with an error: the code
//! tells), -1 when the text is not JSON (as Kamailio; we still fill
//! `$jsonrpl`, with −32700, where Kamailio leaves the previous answer). A
//! request without an `id` is answered as if its id were null, so the
//! body is never empty.
//!
//! A method runs on the script's thread: it must not wait for this thread
//! (none of ours does; `app_lua.reload` only marks the script for the
//! next call).

use super::module::{Fail, Module};
use crate::pv::{JsonrplField, PvValue};
use mlua::{Lua, LuaString};
use serde_json::{json, Value};

/// The last answer of `KSR.jsonrpcs.exec` in this VM.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    code: i64,
    text: String,
    body: String,
}

/// `$jsonrpl(field)`: null before the first `exec` in this VM.
pub(crate) fn reply_field(lua: &Lua, field: JsonrplField) -> Option<PvValue> {
    let a = lua.app_data_ref::<Answer>()?;
    Some(match field {
        JsonrplField::Code => PvValue::Int(a.code),
        JsonrplField::Text => PvValue::from(a.text.as_str()),
        JsonrplField::Body => PvValue::from(a.body.as_str()),
    })
}

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func("exec", |cx, request: LuaString| {
        let registry = cx.registry()?;
        let (ret, answer) = exec(registry, &request.as_bytes());
        cx.lua.set_app_data(answer);
        if ret < 0 {
            return Err(Fail::new("the request is not JSON (see $jsonrpl(text))"));
        }
        Ok(ret)
    })
}

/// Run one request text: (return value, answer).
fn exec(registry: &rpc::Registry, text: &[u8]) -> (i64, Answer) {
    let mut request: Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) => {
            let message = format!("parse error: {e}");
            let body = json!({"jsonrpc": "2.0", "error": {"code": rpc::code::PARSE_ERROR, "message": message}, "id": null});
            return (
                -1,
                Answer {
                    code: rpc::code::PARSE_ERROR,
                    text: message,
                    body: body.to_string(),
                },
            );
        }
    };
    if let Value::Object(o) = &mut request {
        o.entry("id").or_insert(Value::Null);
    }
    let body = registry
        .handle(request.to_string().as_bytes())
        .unwrap_or_default();
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let (code, text) = match parsed.get("error") {
        Some(e) => (
            e.get("code").and_then(Value::as_i64).unwrap_or(500),
            e.get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        ),
        None => (200, "OK".to_string()),
    };
    (1, Answer { code, text, body })
}

#[cfg(test)]
mod tests {
    use super::super::testing::Vm;
    use super::*;
    use std::sync::Arc;

    fn registry() -> Arc<rpc::Registry> {
        let r = rpc::Registry::new();
        r.register("t.echo", "echo", |p| Ok(json!(p.str(0, "text")?)));
        r
    }

    #[test]
    fn answers_land_in_jsonrpl() {
        let vm = Vm::with_registry(registry());
        assert!(vm.eval::<bool>(r#"KSR.pv.is_null("$jsonrpl(code)")"#));
        let r = vm.eval::<(i64, i64, String, String)>(
            r#"local r = KSR.jsonrpcs.exec('{"jsonrpc":"2.0","method":"t.echo","params":["hi"],"id":7}')
               return r, KSR.pv.get("$jsonrpl(code)"), KSR.pv.get("$jsonrpl(text)"), KSR.pv.get("$jsonrpl(body)")"#,
        );
        assert_eq!(r.0, 1);
        assert_eq!((r.1, r.2.as_str()), (200, "OK"));
        let body: Value = serde_json::from_str(&r.3).unwrap();
        assert_eq!(body, json!({"jsonrpc": "2.0", "result": "hi", "id": 7}));

        // A method error: answered (1), its code and message.
        let r = vm.eval::<(i64, i64, String)>(
            r#"local r = KSR.jsonrpcs.exec('{"jsonrpc":"2.0","method":"no.such"}')
               return r, KSR.pv.get("$jsonrpl(code)"), KSR.pv.get("$jsonrpl(text)")"#,
        );
        assert_eq!((r.0, r.1), (1, -32601));
        assert!(r.2.contains("no.such"), "{}", r.2);
        let body: Value =
            serde_json::from_str(&vm.eval::<String>(r#"KSR.pv.get("$jsonrpl(body)")"#)).unwrap();
        assert_eq!(body["id"], Value::Null);
        let r = vm.eval::<(i64, i64)>(
            r#"local r = KSR.jsonrpcs.exec('{"method":"t.echo","params":[5],"id":1}')
               return r, KSR.pv.get("$jsonrpl(code)")"#,
        );
        assert_eq!(r, (1, -32602));

        // Not JSON: -1, and $jsonrpl says why.
        let r = vm.eval::<(i64, i64)>(
            r#"return KSR.jsonrpcs.exec("{not json"), KSR.pv.get("$jsonrpl(code)")"#,
        );
        assert_eq!(r, (-1, -32700));
    }

    #[test]
    fn a_checked_script_has_no_registry() {
        let vm = Vm::detached();
        assert_eq!(
            vm.eval::<i64>(r#"KSR.jsonrpcs.exec('{"method":"system.listMethods","id":1}')"#),
            -1
        );
    }
}
