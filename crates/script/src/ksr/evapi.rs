//! The event socket: `KSR.evapi.relay(data)`, `relay_multicast(data, tag)`,
//! `relay_unicast(data, tag)`, our `relay_unicast_rr(data, tag)`, their
//! `async_*` forms (`async_relay`, `async_multicast`, `async_unicast`,
//! `async_unicast_rr`), `close()`, `set_tag(tag)` and our
//! `client_count([tag])`.
//!
//! Plain sends return 1 when the event was queued (also when nobody
//! matched) and -1 on empty data or tag, or a refused send. The async forms
//! run in the request route only: they suspend the transaction, then send;
//! -1 when nothing was suspended, -2 when the send failed after the
//! suspension (so the script can still reply). `close` and `set_tag` act on
//! the client of the current evapi event.
//!
//! With `[nats]` on, every send also goes over NATS (`<prefix>.relay`,
//! `<prefix>.multicast.<tag>`, `<prefix>.unicast.<tag>`), and returns 1
//! when a TCP client or the NATS client took it; -1 (-2 after a
//! suspension) when neither did (no TCP client matched and NATS is
//! disconnected, say). An async send that no TCP client took is watched:
//! if nobody listens on NATS, `evapi:no-responders` runs with its data.
//! `close` and `set_tag` return -1 for an event that came over NATS.

use super::arg::Text;
use super::module::{Cx, Fail, Module};
use crate::context::RouteKind;
use crate::ops::EventOps;
use evapi::SendError;
use mlua::LuaString;
use nats::SendKind;

/// One of the event socket's ways to send: (handle, data, tag).
type SendFn = fn(&dyn EventOps, &[u8], &[u8]) -> Result<usize, SendError>;

/// The four ways to send, by their KEMI names (plain, async), whether
/// they take a tag, and the NATS send they make when `[nats]` is on.
/// `*_rr` are ours: unicast taking the clients of a tag in turn (over
/// NATS, the workers' queue group spreads the load).
const SENDS: [(&str, &str, SendFn, bool, SendKind); 4] = [
    (
        "relay",
        "async_relay",
        |h, d, _| h.relay(d),
        false,
        SendKind::Relay,
    ),
    (
        "relay_multicast",
        "async_multicast",
        |h, d, t| h.multicast(d, t),
        true,
        SendKind::Multicast,
    ),
    (
        "relay_unicast",
        "async_unicast",
        |h, d, t| h.unicast(d, t),
        true,
        SendKind::Unicast,
    ),
    (
        "relay_unicast_rr",
        "async_unicast_rr",
        |h, d, t| h.unicast_round_robin(d, t),
        true,
        SendKind::Unicast,
    ),
];

