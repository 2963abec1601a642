//! Message tests of Kamailio's siputils, `KSR.siputils.*`, and corex's
//! `KSR.corex.has_ruri_user()`; all return 1 or -1 (outside a SIP route:
//! -1 and a log line).
//!
//! - `has_totag()`: the To header has a tag (a request inside a dialog).
//! - `is_request()`, `is_reply()`.
//! - `is_first_hop()`: for a request, it has a single Via (nobody
//!   forwarded it to us); for a reply, it has no Record-Route, or its top
//!   Record-Route is an IP address of ours and the reply did not come from
//!   that address (from ourselves, a loop) — Kamailio's mode 0.
//! - `has_ruri_user()`: the Request-URI (as routing changed it) has a
//!   user part.

use super::module::{kemi_bool, Cx, Fail, Module};
use crate::pv::MsgView;
use sip::HeaderName;

/// `test` on the current message, as 1 or -1.
fn test(cx: &Cx<'_>, test: impl FnOnce(&dyn MsgView) -> bool) -> Result<i64, Fail> {
    Ok(kemi_bool(cx.here().with_view(test)?))
}

/// The top Record-Route URI's host and port, when it names an IP address
/// (mode 0 looks at IP addresses only).
fn top_rr(v: &dyn MsgView) -> Option<(std::net::IpAddr, Option<u16>)> {
    let first = v.msg().elements_of(HeaderName::RecordRoute).next()?;
    let na = sip::NameAddr::parse(first).ok()?;
    let uri = na.parse_uri().ok()?;
    let host = std::str::from_utf8(uri.host).ok()?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((bare.parse().ok()?, uri.port))
}

fn is_first_hop(cx: &Cx<'_>) -> Result<i64, Fail> {
    let (is_request, single_via, has_rr, rr, src) = cx.here().with_view(|v| {
        let m = v.msg();
        (
            m.is_request(),
            m.vias().nth(1).is_none(),
            m.header_of(HeaderName::RecordRoute).is_some(),
            top_rr(v),
            v.source().map(|s| s.1),
        )
    })?;
    if is_request {
        return Ok(kemi_bool(single_via));
    }
    if !has_rr {
        return Ok(1);
    }
    let Some((ip, port)) = rr else {
        return Ok(-1);
    };
    if !cx.sip()?.is_myself(&ip.to_string(), port) {
        return Ok(-1);
    }
    // From the address the Record-Route names: our own reply, a loop.
    let looped = src.is_some_and(|s| s.ip() == ip && s.port() == port.unwrap_or(5060));
    Ok(kemi_bool(!looped))
}

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func("has_totag", |cx, ()| {
        test(cx, |v| v.msg().to().is_ok_and(|t| t.tag.is_some()))
    })?;
    m.func("is_request", |cx, ()| test(cx, |v| v.msg().is_request()))?;
    m.func("is_reply", |cx, ()| test(cx, |v| !v.msg().is_request()))?;
    m.func("is_first_hop", |cx, ()| is_first_hop(cx))
}

/// `KSR.corex.*`.
pub(super) fn register_corex(m: &Module<'_>) -> mlua::Result<()> {
    m.func("has_ruri_user", |cx, ()| {
        test(cx, |v| {
            v.ruri()
                .and_then(|u| Some(sip::Uri::parse(u).ok()?.user?.is_empty()))
                == Some(false)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, Vm};
    use crate::call::run_reply_route;
    use sip::{SipMessage, Source};

    #[test]
    fn request_tests() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(i64, i64, i64, i64, i64)>(
                r#"KSR.siputils.has_totag(), KSR.siputils.is_request(), KSR.siputils.is_reply(),
                   KSR.siputils.is_first_hop(), KSR.corex.has_ruri_user()"#,
            )
        });
        assert_eq!(r, (-1, 1, -1, 1, 1));
        let mut req = request(
            "BYE",
            "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK2\r\nX: y\r\n",
        );
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(i64, i64, i64)>(
                r#"KSR.siputils.is_first_hop(), KSR.pv.sets("$ru", "sip:example.com"),
                   KSR.corex.has_ruri_user()"#,
            )
        });
        assert_eq!(r, (-1, 1, -1));
        // Outside a route: -1.
        assert_eq!(vm.eval::<i64>("KSR.siputils.has_totag()"), -1);
    }

    fn reply(extra: &str, from: &str) -> (SipMessage, Source) {
        let raw = format!(
            "SIP/2.0 200 OK\r\n\
             Via: SIP/2.0/UDP 192.0.2.1:5061;branch=z9hG4bK1\r\n\
             {extra}From: <sip:alice@a.example>;tag=ft1\r\n\
             To: <sip:bob@example.com>;tag=tt1\r\n\
             Call-ID: cid-1\r\nCSeq: 42 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        let src = Source {
            transport: sip::Transport::Udp,
            remote: from.parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        };
        (SipMessage::parse(bytes::Bytes::from(raw)).unwrap(), src)
    }

    #[test]
    fn reply_tests() {
        let vm = Vm::new();
        vm.run(
            r#"function ksr_reply_route()
                 KSR.pv.sets("$var(r)", KSR.siputils.is_reply() .. KSR.siputils.has_totag()
                   .. KSR.siputils.is_first_hop())
               end"#,
        );
        let seen = |extra: &str, from: &str| {
            let (m, s) = reply(extra, from);
            run_reply_route(&vm.lua, &m, &s);
            vm.eval::<String>(r#"KSR.pv.get("$var(r)")"#)
        };
        assert_eq!(seen("", "192.0.2.9:5060"), "111");
        // Top Record-Route is ours (the fake listens on 192.0.2.10:5060).
        let rr = "Record-Route: <sip:192.0.2.10;lr>\r\n";
        assert_eq!(seen(rr, "192.0.2.9:5060"), "111");
        assert_eq!(seen(rr, "192.0.2.10:5060"), "11-1", "from ourselves");
        let other = "Record-Route: <sip:198.51.100.1;lr>\r\n";
        assert_eq!(seen(other, "192.0.2.9:5060"), "11-1");
        let named = "Record-Route: <sip:proxy.example;lr>\r\n";
        assert_eq!(seen(named, "192.0.2.9:5060"), "11-1");
    }
}
