//! Suspend and continue (Kamailio's tmx): `KSR.tmx.t_suspend()` suspends
//! the current request's transaction (then `$T(id_index)` and
//! `$T(id_label)` name it); `KSR.tmx.t_continue(index, label, fname)`
//! takes a suspended transaction back and runs route `fname` on it right
//! away, on this thread (so `$var` set before it is seen there). 1 or -1.
//!
//! Route tests, 1 or -1: `t_is_request_route()`, `t_is_failure_route()`
//! (also in a route resumed by `t_continue`, which Kamailio runs as a
//! failure route), `t_is_reply_route()` (`ksr_reply_route` and the
//! transaction reply routes of `KSR.tm.t_on_reply`),
//! `t_is_branch_route()` (the branch routes of `KSR.tm.t_on_branch`).
//!
//! `t_precheck_trans()` is always -1 ("not a retransmission"): Kamailio
//! uses it to catch a retransmission that arrives while the first copy
//! is still in the script, before the transaction exists. Our transaction
//! layer matches every request against the table, and holds a second
//! copy of one still being routed, before any script runs: a request that
//! reaches the route is never such a retransmission, so -1 is the true
//! answer and the script's retransmission branch is simply not taken.
//!
//! Unlike Kamailio, `t_continue` naming a function the script does not
//! define fails at once (-1, an error naming the script line) and leaves
//! the transaction suspended, instead of resuming it into nothing and
//! leaving the caller to wait for `fr_inv_timer`.

use super::module::kemi_bool;
use super::module::{lua_int, Fail, Module};
use crate::call;
use crate::context::RouteKind;
use mlua::Value;

