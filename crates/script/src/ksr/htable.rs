//! Shared tables (`$sht(table=>key)`): `KSR.htable.sht_get(table, key)`
//! (nil when unset), `sht_sets(table, key, s)`, `sht_seti(table, key, i)`
//! and `sht_rm(table, key)`: 1, or -1 for a value that is not an integer.
//! Tables are created on first write and shared by every worker.

use super::module::{lua_int, Fail, Module};
use super::pv::to_lua;
use crate::pv::PvValue;
use mlua::{LuaString, Value};

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func("sht_get", |cx, (table, key): (String, String)| {
        Ok(to_lua(cx.lua, cx.shared().sht_get(&table, &key))?)
    })?;
    m.func(
        "sht_sets",
        |cx, (table, key, value): (String, String, LuaString)| {
            let value = PvValue::Str(value.as_bytes().to_vec());
            cx.shared().sht_set(&table, &key, Some(value));
            Ok(1)
        },
    )?;
    m.func(
        "sht_seti",
        |cx, (table, key, value): (String, String, Value)| {
            let i = lua_int(&value).ok_or_else(|| {
                Fail::new(format_args!("{table}=>{key}: the value is not an integer"))
            })?;
            cx.shared().sht_set(&table, &key, Some(PvValue::Int(i)));
            Ok(1)
        },
    )?;
    m.func("sht_rm", |cx, (table, key): (String, String)| {
        cx.shared().sht_set(&table, &key, None);
        Ok(1)
    })
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
}