/// Suspend the current request's transaction for an `async_*` send.
fn suspend(cx: &Cx<'_>) -> Result<(), Fail> {
    let host = cx.sip()?;
    if cx.here().route_kind() != Some(RouteKind::Request) {
        return Err(Fail::new("only in the request route"));
    }
    cx.request(|req| host.t_suspend(req))??;
    cx.mark_handled();
    Ok(())
}

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    for (plain, async_name, send, tagged, kind) in SENDS {
        for (name, suspends) in [(plain, false), (async_name, true)] {
            m.func(name, move |cx, (data, tag): (Text, Option<Text>)| {
                let (data, tag) = (data.as_bytes(), tag.as_ref().map(Text::as_bytes));
                let tag = tag.unwrap_or_default();
                if data.is_empty() || (tagged && tag.is_empty()) {
                    return Err(Fail::new("empty event data or tag"));
                }
                let events = cx.events()?;
                if suspends {
                    suspend(cx)?;
                }
                // After a suspension, -2: the script can still reply.
                let code = if suspends { -2 } else { -1 };
                let tcp = send(events, data, tag);
                let Some(nats) = cx.nats() else {
                    tcp.map_err(|e| Fail::from(e).code(code))?;
                    return Ok(1);
                };
                // With NATS: 1 when a TCP client or the NATS client
                // took the event. An async send no TCP client took is
                // watched: nobody listening on NATS runs
                // evapi:no-responders with its data.
                let taken = matches!(tcp, Ok(n) if n > 0);
                match nats.send(kind, data, tag, suspends && !taken) {
                    Ok(()) => Ok(1),
                    Err(_) if taken => Ok(1),
                    Err(e) => Err(match tcp {
                        Err(t) => Fail::new(format_args!("{t}; over NATS: {e}")),
                        Ok(_) => {
                            Fail::new(format_args!("no event client took it, and over NATS: {e}"))
                        }
                    }
                    .code(code)),
                }
            })?;
        }
    }
    m.func("close", |cx, ()| {
        let event = cx.event()?;
        if event.client.via_nats() {
            return Err(Fail::new(
                "the event came over NATS: no connection to close",
            ));
        }
        event.client.close();
        Ok(1)
    })?;
    m.func("set_tag", |cx, tag: LuaString| {
        let event = cx.event()?;
        if event.client.via_nats() {
            return Err(Fail::new("the event came over NATS: no connection to tag"));
        }
        event
            .client
            .set_tag(&tag.as_bytes())
            .map_err(|e| Fail::new(format_args!("connection {}: {e}", event.client.conidx())))?;
        Ok(1)
    })?;
    m.func("client_count", |cx, tag: Option<LuaString>| {
        // Without an event socket (a script being checked) nobody is
        // connected: 0, as before the socket starts.
        let events = cx.events().map_err(|e| e.code(0))?;
        Ok(match tag {
            Some(t) => events.tag_count(&t.as_bytes()),
            None => events.client_count(),
        } as i64)
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, FakeClient, Vm};

    #[test]
    fn plain_sends_queue_and_return_1() {
        let vm = Vm::new();
        let r = vm.eval::<(i64, i64, i64, i64)>(
            r#"KSR.evapi.relay("a"), KSR.evapi.relay_multicast("b", "t"),
               KSR.evapi.relay_unicast("c", "t"), KSR.evapi.relay_unicast_rr("d", "t")"#,
        );
        assert_eq!(r, (1, 1, 1, 1));
        assert_eq!(
            vm.events.take(),
            ["relay a", "multicast b t", "unicast c t", "unicast_rr d t"]
        );
    }

    #[test]
    fn refused_sends_are_minus_one() {
        let vm = Vm::new();
        let r = vm.eval::<(i64, i64, i64)>(
            r#"KSR.evapi.relay(""), KSR.evapi.relay_multicast("b", ""),
               KSR.evapi.relay_unicast("c")"#,
        );
        assert_eq!(r, (-1, -1, -1));
        vm.events.fail_next();
        assert_eq!(vm.eval::<i64>(r#"KSR.evapi.relay("x")"#), -1);
        assert!(vm.events.take().is_empty());
    }

    #[test]
    fn async_sends_suspend_first() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<i64>(r#"KSR.evapi.async_relay("ev")"#)
        });
        assert_eq!(r, 1);
        assert_eq!(vm.sip.take(), ["t_suspend"]);
        assert_eq!(vm.events.take(), ["relay ev"]);

        // Suspended, then the send failed: -2, so the script can reply.
        vm.events.fail_next();
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<i64>(r#"KSR.evapi.async_multicast("ev", "t")"#)
        });
        assert_eq!(r, -2);
        assert_eq!(vm.sip.take(), ["t_suspend"]);

        // Nothing suspended: -1, nothing sent.
        vm.sip.fail_next();
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<i64>(r#"KSR.evapi.async_unicast("ev", "t")"#)
        });
        assert_eq!(r, -1);
        assert_eq!(vm.sip.take(), ["t_suspend (refused)"]);
        assert!(vm.events.take().is_empty());
        // Not in a request route: -1.
        assert_eq!(vm.eval::<i64>(r#"KSR.evapi.async_relay("ev")"#), -1);
        assert!(vm.sip.take().is_empty());
    }

    #[test]
    fn close_set_tag_and_count_act_on_the_event() {
        let vm = Vm::new();
        assert_eq!(
            vm.eval::<(i64, i64)>(r#"KSR.evapi.close(), KSR.evapi.set_tag("x")"#),
            (-1, -1)
        );
        let client = FakeClient::new(3);
        let r = vm.in_event(&client, Some("hello"), |vm| {
            vm.eval::<(i64, i64, i64, i64)>(
                r#"KSR.evapi.set_tag("billing"), KSR.evapi.set_tag(""),
                   KSR.evapi.close(), KSR.evapi.client_count("billing")"#,
            )
        });
        assert_eq!(r, (1, -1, 1, 2));
        assert_eq!(client.take(), ["set_tag billing", "close"]);
        assert_eq!(vm.eval::<i64>("KSR.evapi.client_count()"), 5);
    }
}
