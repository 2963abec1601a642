//! Transactions (Kamailio's tm): `KSR.tm.t_newtran()` (INVITE: sends 100
//! Trying), `t_reply(code, reason)` (checked as in [`super::reply`]),
//! `t_relay()` (to `$du` if set, else the Request-URI),
//! `t_on_failure(fname)`, `t_check_trans()` and `t_is_canceled()` (1 when the
//! INVITE was cancelled). 1 on success, -1 on
//! failure (logged, but `t_check_trans` finding nothing is an answer).
//! A failed `t_newtran` or `t_relay` is recorded as the route's last
//! error, for `KSR.sl.sl_reply_error()`. Reply and branch routes and the
//! status tests are in [`super::tm_routes`].

use super::arg::Text;
use super::module::{kemi_bool, Module};
use super::reply;
use super::tm_routes;
use mlua::{LuaString, Value};

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func("t_newtran", |cx, ()| {
        let host = cx.sip()?;
        cx.request(|req| host.t_newtran(req))?
            .inspect_err(|e| cx.record_error(e))?;
        Ok(1)
    })?;
    m.func("t_relay", |cx, ()| {
        tm_routes::relay(cx)?;
        cx.mark_handled();
        Ok(1)
    })?;
    m.func("t_reply", |cx, (code, reason): (Value, Text)| {
        reply::send(cx, &code, reason.to_str()?, |host, req, code, reason| {
            host.t_reply(req, code, reason)
        })
    })?;
    m.func("t_on_failure", |cx, name: LuaString| {
        let name = name.to_str()?;
        cx.request(|req| req.set_failure_route(&name))?;
        Ok(1)
    })?;
    m.func("t_check_trans", |cx, ()| {
        let host = cx.sip()?;
        let found = cx.request(|req| req.tx().is_some() || host.t_check_trans(req))?;
        Ok(kemi_bool(found))
    })?;
    m.func("t_is_canceled", |cx, ()| {
        let host = cx.sip()?;
        Ok(kemi_bool(cx.request(|req| host.t_is_canceled(req))?))
    })?;
    tm_routes::register(m)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, Vm};

    #[test]
    fn transaction_functions_act_through_the_host() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(i64, i64, i64, i64, i64)>(
                r#"KSR.tm.t_newtran(), KSR.tm.t_check_trans(), KSR.tm.t_on_failure("fr"),
                   KSR.tm.t_relay(), KSR.tm.t_reply(180, "Ringing")"#,
            )
        });
        assert_eq!(r, (1, -1, 1, 1, 1));
        assert_eq!(req.failure_route(), Some("fr"));
        assert_eq!(
            vm.sip.take(),
            [
                "t_newtran",
                "t_check_trans",
                "t_relay",
                "t_reply 180 Ringing"
            ]
        );
        vm.sip.set_known(true);
        let r = vm.in_request(&mut req, |vm| vm.eval::<i64>("KSR.tm.t_check_trans()"));
        assert_eq!(r, 1);
    }

    #[test]
    fn failures_are_minus_one() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        vm.sip.fail_next();
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(i64, i64, i64)>(
                r#"KSR.tm.t_relay(), KSR.tm.t_reply(1200, "x"), KSR.tm.t_reply(200, "a\nb")"#,
            )
        });
        assert_eq!(r, (-1, -1, -1));
        assert_eq!(vm.sip.take(), ["t_relay (refused)"]);
        // Outside a SIP route.
        assert_eq!(
            vm.eval::<(i64, i64, i64)>(
                r#"KSR.tm.t_relay(), KSR.tm.t_newtran(), KSR.tm.t_on_failure("x")"#
            ),
            (-1, -1, -1)
        );
        assert!(vm.sip.take().is_empty());
    }

    #[test]
    fn t_is_canceled_asks_the_host() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        let ask = |vm: &Vm, req: &mut sip::Request| {
            vm.in_request(req, |vm| vm.eval::<i64>("KSR.tm.t_is_canceled()"))
        };
        assert_eq!(ask(&vm, &mut req), -1);
        vm.sip
            .canceled
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(ask(&vm, &mut req), 1);
        assert_eq!(
            vm.eval::<i64>("KSR.tm.t_is_canceled()"),
            -1,
            "outside a request"
        );
    }
}
