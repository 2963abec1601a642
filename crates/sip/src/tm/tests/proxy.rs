//! What makes the table a record-routing proxy: Record-Route on the
//! branch as sent, reply routes remembered per transaction, what a failure
//! route is told, and replies with no transaction forwarded by their Via.

use super::*;
use crate::tm::branch_id::BranchId;

#[test]
fn record_route_is_written_for_the_sending_socket() {
    let mut tm = Tm::new(cfg());
    let mut r = invite();
    r.record_route(None).unwrap();
    let fwd = relayed(&mut tm, &mut r, 0);
    let rr: Vec<_> = fwd.headers("Record-Route").collect();
    assert_eq!(rr, [&b"<sip:127.0.0.1:5060;lr;ftag=fa>"[..]]);
    // Out over TCP: a double Record-Route, the outgoing side on top.
    let mut out = Vec::new();
    let mut r = msg("INVITE", "z9hG4bKtcp", "call-2", 1, "");
    r.record_route(None).unwrap();
    tm.relay(
        &mut r,
        (Transport::Tcp, UAS.parse().unwrap()),
        None,
        0,
        &mut out,
    )
    .unwrap();
    let (_, fwd) = sent(&mut out)
        .into_iter()
        .rfind(|(_, m)| m.is_request())
        .unwrap();
    let rr: Vec<_> = fwd.headers("Record-Route").collect();
    assert_eq!(
        rr,
        [
            &b"<sip:127.0.0.1:5060;transport=tcp;r2=on;lr;ftag=fa>"[..],
            &b"<sip:127.0.0.1:5060;r2=on;lr;ftag=fa>"[..]
        ]
    );
}

#[test]
fn a_loose_routed_ack_goes_with_the_rest_of_the_route_set() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut ack = msg(
        "ACK",
        "z9hG4bKack",
        "call-1",
        1,
        ";tag=uas\r\nRoute: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5090;lr>",
    );
    let myself = crate::myself::Myself::new(cfg().listeners, &[]);
    let lr = ack.loose_route(&|h, p| myself.contains(h, p));
    assert_eq!(lr, crate::LooseRoute::Driven);
    assert_eq!(ack.dst_uri(), Some("sip:127.0.0.1:5090;lr"));
    tm.relay(
        &mut ack,
        (Transport::Udp, "127.0.0.1:5090".parse().unwrap()),
        None,
        0,
        &mut out,
    )
    .unwrap();
    let s = sent(&mut out);
    assert_eq!(s.len(), 1);
    let routes: Vec<_> = s[0].1.headers("Route").collect();
    assert_eq!(routes, [&b"<sip:127.0.0.1:5090;lr>"[..]]);
}

#[test]
fn the_reply_route_stays_with_the_transaction() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    r.set_reply_route("on_reply");
    r.set_failure_route("on_failure");
    let fwd = relayed(&mut tm, &mut r, 0);
    let ringing = answer(&fwd, 180);
    let (id, no) = tm.match_reply(&ringing).unwrap();
    assert_eq!(no, 1);
    let (route, req) = tm.reply_route_of(id, &ringing).unwrap();
    assert_eq!(route, "on_reply");
    assert!(req.tx().is_some());
    tm.on_reply(&ringing, 10, &mut out);
    // A 486 ends the branch: the failure route is told the reply's reason,
    // that it was received, and the branch index.
    tm.on_reply(&answer(&fwd, 486), 20, &mut out);
    let failure = out.iter().find_map(|a| match a {
        Action::Failure {
            req,
            route,
            id: fid,
        } => Some((req.clone(), route.clone(), *fid)),
        _ => None,
    });
    let (mut freq, froute, fid) = failure.unwrap();
    out.clear();
    assert_eq!(froute, "on_failure");
    assert_eq!(freq.failure_code(), Some(486));
    assert_eq!(freq.failure_reason(), Some("X"));
    assert!(!freq.failure_is_local());
    assert_eq!(freq.failure_branch(), 0);
    assert_eq!(
        freq.reply_route(),
        Some("on_reply"),
        "kept for the next branch"
    );
    // A second branch from the failure route: its replies run the same
    // reply route, as branch index 1.
    let fwd2 = relayed(&mut tm, &mut freq, 30);
    let r2 = answer(&fwd2, 183);
    let (id2, no2) = tm.match_reply(&r2).unwrap();
    assert_eq!((id2, no2), (fid, 2));
    assert_eq!(tm.reply_route_of(id2, &r2).unwrap().0, "on_reply");
}

