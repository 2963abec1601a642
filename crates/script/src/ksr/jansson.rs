//! JSON for people porting native configs: `KSR.jansson.get(path, json,
//! pvname)` stores the value at `path` (`a.b[0].c`) of the document in
//! pseudo-variable `pvname`: 1, or -1 when the document is not JSON, the
//! path is absent or null, or the variable cannot be set. Integers stay
//! integers, booleans become 1/0, objects and arrays their JSON text.

use super::module::{Fail, Module};
use super::pv;
use crate::json;
use crate::pv::PvValue;
use mlua::LuaString;
use serde_json::Value as Json;

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func(
        "get",
        |cx, (path, text, pvname): (String, LuaString, String)| {
            let doc: Json = serde_json::from_slice(&text.as_bytes())
                .map_err(|_| Fail::new("the document is not valid JSON"))?;
            let Some(found) = json::path_get(&doc, &path) else {
                return Ok(-1);
            };
            let value = match found {
                Json::String(s) => PvValue::from(s.as_str()),
                Json::Number(n) => match n.as_i64() {
                    Some(i) => PvValue::Int(i),
                    None => PvValue::from(n.to_string().as_str()),
                },
                Json::Bool(b) => PvValue::Int(*b as i64),
                Json::Null => return Ok(-1),
                other => PvValue::from(other.to_string().as_str()),
            };
            let target = pv::named(cx, &pvname)?;
            pv::set(cx, &target, Some(value))?;
            Ok(1)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::Vm;

    #[test]
    fn values_land_in_pvs() {
        let vm = Vm::new();
        let doc = r#"{"a":{"b":[1,42,"x"]},"t":true,"f":1.5,"n":null,"o":{"k":1}}"#;
        vm.lua.globals().set("doc", doc).unwrap();
        let r = vm.eval::<(i64, i64, i64, i64, i64, i64, i64, i64)>(
            r#"KSR.jansson.get("a.b[1]", doc, "$var(i)"), KSR.jansson.get("a.b[2]", doc, "$shv(s)"),
               KSR.jansson.get("t", doc, "$var(t)"), KSR.jansson.get("o", doc, "$var(o)"),
               KSR.jansson.get("n", doc, "$var(n)"), KSR.jansson.get("zz", doc, "$var(z)"),
               KSR.jansson.get("a", "{not json", "$var(z)"), KSR.jansson.get("f", doc, "$nope")"#,
        );
        assert_eq!(r, (1, 1, 1, 1, -1, -1, -1, -1));
        let v = vm.eval::<(i64, String, i64, String)>(
            r#"KSR.pv.get("$var(i)"), KSR.pv.get("$shv(s)"), KSR.pv.get("$var(t)"), KSR.pv.get("$var(o)")"#,
        );
        assert_eq!(v, (42, "x".into(), 1, r#"{"k":1}"#.into()));
        assert!(vm.eval::<bool>(r#"KSR.pv.is_null("$var(n)")"#));
    }
}
