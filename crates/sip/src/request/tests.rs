//! Request edits, serialization for relay, and what the router reads.
use super::*;

fn req() -> Request {
    let m = SipMessage::parse(Bytes::from_static(
        b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nSubject: hi\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
    ))
    .unwrap();
    Request::new(
        m,
        Source {
            transport: Transport::Udp,
            remote: "127.0.0.1:5070".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        },
    )
}

#[test]
fn edits_are_seen_and_applied() {
    let mut r = req();
    assert!(r.has_header("s"));
    assert_eq!(r.remove_header("Subject"), 1);
    assert!(!r.has_header("subject"));
    r.append_header("X-B: two\r\n").unwrap();
    r.append_header("Subject: again").unwrap();
    assert_eq!(r.header("s"), Some(&b"again"[..]));
    assert_eq!(r.header("x-b"), Some(&b"two"[..]));
    assert_eq!(r.remove_header("x-a"), 1);
    assert!(r.append_header("bad line").is_err());
    assert!(r.append_header("X: a\r\nY: b").is_err());
    r.set_ruri("sip:carol@127.0.0.2:5080").unwrap();
    assert!(r.set_ruri("not a uri").is_err());
    let out = r.serialize_for_relay("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKme", None);
    let m = SipMessage::parse(out).unwrap();
    assert_eq!(m.request_uri_raw(), Some(&b"sip:carol@127.0.0.2:5080"[..]));
    assert_eq!(m.top_via().unwrap().branch, Some(&b"z9hG4bKme"[..]));
    assert_eq!(m.max_forwards().unwrap(), Some(70));
    assert_eq!(m.header("Subject"), Some(&b"again"[..]));
    assert_eq!(m.headers("Subject").count(), 1);
    assert_eq!(m.header("X-A"), None);
    assert_eq!(m.header("X-B"), Some(&b"two"[..]));
    r.set_max_forwards(9);
    assert_eq!(r.max_forwards(), Some(9));
    let m =
        SipMessage::parse(r.serialize_for_relay("SIP/2.0/UDP h;branch=z9hG4bKx", None)).unwrap();
    assert_eq!(m.max_forwards().unwrap(), Some(9));
    assert_eq!(m.headers("Max-Forwards").count(), 1);
}

#[test]
fn max_forwards_set_by_routing_is_not_decremented_again() {
    let via = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKme";
    // Appended by routing: relayed as set, not decremented again.
    let mut r = req();
    r.append_header("Max-Forwards: 5\r\n").unwrap();
    let m = SipMessage::parse(r.serialize_for_relay(via, None)).unwrap();
    assert_eq!(
        m.max_forwards().unwrap(),
        Some(5),
        "set by routing: kept as set"
    );
    assert_eq!(m.headers("Max-Forwards").count(), 1);
    let mut r = req();
    r.remove_header("Max-Forwards");
    r.append_header("Max-Forwards: 9").unwrap();
    let m = SipMessage::parse(r.serialize_for_relay(via, None)).unwrap();
    assert_eq!(m.max_forwards().unwrap(), Some(9));
}

#[test]
fn force_rport_sends_replies_to_the_source_port() {
    // The test request's Via says port 5070 without rport; it came
    // from 127.0.0.1:5070, so make the source port differ.
    let mut r = req();
    r.source.remote = "127.0.0.1:40000".parse().unwrap();
    assert_eq!(crate::tm::Tm::reply_dest(&r).addr.port(), 5070);
    r.set_force_rport();
    assert_eq!(crate::tm::Tm::reply_dest(&r).addr.port(), 40000);
}

#[test]
fn router_flags_travel_with_copies() {
    let mut r = req();
    r.set_flags(1 << 3);
    r.set_branch_flags(1 << 6);
    r.set_reply_no_connect();
    let copy = r.clone();
    assert_eq!(
        (copy.flags(), copy.branch_flags(), copy.reply_no_connect()),
        (8, 64, true)
    );
}

#[test]
fn headers_read_as_received_while_relays_use_the_fixed_via() {
    let original = SipMessage::parse(Bytes::from_static(
        b"OPTIONS sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP pc.example:5070;rport;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    ))
    .unwrap();
    let src = Source {
        transport: Transport::Udp,
        remote: "192.0.2.7:40000".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
        conn: None,
    };
    let fixed = crate::transport::fix_via(original.clone(), &src).unwrap();
    let r = Request::with_original(fixed, original, src);
    assert_eq!(
        r.header("Via"),
        Some(&b"SIP/2.0/UDP pc.example:5070;rport;branch=z9hG4bK1"[..])
    );
    assert_eq!(r.msg_as_received().top_via().unwrap().received, None);
    // Replies and relays are built from the fixed message.
    let v = r.msg().top_via().unwrap();
    assert_eq!(v.received, Some(&b"192.0.2.7"[..]));
    assert_eq!(v.rport, Some(Some(40000)));
    let relayed = SipMessage::parse(
        r.serialize_for_relay("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKme", None),
    )
    .unwrap();
    let second = relayed.vias().nth(1).unwrap().unwrap();
    assert_eq!(second.received, Some(&b"192.0.2.7"[..]));
}