#[test]
fn a_timeout_is_a_local_failure() {
    let mut tm = Tm::new(TableConfig { fr: 1000, ..cfg() });
    let mut out = Vec::new();
    let mut r = msg("OPTIONS", "z9hG4bKo", "call-o", 1, "");
    r.set_failure_route("fr");
    relayed(&mut tm, &mut r, 0);
    tm.on_timer(1000, &mut out);
    let req = out
        .iter()
        .find_map(|a| match a {
            Action::Failure { req, .. } => Some(req.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(req.failure_code(), Some(408));
    assert_eq!(req.failure_reason(), Some("Request Timeout"));
    assert!(req.failure_is_local());
}

#[test]
fn no_reply_route_for_a_reply_to_our_cancel_or_when_none_armed() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    let fwd = relayed(&mut tm, &mut r, 0);
    let (id, _) = tm.match_reply(&answer(&fwd, 180)).unwrap();
    assert!(tm.reply_route_of(id, &answer(&fwd, 180)).is_none());
    let mut r = msg("INVITE", "z9hG4bKc", "call-c", 1, "");
    r.set_reply_route("rr");
    let fwd = relayed(&mut tm, &mut r, 0);
    tm.on_reply(&answer(&fwd, 180), 1, &mut out);
    let cancel_ok = SipMessage::parse(
        SipMessage::parse(fwd.cancel().unwrap())
            .unwrap()
            .response(200, b"OK", None, &[])
            .unwrap(),
    )
    .unwrap();
    let (id, _) = tm.match_reply(&cancel_ok).unwrap();
    assert!(tm.reply_route_of(id, &cancel_ok).is_none());
}

/// A 200 for one of our branches, as a UAS retransmits it.
fn late_ok(branch_via: &str) -> SipMessage {
    let text = format!(
        "SIP/2.0 200 OK\r\nVia: {branch_via}\r\nVia: SIP/2.0/UDP 192.0.2.5:5070;received=127.0.0.1;rport=40000;branch=z9hG4bKup\r\nFrom: <sip:alice@a>;tag=fa\r\nTo: <sip:bob@b>;tag=uas\r\nCall-ID: call-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    SipMessage::parse(Bytes::from(text)).unwrap()
}

/// A relayed INVITE answered 200 (the 200 forwarded), then ended by its
/// wait timer at 100 s: the table, the relayed INVITE and the 200, which
/// matched the transaction before the timer ran.
fn answered_then_ended() -> (Tm, SipMessage, SipMessage) {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    let fwd = relayed(&mut tm, &mut r, 0);
    let ok = answer(&fwd, 200);
    tm.on_reply(&ok, 10, &mut out);
    assert!(tm.match_reply(&ok).is_some());
    tm.on_timer(100_000, &mut out);
    assert_eq!(tm.stats().live, 0);
    (tm, fwd, ok)
}

#[test]
fn a_2xx_after_the_transaction_ended_goes_by_its_via() {
    // The transaction ends (wait timer); the UAS still retransmits.
    let (mut tm, fwd, ok) = answered_then_ended();
    let mut out = Vec::new();
    assert!(tm.match_reply(&ok).is_none());
    let (dest, data) = tm.stateless_dest(&ok).unwrap();
    assert_eq!(dest.addr, UAC.parse::<SocketAddr>().unwrap());
    assert_eq!(dest.transport, Transport::Udp);
    tm.forward_stateless(dest, data, 200, &mut out);
    let s = sent(&mut out);
    assert_eq!(s[0].1.status(), Some(200));
    assert_eq!(s[0].1.vias().count(), 1, "our Via removed");
    assert_eq!(tm.stats().stateless_replies, 1);
    // received and rport of the next Via are where it goes.
    let ours = String::from_utf8_lossy(fwd.top_via().unwrap().raw).into_owned();
    let (dest, _) = tm.stateless_dest(&late_ok(&ours)).unwrap();
    assert_eq!(dest.addr, "127.0.0.1:40000".parse::<SocketAddr>().unwrap());
}

/// The host matches a reply, runs the reply routes, then hands it to the
/// table: when the wait timer ended the transaction in between, the 2xx
/// still goes upstream by its Via (CI once lost one this way).
#[test]
fn a_2xx_whose_transaction_ends_during_its_routes_still_goes_upstream() {
    // It matched (its routes ran), then the timer ended the transaction.
    let (mut tm, _, ok) = answered_then_ended();
    let mut out = Vec::new();
    tm.on_reply(&ok, 100_001, &mut out);
    let s = sent(&mut out);
    assert_eq!(s.len(), 1, "the retransmitted 200 is forwarded");
    assert_eq!(s[0].0, UAC.parse::<SocketAddr>().unwrap());
    assert_eq!(s[0].1.status(), Some(200));
    assert_eq!(s[0].1.vias().count(), 1, "our Via removed");
    assert_eq!(tm.stats().stateless_replies, 1);
    // A reply that is not ours is still dropped.
    let mut other = Tm::new(cfg());
    other.on_reply(&ok, 1, &mut out);
    assert!(out.is_empty());
}

#[test]
fn foreign_replies_are_not_forwarded() {
    let tm = Tm::new(cfg());
    let other = Tm::new(cfg());
    let branch = BranchId::Relay {
        seed: other.seed,
        index: 1,
        label: 1,
        no: 1,
    };
    // Another instance's branch (other seed) on our address.
    let theirs = late_ok(&format!("SIP/2.0/UDP 127.0.0.1:5060;branch={branch}"));
    if other.seed != tm.seed {
        assert_eq!(
            tm.stateless_dest(&theirs).unwrap_err(),
            stateless::NotForwarded::NotOurs
        );
    }
    // Our branch format, but a sent-by that is not our socket.
    let mine = BranchId::Relay {
        seed: tm.seed,
        index: 1,
        label: 1,
        no: 1,
    };
    let moved = late_ok(&format!("SIP/2.0/UDP 127.0.0.1:5999;branch={mine}"));
    assert_eq!(
        tm.stateless_dest(&moved).unwrap_err(),
        stateless::NotForwarded::NotOurs
    );
    // A UAC's own branch.
    let uac = late_ok("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKplain");
    assert_eq!(
        tm.stateless_dest(&uac).unwrap_err(),
        stateless::NotForwarded::NotOurs
    );
    // Ours, but nothing below it.
    let text = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={mine}\r\nFrom: <sip:a@a>;tag=1\r\nTo: <sip:b@b>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    let alone = SipMessage::parse(Bytes::from(text)).unwrap();
    assert_eq!(
        tm.stateless_dest(&alone).unwrap_err(),
        stateless::NotForwarded::NoNextVia
    );
    // A next Via with a name and no received: nowhere to send.
    let text = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={mine}\r\nVia: SIP/2.0/UDP pc.example;branch=z9hG4bK2\r\nFrom: <sip:a@a>;tag=1\r\nTo: <sip:b@b>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    let named = SipMessage::parse(Bytes::from(text)).unwrap();
    assert!(matches!(
        tm.stateless_dest(&named).unwrap_err(),
        stateless::NotForwarded::BadNextVia(_)
    ));
}
