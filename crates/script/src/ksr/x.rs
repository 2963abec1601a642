//! Flow: `KSR.x.exit()` ends the route (the call counts as returned) and
//! `KSR.x.drop()` ends it and drops the message (a reply, in
//! `ksr_reply_route`). Both unwind the Lua stack with an error that the
//! caller recognises ([`crate::call::Unwind`]).

use super::module::{Fail, Module};
use crate::call::Unwind;

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func("exit", |_, ()| -> Result<(), Fail> {
        Err(mlua::Error::external(Unwind::Exit).into())
    })?;
    m.func("drop", |_, ()| -> Result<(), Fail> {
        Err(mlua::Error::external(Unwind::Drop).into())
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::Vm;
    use crate::call::{call, Outcome};

    #[test]
    fn exit_ends_the_function_and_drop_drops() {
        let vm = Vm::new();
        vm.run(
            r#"
            function f() KSR.pv.seti("$var(a)", 1); KSR.x.exit(); KSR.pv.seti("$var(a)", 2) end
            function g() KSR.x.drop(); KSR.pv.seti("$var(a)", 3) end
            function h() local t = nil; return t.x end
            "#,
        );
        assert_eq!(call(&vm.lua, "f", ()), Outcome::Done);
        assert_eq!(vm.eval::<i64>(r#"KSR.pv.get("$var(a)")"#), 1);
        assert_eq!(call(&vm.lua, "g", ()), Outcome::Dropped);
        assert_eq!(vm.eval::<i64>(r#"KSR.pv.get("$var(a)")"#), 1);
        assert_eq!(call(&vm.lua, "h", ()), Outcome::Failed);
        assert_eq!(call(&vm.lua, "nope", ()), Outcome::Missing);
    }

    #[test]
    fn pcall_does_not_swallow_the_meaning_of_exit() {
        // exit inside pcall is caught by pcall, as in Kamailio's Lua: the
        // script goes on after it.
        let vm = Vm::new();
        vm.run(r#"function f() local ok = pcall(KSR.x.exit); KSR.pv.seti("$var(p)", ok and 1 or 0) end"#);
        assert_eq!(call(&vm.lua, "f", ()), Outcome::Done);
        assert_eq!(vm.eval::<i64>(r#"KSR.pv.get("$var(p)")"#), 0);
    }
}
