//! Stateless replies: `KSR.sl.send_reply(code, reason)` and its alias
//! `KSR.sl.sl_send_reply(code, reason)`: 1 when sent, -1 when refused
//! (see [`super::reply`]) or when the SIP host refused.

use super::module::Module;
use super::reply;
use mlua::Value;

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    for name in ["send_reply", "sl_send_reply"] {
        m.func(name, |cx, (code, reason): (Value, String)| {
            reply::send(cx, &code, &reason, |host, req, code, reason| {
                host.sl_reply(req, code, reason)
            })
        })?;
    }
    Ok(())
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
    fn checking_has_no_sip_host() {
        let vm = Vm::detached();
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<i64>(r#"KSR.sl.send_reply(200, "OK")"#)
        });
        assert_eq!(r, -1);
    }
}
