//! Stateless replies: `KSR.sl.send_reply(code, reason)` and its alias
//! `KSR.sl.sl_send_reply(code, reason)`: 1 when sent, -1 when refused
//! (see [`super::reply`]) or when the SIP host refused.
//!
//! `KSR.sl.sl_reply_error()` replies statelessly with the route's last
//! internal error: a failed `t_relay` or `t_newtran` records one, with
//! Kamailio's codes where it has them (478 "Unresolvable destination
//! (478/SL)" for a destination that does not resolve, 400, 487); with
//! none recorded it sends 500 "Server Internal Error". Other modules
//! record theirs with `Cx::record_error`.

use super::arg::Text;
use super::module::Module;
use super::reply;
use crate::route_state::DEFAULT_ERROR;
use mlua::Value;

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    for name in ["send_reply", "sl_send_reply"] {
        m.func(name, |cx, (code, reason): (Value, Text)| {
            reply::send(cx, &code, reason.to_str()?, |host, req, code, reason| {
                host.sl_reply(req, code, reason)
            })
        })?;
    }
    m.func("sl_reply_error", |cx, ()| {
        let (code, reason) = cx
            .here()
            .with_state(|s| s.last_error.clone())?
            .unwrap_or_else(|| (DEFAULT_ERROR.0, DEFAULT_ERROR.1.to_owned()));
        reply::send(
            cx,
            &Value::Integer(code.into()),
            &reason,
            |host, req, code, reason| host.sl_reply(req, code, reason),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, Vm};

    #[test]
    fn send_reply_sends_and_returns_1() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(i64, i64)>(
                r#"KSR.sl.send_reply(404, "Not Here"), KSR.sl.sl_send_reply("486", "Busy")"#,
            )
        });
        assert_eq!(r, (1, 1));
        assert_eq!(
            vm.sip.take(),
            ["sl_reply 404 Not Here", "sl_reply 486 Busy"]
        );
    }

    #[test]
    fn refused_replies_send_nothing() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(i64, i64, i64, i64)>(
                r#"KSR.sl.send_reply(65736, "x"), KSR.sl.send_reply(99, "x"),
                   KSR.sl.send_reply(200, "OK\r\nX-Evil: 1"), KSR.sl.send_reply(200, "a\0b")"#,
            )
        });
        assert_eq!(r, (-1, -1, -1, -1));
        let mut ack = request("ACK", "");
        let r = vm.in_request(&mut ack, |vm| {
            vm.eval::<i64>(r#"KSR.sl.send_reply(200, "OK")"#)
        });
        assert_eq!(r, -1);
        assert!(vm.sip.take().is_empty());
        // The host's refusal is -1 too.
        vm.sip.fail_next();
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<i64>(r#"KSR.sl.send_reply(200, "OK")"#)
        });
        assert_eq!(r, -1);
        // Outside a SIP route: -1.
        assert_eq!(vm.eval::<i64>(r#"KSR.sl.send_reply(200, "OK")"#), -1);
    }

    #[test]
    fn reply_error_answers_with_the_last_error() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| vm.eval::<i64>("KSR.sl.sl_reply_error()"));
        assert_eq!(r, 1);
        assert_eq!(vm.sip.take(), ["sl_reply 500 Server Internal Error"]);
        // A refused relay records its error (the fake refuses with
        // ShuttingDown: a 500); a bad destination is 478.
        let r = vm.in_request(&mut req, |vm| {
            vm.sip.fail_next();
            vm.eval::<(i64, i64)>("KSR.tm.t_relay(), KSR.sl.sl_reply_error()")
        });
        assert_eq!(r, (-1, 1));
        assert_eq!(
            vm.sip.take(),
            ["t_relay (refused)", "sl_reply 500 Server Internal Error"]
        );
        let r = vm.in_request(&mut req, |vm| {
            crate::context::with_state(&vm.lua, |s| {
                s.set_error(&sip::TmError::Canceled { index: 1, label: 1 })
            })
            .unwrap();
            vm.eval::<i64>("KSR.sl.sl_reply_error()")
        });
        assert_eq!(r, 1);
        assert_eq!(
            vm.sip.take(),
            ["sl_reply 487 Transaction canceled (487/SL)"]
        );
        assert_eq!(vm.eval::<i64>("KSR.sl.sl_reply_error()"), -1, "no route");
    }

    #[test]
    fn checking_has_no_sip_host() {
        let vm = Vm::detached();
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<i64>(r#"KSR.sl.send_reply(200, "OK")"#)
        });
        assert_eq!(r, -1);
    }
}
