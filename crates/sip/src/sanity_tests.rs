//! Malformed messages against each check, with the example script's flags.

use super::*;
use bytes::Bytes;

/// The example script's request checks and URI checks.
const REQ: (u32, u32) = (17895, 7);
/// The example script's reply checks.
const REPLY: (u32, u32) = (17604, 6);

fn msg(text: &str) -> SipMessage {
    SipMessage::parse(Bytes::from(text.to_owned())).expect("the test message parses")
}

/// An INVITE with `first` as its request line and `extra` header lines.
fn invite(first: &str, extra: &str) -> SipMessage {
    msg(&format!(
        "{first}\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
         From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\n\
         Call-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
    ))
}

fn req_check(m: &SipMessage) -> Result<(), (u16, &'static str)> {
    sanity_check(m, REQ.0, REQ.1).map_err(|f| (f.code, f.reason))
}

#[test]
fn the_example_flags_select_the_checks_we_implement() {
    assert_eq!(
        REQ.0 & !MSG_CHECKS_DONE,
        0,
        "every request check is implemented"
    );
    assert_eq!(
        REPLY.0 & !MSG_CHECKS_DONE,
        0,
        "every reply check is implemented"
    );
    assert!(REQ.0 < MSG_CHECKS_END && REQ.1 < URI_CHECKS_END);
}

#[test]
fn a_good_request_and_reply_pass() {
    let ok = "INVITE sip:b@example.com SIP/2.0";
    assert_eq!(req_check(&invite(ok, "Expires: 300\r\n")), Ok(()));
    let reply = msg(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
         From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\n\
         Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(sanity_check(&reply, REPLY.0, REPLY.1), Ok(()));
    // Every flag at once, on a clean request, with a Route that has lr.
    let all = invite(
        ok,
        "Route: <sip:p.example.com;lr>\r\nContact: <sip:a@192.0.2.1>\r\n",
    );
    assert_eq!(
        sanity_check(&all, MSG_CHECKS_END - 1, URI_CHECKS_END - 1),
        Ok(())
    );
}

#[test]
fn request_line_checks_reply_505_416_and_400() {
    assert_eq!(
        req_check(&invite("INVITE sip:b@example.com SIP/3.0", "")),
        Err((505, "Version Not Supported (R-URI)"))
    );
    assert_eq!(
        req_check(&invite("INVITE mailto:b@example.com SIP/2.0", "")),
        Err((416, "Unsupported URI Scheme in Request URI"))
    );
    assert_eq!(
        req_check(&invite("INVITE sip:b@[::1 SIP/2.0", "")),
        Err((400, "Bad Request URI"))
    );
}

#[test]
fn header_checks() {
    let ok = "INVITE sip:b@example.com SIP/2.0";
    let silent = |m: &SipMessage| sanity_check(m, REQ.0, REQ.1).unwrap_err().code;
    // Missing or duplicated transaction headers: fail without a reply.
    let no_from = msg(
        "INVITE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
         To: <sip:b@example.com>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(silent(&no_from), 0);
    assert_eq!(silent(&invite(ok, "Call-ID: c2\r\n")), 0);
    // No branch on the top Via: no reply.
    let no_branch = msg(
        "INVITE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@x>;tag=1\r\n\
         To: <sip:b@x>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(
        sanity_check(&no_branch, REQ.0, REQ.1).unwrap_err().check,
        "via1_header"
    );
    assert_eq!(
        req_check(&msg(
            "INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n\
             To: <sip:b@x>\r\nCall-ID: c1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
        )),
        Err((400, "CSeq method does not match request method"))
    );
    for (cseq, want) in [
        ("CSeq: 2147483648 INVITE", "CSeq number is illegal"),
        ("CSeq: INVITE", "Missing number in CSeq header"),
    ] {
        let m = msg(&format!(
            "INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n\
             To: <sip:b@x>\r\nCall-ID: c1\r\n{cseq}\r\nContent-Length: 0\r\n\r\n"
        ));
        assert_eq!(
            sanity_check(&m, CSEQ_VALUE, 0).map_err(|f| (f.code, f.reason)),
            Err((400, want)),
            "{cseq}"
        );
    }
    for (expires, want) in [
        ("Expires: \r\n", "Missing number in Expires header"),
        ("Expires: soon\r\n", "Expires value is illegal"),
        ("Expires: 4294967296\r\n", "Expires value is illegal"),
    ] {
        assert_eq!(
            req_check(&invite(ok, expires)),
            Err((400, want)),
            "{expires}"
        );
    }
}

#[test]
fn content_length_must_match_the_datagram() {
    let m = msg(
        "OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n\
         To: <sip:b@x>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 2\r\n\r\nabcd",
    );
    assert_eq!(req_check(&m), Err((400, "Content-Length mis-match")));
}

#[test]
fn uri_checks_and_proxy_require() {
    let ok = "INVITE sip:b@example.com SIP/2.0";
    let bad_from = msg(
        "INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <nope>;tag=1\r\n\
         To: <sip:b@x>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(req_check(&bad_from), Err((400, "Invalid From Header")));
    // The URI flags choose: without From, it passes.
    assert_eq!(sanity_check(&bad_from, PARSE_URIS, URI_TO), Ok(()));
    let bad_contact = invite(ok, "Contact: <sip:a@[::1>\r\n");
    assert_eq!(req_check(&bad_contact), Ok(()), "7 does not check Contact");
    assert_eq!(
        sanity_check(&bad_contact, PARSE_URIS, URI_CONTACT).map_err(|f| f.reason),
        Err("Bad Contact URI")
    );
    let f = sanity_check(&invite(ok, "Proxy-Require: foo, bar\r\n"), PROXY_REQUIRE, 0).unwrap_err();
    assert_eq!((f.code, f.reason), (420, "Bad Proxy Require Extension"));
    assert_eq!(f.header.as_deref(), Some("Unsupported: foo"));
    assert!(
        req_check(&invite(ok, "Proxy-Require: foo\r\n")).is_ok(),
        "not in 17895"
    );
}

#[test]
fn duplicated_tags_and_rfc3261() {
    let m = msg(
        "INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1\r\nFrom: <sip:a@x>;tag=1;tag=2\r\n\
         To: <sip:b@x>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nRoute: <sip:p>\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(sanity_check(&m, CHECK_DUPTAGS, 0).unwrap_err().code, 0);
    let f = sanity_check(&m, RFC3261_COMPLIANCE, 0).unwrap_err();
    assert_eq!(
        (f.code, f.reason),
        (0, "top Via branch lacks the magic cookie")
    );
    // Not selected: they pass.
    assert_eq!(
        sanity_check(&m, VIA_SIP_VERSION | VIA_PROTOCOL | CHECK_DIGEST, 0),
        Ok(())
    );
}