/// Whether the script defines the global function `name`.
fn defined(lua: &mlua::Lua, name: &str) -> bool {
    matches!(lua.globals().get::<Value>(name), Ok(Value::Function(_)))
}

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func("t_suspend", |cx, ()| {
        let host = cx.sip()?;
        cx.request(|req| host.t_suspend(req))??;
        cx.mark_handled();
        Ok(1)
    })?;
    m.func(
        "t_continue",
        |cx, (index, label, fname): (Value, Value, String)| {
            let host = cx.sip()?;
            let (Some(index), Some(label)) = (lua_int(&index), lua_int(&label)) else {
                return Err(Fail::new("index and label must be integers"));
            };
            let (Ok(i), Ok(l)) = (u32::try_from(index), u32::try_from(label)) else {
                return Err(Fail::new(format_args!("no transaction {index}:{label}")));
            };
            if !defined(cx.lua, &fname) {
                let why = format_args!(
                    "KSR.tmx.t_continue: function {fname}() is not defined by the script \
                     (after a reload: not by the new one); transaction {index}:{label} left \
                     suspended: it gets 408 when its suspension times out, unless continued \
                     or answered (tm.reply)"
                );
                crate::diag::emit(cx.lua, crate::diag::Level::Error, &why);
                return Ok(-1);
            }
            let mut req = host.t_continue(i, l)?;
            call::run_route(cx.lua, Some(host), &fname, RouteKind::Resumed, &mut req);
            Ok(1)
        },
    )?;
    const KINDS: [(&str, &[RouteKind]); 4] = [
        ("t_is_request_route", &[RouteKind::Request]),
        (
            "t_is_failure_route",
            &[RouteKind::Failure, RouteKind::Resumed],
        ),
        ("t_is_reply_route", &[RouteKind::Reply, RouteKind::OnReply]),
        ("t_is_branch_route", &[RouteKind::Branch]),
    ];
    for (name, kinds) in KINDS {
        m.func(name, move |cx, ()| {
            Ok(kemi_bool(
                cx.here().route_kind().is_some_and(|k| kinds.contains(&k)),
            ))
        })?;
    }
    m.func("t_precheck_trans", |_, ()| Ok(-1))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, Vm};

    #[test]
    fn suspend_then_continue_runs_the_route_on_the_request() {
        let vm = Vm::new();
        vm.run(
            r#"function resumed()
                 KSR.pv.sets("$var(seen)", KSR.pv.get("$ci") .. " " .. KSR.pv.get("$var(before)"))
                 KSR.tm.t_reply(200, "OK")
               end"#,
        );
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| vm.eval::<i64>("KSR.tmx.t_suspend()"));
        assert_eq!(r, 1);
        vm.sip.park(request("INVITE", ""));
        let r = vm.eval::<i64>(
            r#"KSR.pv.sets("$var(before)", "b"); return KSR.tmx.t_continue(7, "9", "resumed")"#,
        );
        assert_eq!(r, 1);
        assert_eq!(vm.eval::<String>(r#"KSR.pv.get("$var(seen)")"#), "cid-1 b");
        assert_eq!(
            vm.sip.take(),
            ["t_suspend", "t_continue 7:9", "t_reply 200 OK"]
        );
    }

    #[test]
    fn bad_continues_are_minus_one() {
        let vm = Vm::new();
        vm.run("function f() end");
        // Nothing parked: the host says no such transaction.
        let r = vm.eval::<(i64, i64, i64)>(
            r#"KSR.tmx.t_continue(1, 2, "f"), KSR.tmx.t_continue("x", 2, "f"),
               KSR.tmx.t_continue(-1, 2, "f")"#,
        );
        assert_eq!(r, (-1, -1, -1));
        assert_eq!(vm.sip.take(), ["t_continue 1:2 (refused)"]);
        // t_suspend outside a request route.
        assert_eq!(vm.eval::<i64>("KSR.tmx.t_suspend()"), -1);
    }

    #[test]
    fn route_kind_tests() {
        use crate::call::run_route;
        use crate::context::RouteKind;
        let vm = Vm::new();
        vm.run(
            r#"function k()
                 KSR.pv.sets("$var(k)", KSR.tmx.t_is_request_route() .. KSR.tmx.t_is_failure_route()
                   .. KSR.tmx.t_is_reply_route() .. KSR.tmx.t_is_branch_route()
                   .. KSR.tmx.t_precheck_trans())
               end"#,
        );
        let sip = Some(&*vm.sip as &dyn crate::SipOps);
        let mut req = request("INVITE", "");
        for (kind, want) in [
            (RouteKind::Request, "1-1-1-1-1"),
            (RouteKind::Failure, "-11-1-1-1"),
            (RouteKind::Resumed, "-11-1-1-1"),
            (RouteKind::Branch, "-1-1-11-1"),
        ] {
            run_route(&vm.lua, sip, "k", kind, &mut req);
            assert_eq!(
                vm.eval::<String>(r#"KSR.pv.get("$var(k)")"#),
                want,
                "{kind:?}"
            );
        }
        assert_eq!(
            vm.eval::<(i64, i64)>("KSR.tmx.t_is_request_route(), KSR.tmx.t_precheck_trans()"),
            (-1, -1),
            "outside a route"
        );
    }

    #[test]
    fn continuing_into_an_undefined_function_fails_at_once() {
        let vm = Vm::new();
        vm.sip.park(request("INVITE", ""));
        vm.run("resumed = 42");
        let r = vm.eval::<(i64, i64)>(
            r#"KSR.tmx.t_continue(7, 9, "nowhere"), KSR.tmx.t_continue(7, 9, "resumed")"#,
        );
        assert_eq!(r, (-1, -1));
        assert!(
            vm.sip.take().is_empty(),
            "the transaction was not taken back: still suspended"
        );
    }

    #[test]
    fn a_failing_resumed_route_gets_500() {
        let vm = Vm::new();
        vm.run("function broken() error('boom') end");
        vm.sip.park(request("INVITE", ""));
        assert_eq!(vm.eval::<i64>(r#"KSR.tmx.t_continue(1, 1, "broken")"#), 1);
        assert_eq!(
            vm.sip.take(),
            ["t_continue 1:1", "sl_reply 500 Server Internal Error"]
        );
    }
}
