//! NATS (`[nats]`), with the names of Kamailio's nats module:
//! `KSR.nats.publish(subject, data [, reply])` publishes `data` on
//! `subject` (1 when handed to a connected client, -1 otherwise: NATS off
//! or disconnected, a bad subject, empty data); `KSR.nats.connected()` is
//! 1 when the client is connected, -1 otherwise.

use super::module::{kemi_bool, Fail, Module};
use mlua::LuaString;

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func(
        "publish",
        |cx, (subject, data, reply): (LuaString, LuaString, Option<LuaString>)| {
            let nats = cx
                .nats()
                .ok_or_else(|| Fail::new("NATS is off ([nats] servers is empty)"))?;
            let subject = subject
                .to_str()
                .map_err(|_| Fail::new("the subject is not UTF-8"))?;
            if data.as_bytes().is_empty() {
                return Err(Fail::new("empty data"));
            }
            let reply = match &reply {
                Some(r) => Some(
                    r.to_str()
                        .map_err(|_| Fail::new("the reply subject is not UTF-8"))?
                        .to_string(),
                ),
                None => None,
            };
            nats.publish(&subject, &data.as_bytes(), reply.as_deref())?;
            Ok(1)
        },
    )?;
    m.func("connected", |cx, ()| {
        Ok(kemi_bool(cx.nats().is_some_and(|n| n.connected())))
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, FakeNats, Vm};
    use std::sync::Arc;

    #[test]
    fn publish_and_connected() {
        let off = Vm::new();
        assert_eq!(
            off.eval::<(i64, i64)>(r#"KSR.nats.publish("a.b", "x"), KSR.nats.connected()"#),
            (-1, -1),
            "NATS off"
        );
        let nats = Arc::new(FakeNats::default());
        let vm = Vm::with_nats(nats.clone());
        assert_eq!(
            vm.eval::<(i64, i64, i64, i64)>(
                r#"KSR.nats.publish("a.b", "x"), KSR.nats.publish("a.c", "y", "r.s"),
                   KSR.nats.publish("a.b", ""), KSR.nats.connected()"#
            ),
            (1, 1, -1, 1)
        );
        assert_eq!(nats.take(), ["publish a.b x -", "publish a.c y r.s"]);
        nats.set_down(true);
        assert_eq!(
            vm.eval::<(i64, i64)>(r#"KSR.nats.publish("a.b", "x"), KSR.nats.connected()"#),
            (-1, -1)
        );
    }

    #[test]
    fn evapi_sends_go_over_nats_too() {
        let nats = Arc::new(FakeNats::default());
        let vm = Vm::with_nats(nats.clone());
        // A TCP client took it: 1, and NATS gets it unwatched.
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<i64>(r#"KSR.evapi.async_unicast("ev1", "w")"#)
        });
        assert_eq!(r, 1);
        assert_eq!(vm.events.take(), ["unicast ev1 w"]);
        assert_eq!(nats.take(), ["send Unicast ev1 w"]);
        // No TCP client: an async send is watched for no responders.
        vm.events.set_nobody(true);
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<i64>(r#"KSR.evapi.async_unicast_rr("ev2", "w")"#)
        });
        assert_eq!(r, 1);
        assert_eq!(nats.take(), ["send Unicast ev2 w watched"]);
        assert_eq!(
            vm.eval::<(i64, i64)>(
                r#"KSR.evapi.relay("ev3"), KSR.evapi.relay_multicast("ev4", "m")"#
            ),
            (1, 1)
        );
        assert_eq!(nats.take(), ["send Relay ev3 ", "send Multicast ev4 m"]);
        // NATS down and nobody on TCP: -1, and -2 after a suspension.
        nats.set_down(true);
        assert_eq!(vm.eval::<i64>(r#"KSR.evapi.relay("ev5")"#), -1);
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<i64>(r#"KSR.evapi.async_relay("ev6")"#)
        });
        assert_eq!(r, -2);
        // NATS down but a TCP client took it: 1.
        vm.events.set_nobody(false);
        assert_eq!(vm.eval::<i64>(r#"KSR.evapi.relay("ev7")"#), 1);
        vm.events.take();
    }

    #[test]
    fn events_over_nats_have_no_connection() {
        let vm = Vm::with_nats(Arc::default());
        let r = vm.in_nats_event("answer", |vm| {
            vm.eval::<(String, String, i64, i64, i64, i64)>(
                r#"KSR.pv.get("$evapi(msg)"), KSR.pv.get("$evapi(srcaddr)"),
                   KSR.pv.get("$evapi(conidx)"), KSR.pv.get("$evapi(srcport)"),
                   KSR.evapi.close(), KSR.evapi.set_tag("x")"#,
            )
        });
        assert_eq!(r, ("answer".into(), "nats".into(), -1, 0, -1, -1));
        let r = vm.in_nats_message("payload", |vm| {
            vm.eval::<(String, bool)>(r#"KSR.pv.get("$natsData"), KSR.pv.is_null("$evapi(msg)")"#)
        });
        assert_eq!(r, ("payload".into(), true));
        assert!(vm.eval::<bool>(r#"KSR.pv.is_null("$natsData")"#));
    }
}
