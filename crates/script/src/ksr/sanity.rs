//! `KSR.sanity.sanity_check(msg_checks, uri_checks)`: Kamailio's sanity
//! checks on the current request or reply, chosen by its bit flags (see
//! [`sip::sanity`]: which are implemented, which pass). 1 when every
//! chosen check passes; -1 when one fails, after replying to a request as
//! Kamailio does (400 variants, 416, 420 with `Unsupported`, 505), except
//! to an ACK, in a reply route, or where Kamailio sends nothing (a
//! message too broken to answer). Flags outside Kamailio's ranges (message
//! checks below 2^17, URI checks below 16) are -1 and a log line.

use super::module::{lua_int, Cx, Fail, Module};
use crate::context::RouteKind;
use mlua::Value;
use sip::sanity::{sanity_check, SanityFailure, MSG_CHECKS_END, URI_CHECKS_END};
use sip::Method;

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func(
        "sanity_check",
        |cx, (msg_checks, uri_checks): (Value, Value)| {
            let flags = |v: &Value, end: u32, what: &str| {
                lua_int(v)
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|&n| n < end)
                    .ok_or_else(|| {
                        Fail::new(format_args!(
                            "{what} {} outside 0 to {}",
                            v.to_string().unwrap_or_else(|_| format!("{v:?}")),
                            end - 1
                        ))
                    })
            };
            let m = flags(&msg_checks, MSG_CHECKS_END, "message check flags")?;
            let u = flags(&uri_checks, URI_CHECKS_END, "URI check flags")?;
            let outcome = cx.here().with_view(|v| sanity_check(v.msg(), m, u))?;
            match outcome {
                Ok(()) => Ok(1),
                Err(f) => Err(failed(cx, f)),
            }
        },
    )
}

/// Reply as Kamailio does for a failed check, and say what failed.
fn failed(cx: &Cx<'_>, f: SanityFailure) -> Fail {
    let mut why = format!("{} check failed: {}", f.check, f.reason);
    let is_request = cx
        .here()
        .route_kind()
        .is_some_and(|k| k != RouteKind::Reply);
    if f.code == 0 || !is_request {
        return Fail::new(why);
    }
    let sent = cx.sip().and_then(|host| {
        cx.request(|req| {
            if req.msg().method() == Some(&Method::Ack) {
                return Ok(false);
            }
            if let Some(h) = &f.header {
                req.append_to_reply(h)?;
            }
            host.sl_reply(req, f.code.into(), f.reason)?;
            Ok(true)
        })?
    });
    match sent {
        Ok(true) => {
            cx.mark_handled();
            why.push_str(&format!("; replied {} {}", f.code, f.reason));
        }
        Ok(false) => {}
        Err(Fail::Refused { why: e, .. }) => why.push_str(&format!("; no reply: {e}")),
        Err(lua) => return lua,
    }
    Fail::new(why)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, Vm};
    use sip::{Request, SipMessage};

    fn raw_request(text: &str) -> Request {
        Request::new(
            SipMessage::parse(bytes::Bytes::from(text.to_owned())).unwrap(),
            request("INVITE", "").source().clone(),
        )
    }

    fn check(vm: &Vm, req: &mut Request, flags: &str) -> i64 {
        vm.in_request(req, |vm| {
            vm.eval::<i64>(&format!("KSR.sanity.sanity_check({flags})"))
        })
    }

    #[test]
    fn a_good_request_passes_the_example_checks() {
        let vm = Vm::new();
        let mut req = request("INVITE", "Expires: 60\r\n");
        assert_eq!(check(&vm, &mut req, "17895, 7"), 1);
        assert!(vm.sip.take().is_empty());
    }

    #[test]
    fn failures_reply_as_kamailio_and_return_minus_1() {
        let vm = Vm::new();
        let mut bad_expires = request("INVITE", "Expires: soon\r\n");
        assert_eq!(check(&vm, &mut bad_expires, "17895, 7"), -1);
        assert_eq!(vm.sip.take(), ["sl_reply 400 Expires value is illegal"]);
        let mut version = raw_request(
            "OPTIONS sip:b@x SIP/2.1\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n\
             To: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(check(&vm, &mut version, "17895, 7"), -1);
        assert_eq!(
            vm.sip.take(),
            ["sl_reply 505 Version Not Supported (R-URI)"]
        );
        let mut scheme = raw_request(
            "OPTIONS http://x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n\
             To: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(check(&vm, &mut scheme, "17895, 7"), -1);
        assert_eq!(
            vm.sip.take(),
            ["sl_reply 416 Unsupported URI Scheme in Request URI"]
        );
        // 420 carries Unsupported.
        let mut pr = request("INVITE", "Proxy-Require: x-magic\r\n");
        assert_eq!(check(&vm, &mut pr, "512, 0"), -1);
        assert_eq!(vm.sip.take(), ["sl_reply 420 Bad Proxy Require Extension"]);
        assert_eq!(
            pr.reply_headers().collect::<Vec<_>>(),
            [("Unsupported", "x-magic")]
        );
        // No branch: fails without a reply.
        let mut silent = raw_request(
            "OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@x>;tag=1\r\n\
             To: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(check(&vm, &mut silent, "17895, 7"), -1);
        assert!(vm.sip.take().is_empty());
    }

    #[test]
    fn a_reply_route_checks_the_reply_and_sends_nothing() {
        let vm = Vm::new();
        vm.run(
            r#"function ksr_reply_route()
                 KSR.pv.seti("$var(s)", KSR.sanity.sanity_check(17604, 6))
               end"#,
        );
        let reply = |cseq: &str| {
            SipMessage::parse(bytes::Bytes::from(format!(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n\
                 To: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: {cseq} INVITE\r\nContent-Length: 0\r\n\r\n"
            )))
            .unwrap()
        };
        let src = request("INVITE", "").source().clone();
        for (cseq, want) in [("1", 1), ("2147483648", -1)] {
            crate::call::run_reply_route(&vm.lua, &reply(cseq), &src);
            assert_eq!(vm.eval::<i64>(r#"KSR.pv.get("$var(s)")"#), want, "{cseq}");
        }
        assert!(vm.sip.take().is_empty(), "a reply is never answered");
    }

    #[test]
    fn an_ack_is_never_answered_and_bad_flags_are_minus_1() {
        let vm = Vm::new();
        let mut ack = request("ACK", "Expires: soon\r\n");
        assert_eq!(check(&vm, &mut ack, "17895, 7"), -1);
        assert!(vm.sip.take().is_empty());
        let mut req = request("INVITE", "");
        for flags in ["131072, 7", "-1, 7", "17895, 16", "'x', 7"] {
            assert_eq!(check(&vm, &mut req, flags), -1, "{flags}");
        }
        assert!(vm.sip.take().is_empty());
        // Outside a SIP route.
        assert_eq!(vm.eval::<i64>("KSR.sanity.sanity_check(17895, 7)"), -1);
    }
}
