//! Flow: `KSR.x.exit()` ends the route (the call counts as returned) and
//! `KSR.x.drop()` ends it and drops the message (a reply, in
//! `ksr_reply_route`).
//!
//! Both are Lua functions that raise a marker string as a Lua error
//! (`error(marker, 0)`), which the caller recognises
//! ([`crate::call::Unwind`]). They are written in Lua, not Rust, on
//! purpose: an error returned from a Rust callback makes mlua build a full
//! Lua traceback (naming every frame by searching the loaded modules),
//! about 30 µs each time, and Kamailio's scripts end nearly every route
//! with `KSR.x.exit()`. A Lua error value caught by the route call's
//! `lua_pcall` with no message handler costs nothing of the kind.

use super::module::Module;
use crate::call::{DROP_MARK, EXIT_MARK};

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    let lua = m.lua();
    for (name, mark) in [("exit", EXIT_MARK), ("drop", DROP_MARK)] {
        let raise: mlua::Function = lua
            .load("local mark = ... return function() error(mark, 0) end")
            .set_name(format!("=KSR.x.{name}"))
            .call(mark)?;
        m.lua_func(name, raise)?;
    }
    Ok(())
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
            function nested() KSR.route("f"); KSR.pv.seti("$var(a)", 4) end
            "#,
        );
        assert_eq!(call(&vm.lua, "f", ()), Outcome::Done);
        assert_eq!(vm.eval::<i64>(r#"KSR.pv.get("$var(a)")"#), 1);
        assert_eq!(call(&vm.lua, "g", ()), Outcome::Dropped);
        assert_eq!(vm.eval::<i64>(r#"KSR.pv.get("$var(a)")"#), 1);
        assert_eq!(call(&vm.lua, "h", ()), Outcome::Failed);
        assert_eq!(call(&vm.lua, "nope", ()), Outcome::Missing);
        // exit inside a function run by KSR.route ends the whole route.
        assert_eq!(call(&vm.lua, "nested", ()), Outcome::Done);
        assert_eq!(vm.eval::<i64>(r#"KSR.pv.get("$var(a)")"#), 1);
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
