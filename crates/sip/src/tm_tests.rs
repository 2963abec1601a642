//! The transaction table driven by hand: a clock moved by the test, the
//! sends read back from the action list.

use super::*;
use crate::request::Source;

const UAC: &str = "127.0.0.1:5070";
const UAS: &str = "127.0.0.1:5080";

fn cfg() -> TmConfig {
    TmConfig {
        t1: 500,
        t2: 4000,
        fr: 30_000,
        fr_inv: 120_000,
        wait: 5_000,
        max: 100,
        listeners: vec![
            (Transport::Udp, "127.0.0.1:5060".parse().unwrap()),
            (Transport::Tcp, "127.0.0.1:5060".parse().unwrap()),
        ],
    }
}

fn msg(method: &str, branch: &str, call_id: &str, cseq: u32, extra: &str) -> Request {
    let text = format!(
        "{method} sip:bob@{UAS} SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@a>;tag=fa\r\nTo: <sip:bob@b>{extra}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    );
    let m = SipMessage::parse(Bytes::from(text)).unwrap();
    Request::new(
        m,
        Source {
            transport: Transport::Udp,
            remote: UAC.parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        },
    )
}

fn invite() -> Request {
    msg("INVITE", "z9hG4bKinv1", "call-1", 1, "")
}

/// The messages sent, parsed, with their destinations.
fn sent(out: &mut Vec<Action>) -> Vec<(SocketAddr, SipMessage)> {
    let v = out
        .drain(..)
        .filter_map(|a| match a {
            Action::Send { dest, data, .. } => Some((dest.addr, SipMessage::parse(data).unwrap())),
            Action::Failure { .. } => None,
        })
        .collect();
    v
}

/// The status codes of the replies sent.
fn codes(out: &mut Vec<Action>) -> Vec<u16> {
    sent(out).iter().filter_map(|(_, m)| m.status()).collect()
}

#[test]
fn invite_gets_100_and_retransmissions_are_absorbed() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    let t = tm.newtran(&mut r, 0, &mut out).unwrap();
    assert_eq!(codes(&mut out), vec![100]);
    // Idempotent, by ref and by key.
    assert_eq!(tm.newtran(&mut r, 1, &mut out).unwrap(), t);
    assert_eq!(tm.newtran(&mut invite(), 1, &mut out).unwrap(), t);
    assert!(out.is_empty());
    assert_eq!(tm.on_request(&invite(), 10, &mut out), Incoming::Absorbed);
    assert_eq!(codes(&mut out), vec![100]);
    assert_eq!(tm.stats().absorbed, 1);
    assert_eq!(tm.stats().live, 1);
    assert!(tm.exists(&invite()));
    assert_eq!(
        tm.on_request(&msg("INVITE", "z9hG4bKother", "c2", 1, ""), 10, &mut out),
        Incoming::Route
    );
}

#[test]
fn suspend_continue_reply_and_2xx_retransmitted_until_ack() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    r.append_header("X-Kept: yes").unwrap();
    let t = tm.suspend(&mut r, 0, &mut out).unwrap();
    assert_eq!(codes(&mut out), vec![100]);
    assert_eq!(tm.stats().suspended, 1);
    assert!(matches!(
        tm.suspend(&mut r, 1, &mut out),
        Err(TmError::AlreadySuspended { .. })
    ));
    // Retransmission while suspended: the last provisional again.
    assert_eq!(tm.on_request(&invite(), 100, &mut out), Incoming::Absorbed);
    assert_eq!(codes(&mut out), vec![100]);
    // A wrong label changes nothing.
    let e = tm.resume(t.index, t.label + 1).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("no suspended transaction {}:{}", t.index, t.label + 1)
    );
    assert_eq!(tm.stats().suspended, 1);
    let mut back = tm.resume(t.index, t.label).unwrap();
    assert_eq!(back.tx(), Some(t));
    assert_eq!(back.header("X-Kept"), Some(&b"yes"[..]));
    assert_eq!(tm.stats().suspended, 0);
    assert!(matches!(
        tm.resume(t.index, t.label),
        Err(TmError::NotSuspended { .. })
    ));
    tm.reply(&mut back, 200, "OK", 1000, &mut out).unwrap();
    let s = sent(&mut out);
    assert_eq!(s[0].1.status(), Some(200));
    assert_eq!(s[0].0, UAC.parse::<SocketAddr>().unwrap());
    let tag = s[0].1.to().unwrap().tag.unwrap().to_vec();
    assert!(matches!(
        tm.reply(&mut back, 486, "Busy", 1001, &mut out),
        Err(TmError::AlreadyReplied { code: 200, .. })
    ));
    // Timer G: 500, 1000, 2000, 4000, 4000 ms.
    let mut at = 1000;
    for step in [500, 1000, 2000, 4000, 4000] {
        tm.on_timer(at + step - 1, &mut out);
        assert!(out.is_empty(), "early retransmission before +{step}");
        at += step;
        tm.on_timer(at, &mut out);
        assert_eq!(codes(&mut out), vec![200]);
    }
    // The ACK of a 2xx has its own branch; it stops the retransmissions
    // and still goes to the router.
    let ack = msg(
        "ACK",
        "z9hG4bKack",
        "call-1",
        1,
        &format!(";tag={}", String::from_utf8(tag).unwrap()),
    );
    assert_eq!(tm.on_request(&ack, at + 1, &mut out), Incoming::Route);
    tm.on_timer(at + 4000, &mut out);
    assert!(out.is_empty());
    tm.on_timer(at + 1 + 5000, &mut out);
    assert_eq!(tm.stats().live, 0);
}

#[test]
fn never_continued_invite_times_out_with_408() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let t = tm.suspend(&mut invite(), 0, &mut out).unwrap();
    out.clear();
    tm.on_timer(119_999, &mut out);
    assert!(out.is_empty());
    tm.on_timer(120_000, &mut out);
    assert_eq!(codes(&mut out), vec![408]);
    assert_eq!(tm.stats().suspended, 0);
    assert_eq!(tm.stats().timeouts, 1);
    assert!(matches!(
        tm.resume(t.index, t.label),
        Err(TmError::NotSuspended { .. })
    ));
    // The 408 is retransmitted until the ACK (same branch), which is absorbed.
    tm.on_timer(120_500, &mut out);
    assert_eq!(codes(&mut out), vec![408]);
    let ack = msg("ACK", "z9hG4bKinv1", "call-1", 1, ";tag=x");
    assert_eq!(tm.on_request(&ack, 120_600, &mut out), Incoming::Absorbed);
    tm.on_timer(121_600, &mut out);
    assert!(out.is_empty(), "retransmitted after the ACK");
    tm.on_timer(125_600, &mut out);
    assert_eq!(tm.stats().live, 0);
}

#[test]
fn unacked_final_gives_up_at_timer_h() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    tm.reply(&mut r, 486, "Busy Here", 0, &mut out).unwrap();
    assert_eq!(codes(&mut out), vec![100, 486]);
    let mut n = 0;
    let mut now = 0;
    while now <= 40_000 {
        now += 250;
        tm.on_timer(now, &mut out);
        n += codes(&mut out).len();
    }
    // 0.5, 1.5, 3.5, 7.5, then every 4 s to 32 s.
    assert_eq!(n, 4 + 6);
    assert_eq!(tm.stats().live, 0);
}

/// An ACK for our non-2xx final with a branch of its own (as SIPp sends
/// with `ack_txn`) is matched by Call-ID, CSeq and our To tag: absorbed,
/// retransmissions stop, and the transaction leaves at wait_timer instead
/// of Timer H. An ACK with another To tag is not taken for ours.
#[test]
fn ack_with_a_new_branch_for_our_final_is_absorbed() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    tm.reply(&mut r, 404, "Not Here", 0, &mut out).unwrap();
    let replies = sent(&mut out);
    let final_reply = &replies.last().unwrap().1;
    assert_eq!(final_reply.status(), Some(404));
    let tag = String::from_utf8(final_reply.to().unwrap().tag.unwrap().to_vec()).unwrap();

    let stranger = msg("ACK", "z9hG4bKack-other", "call-1", 1, ";tag=not-ours");
    assert!(matches!(
        tm.on_request(&stranger, 100, &mut out),
        Incoming::Route
    ));
    let ack = msg("ACK", "z9hG4bKack-new", "call-1", 1, &format!(";tag={tag}"));
    assert!(matches!(
        tm.on_request(&ack, 200, &mut out),
        Incoming::Absorbed
    ));
    assert_eq!(tm.stats().absorbed, 1);
    // No 404 retransmission after the ACK; gone after wait_timer (5 s),
    // long before Timer H (32 s).
    let mut now = 200;
    while now <= 6_000 {
        now += 250;
        tm.on_timer(now, &mut out);
        assert!(codes(&mut out).is_empty(), "retransmitted at {now} ms");
    }
    assert_eq!(tm.stats().live, 0);
}

#[test]
fn non_invite_suspended_times_out_at_fr_timer_and_lingers() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = msg("MESSAGE", "z9hG4bKm1", "m-1", 5, "");
    tm.suspend(&mut r, 0, &mut out).unwrap();
    assert!(out.is_empty(), "no 100 for a non-INVITE");
    // A retransmission while suspended is absorbed silently.
    assert_eq!(
        tm.on_request(&msg("MESSAGE", "z9hG4bKm1", "m-1", 5, ""), 10, &mut out),
        Incoming::Absorbed
    );
    assert!(out.is_empty());
    tm.on_timer(30_000, &mut out);
    assert_eq!(codes(&mut out), vec![408]);
    assert_eq!(
        tm.on_request(&msg("MESSAGE", "z9hG4bKm1", "m-1", 5, ""), 31_000, &mut out),
        Incoming::Absorbed
    );
    assert_eq!(codes(&mut out), vec![408]);
    tm.on_timer(35_000, &mut out);
    assert_eq!(tm.stats().live, 0);
}

#[test]
fn cancel_while_suspended() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let t = tm.suspend(&mut invite(), 0, &mut out).unwrap();
    out.clear();
    let cancel = msg("CANCEL", "z9hG4bKinv1", "call-1", 1, "");
    assert_eq!(tm.on_request(&cancel, 10, &mut out), Incoming::Absorbed);
    let s = sent(&mut out);
    let got: Vec<_> = s
        .iter()
        .map(|(_, m)| (m.status().unwrap(), m.cseq().unwrap().method))
        .collect();
    assert_eq!(got, vec![(200, Method::Cancel), (487, Method::Invite)]);
    assert_eq!(tm.stats().suspended, 0);
    assert_eq!(tm.stats().canceled, 1);
    assert!(matches!(
        tm.resume(t.index, t.label),
        Err(TmError::NotSuspended { .. })
    ));
    // A retransmitted CANCEL gets its 200 again, nothing else.
    assert_eq!(tm.on_request(&cancel, 20, &mut out), Incoming::Absorbed);
    assert_eq!(codes(&mut out), vec![200]);
}

#[test]
fn cancel_racing_a_continue() {
    // Continue first: the route holds the request, the CANCEL ends the
    // INVITE, and what the route does next fails cleanly.
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let t = tm.suspend(&mut invite(), 0, &mut out).unwrap();
    let mut back = tm.resume(t.index, t.label).unwrap();
    out.clear();
    assert!(!tm.is_canceled(&back));
    tm.on_request(&msg("CANCEL", "z9hG4bKinv1", "call-1", 1, ""), 5, &mut out);
    assert_eq!(codes(&mut out), vec![200, 487]);
    assert!(tm.is_canceled(&back));
    assert!(tm.is_canceled(&msg("CANCEL", "z9hG4bKinv1", "call-1", 1, "")));
    assert!(matches!(
        tm.reply(&mut back, 200, "OK", 6, &mut out),
        Err(TmError::AlreadyReplied { code: 487, .. })
    ));
    let hop = (Transport::Udp, UAS.parse().unwrap());
    assert!(matches!(
        tm.relay(&mut back, hop, None, 6, &mut out),
        Err(TmError::AlreadyReplied { .. })
    ));
    assert!(out.is_empty());
    // An unmatched CANCEL goes to the router.
    let stray = msg("CANCEL", "z9hG4bKnone", "call-9", 1, "");
    assert_eq!(tm.on_request(&stray, 7, &mut out), Incoming::Route);
}

/// Relay the INVITE to the UAS; returns the request as sent.
fn relayed(tm: &mut Tm, r: &mut Request, now: u64) -> SipMessage {
    let mut out = Vec::new();
    tm.relay(
        r,
        (Transport::Udp, UAS.parse().unwrap()),
        None,
        now,
        &mut out,
    )
    .unwrap();
    let s = sent(&mut out);
    let (to, m) = s.into_iter().rfind(|(_, m)| m.is_request()).unwrap();
    assert_eq!(to, UAS.parse::<SocketAddr>().unwrap());
    m
}

fn answer(sent: &SipMessage, code: u16) -> SipMessage {
    SipMessage::parse(sent.response(code, b"X", Some(b"uas"), &[]).unwrap()).unwrap()
}

#[test]
fn relay_forwards_provisional_and_2xx_with_timer_a() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    let fwd = relayed(&mut tm, &mut r, 0);
    let via = fwd.top_via().unwrap();
    assert!(via.branch.unwrap().starts_with(b"z9hG4bKev"));
    assert_eq!(via.host, b"127.0.0.1");
    assert_eq!(fwd.vias().count(), 2);
    assert_eq!(fwd.max_forwards().unwrap(), Some(69));
    // Timer A doubles: 500, 1000, 2000 ms.
    for at in [500, 1500, 3500] {
        tm.on_timer(at - 1, &mut out);
        assert!(out.is_empty());
        tm.on_timer(at, &mut out);
        assert_eq!(sent(&mut out).len(), 1);
    }
    let ringing = answer(&fwd, 180);
    assert!(tm.match_reply(&ringing).is_some());
    tm.on_reply(&ringing, 3600, &mut out);
    let s = sent(&mut out);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, UAC.parse::<SocketAddr>().unwrap());
    assert_eq!(s[0].1.status(), Some(180));
    assert_eq!(s[0].1.vias().count(), 1, "our Via stripped");
    tm.on_timer(10_000, &mut out);
    assert!(out.is_empty(), "no retransmission after a provisional");
    // A retransmitted INVITE now gets the 180.
    tm.on_request(&invite(), 10_001, &mut out);
    assert_eq!(codes(&mut out), vec![180]);
    let ok = answer(&fwd, 200);
    tm.on_reply(&ok, 10_002, &mut out);
    assert_eq!(codes(&mut out), vec![200]);
    // 2xx retransmissions from the UAS are forwarded too; we do not
    // retransmit the 2xx ourselves.
    tm.on_reply(&ok, 10_500, &mut out);
    assert_eq!(codes(&mut out), vec![200]);
    tm.on_timer(14_000, &mut out);
    assert!(out.is_empty());
    // The ACK of the 2xx goes to the router (end to end).
    let ack = msg("ACK", "z9hG4bKack2", "call-1", 1, ";tag=uas");
    assert_eq!(tm.on_request(&ack, 10_600, &mut out), Incoming::Route);
    tm.on_timer(15_002, &mut out);
    assert_eq!(tm.stats().live, 0);
    assert_eq!(tm.stats().relayed, 1);
}

#[test]
fn relay_non_2xx_acked_hop_by_hop_and_forwarded() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    let fwd = relayed(&mut tm, &mut r, 0);
    tm.on_reply(&answer(&fwd, 486), 100, &mut out);
    let s = sent(&mut out);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].0, UAS.parse::<SocketAddr>().unwrap());
    assert_eq!(s[0].1.method(), Some(&Method::Ack));
    assert_eq!(s[0].1.to().unwrap().tag, Some(&b"uas"[..]));
    assert_eq!(
        s[0].1.top_via().unwrap().branch,
        fwd.top_via().unwrap().branch
    );
    assert_eq!(s[1].1.status(), Some(486));
    // A retransmitted 486 is ACKed again, not forwarded again.
    tm.on_reply(&answer(&fwd, 486), 200, &mut out);
    let s = sent(&mut out);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].1.method(), Some(&Method::Ack));
    // Upstream's ACK (same branch as the INVITE) is absorbed.
    let ack = msg("ACK", "z9hG4bKinv1", "call-1", 1, ";tag=uas");
    assert_eq!(tm.on_request(&ack, 300, &mut out), Incoming::Absorbed);
}

#[test]
fn failure_route_then_serial_relay() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    r.set_failure_route("next");
    let fwd = relayed(&mut tm, &mut r, 0);
    tm.on_reply(&answer(&fwd, 486), 100, &mut out);
    let mut failure = None;
    for a in out.drain(..) {
        if let Action::Failure { id, req, route } = a {
            failure = Some((id, req, route));
        }
    }
    let (id, mut req, route) = failure.expect("failure route");
    assert_eq!(route, "next");
    assert_eq!(req.failure_code(), Some(486));
    // Serial forking: relay again from the failure route.
    let fwd2 = relayed(&mut tm, &mut req, 200);
    assert_ne!(
        fwd2.top_via().unwrap().branch,
        fwd.top_via().unwrap().branch
    );
    tm.failure_done(id, 201, &mut out);
    assert!(
        out.is_empty(),
        "a relay from the failure route is not overridden"
    );
    // No route armed this time: the 503 is forwarded upstream.
    tm.on_reply(&answer(&fwd2, 503), 300, &mut out);
    let s = sent(&mut out);
    assert_eq!(
        s.iter().filter_map(|(_, m)| m.status()).collect::<Vec<_>>(),
        vec![486]
    );
    assert!(
        s.iter().all(|(_, m)| !matches!(m.status(), Some(503))),
        "the best reply (486) wins"
    );
}

#[test]
fn failure_route_doing_nothing_forwards_best_reply() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    r.set_failure_route("f");
    let fwd = relayed(&mut tm, &mut r, 0);
    tm.on_reply(&answer(&fwd, 404), 100, &mut out);
    let id = out
        .iter()
        .find_map(|a| match a {
            Action::Failure { id, .. } => Some(*id),
            _ => None,
        })
        .unwrap();
    out.clear();
    tm.failure_done(id, 101, &mut out);
    assert_eq!(codes(&mut out), vec![404]);
}

#[test]
fn branch_timeout_before_and_after_provisional() {
    // No answer at all: 408 at fr_timer.
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    relayed(&mut tm, &mut r, 0);
    tm.on_timer(29_999, &mut out);
    out.clear();
    tm.on_timer(30_000, &mut out);
    assert_eq!(codes(&mut out), vec![408]);
    // A late 200 from the callee is still forwarded.
    let fwd = tm
        .txs
        .values()
        .next()
        .unwrap()
        .branch
        .as_ref()
        .unwrap()
        .sent
        .clone();
    tm.on_reply(&answer(&fwd, 200), 30_100, &mut out);
    assert_eq!(codes(&mut out), vec![200]);

    // After a 180: fr_inv_timer, and a CANCEL goes downstream.
    let mut tm = Tm::new(cfg());
    let mut r = invite();
    let fwd = relayed(&mut tm, &mut r, 0);
    tm.on_reply(&answer(&fwd, 180), 10, &mut out);
    out.clear();
    tm.on_timer(60_000, &mut out);
    assert!(out.is_empty());
    tm.on_timer(120_010, &mut out);
    let s = sent(&mut out);
    assert_eq!(s[0].1.method(), Some(&Method::Cancel));
    assert_eq!(s[0].0, UAS.parse::<SocketAddr>().unwrap());
    assert_eq!(s[1].1.status(), Some(408));
}

#[test]
fn cancel_while_relayed() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    let fwd = relayed(&mut tm, &mut r, 0);
    // CANCEL before any provisional: answered, sent downstream once the
    // 180 arrives (RFC 3261 §9.1).
    tm.on_request(&msg("CANCEL", "z9hG4bKinv1", "call-1", 1, ""), 10, &mut out);
    assert_eq!(codes(&mut out), vec![200]);
    tm.on_reply(&answer(&fwd, 180), 20, &mut out);
    let s = sent(&mut out);
    let cancel = s
        .iter()
        .find(|(_, m)| m.method() == Some(&Method::Cancel))
        .unwrap();
    assert_eq!(cancel.0, UAS.parse::<SocketAddr>().unwrap());
    assert_eq!(
        cancel.1.top_via().unwrap().branch,
        fwd.top_via().unwrap().branch
    );
    // CANCEL retransmitted until answered.
    tm.on_timer(520, &mut out);
    assert_eq!(sent(&mut out)[0].1.method(), Some(&Method::Cancel));
    let cancel_ok =
        SipMessage::parse(cancel.1.response(200, b"OK", Some(b"uas"), &[]).unwrap()).unwrap();
    tm.on_reply(&cancel_ok, 600, &mut out);
    tm.on_timer(5000, &mut out);
    assert!(out.is_empty());
    // The 487 is ACKed and forwarded.
    tm.on_reply(&answer(&fwd, 487), 700, &mut out);
    let s = sent(&mut out);
    assert_eq!(s[0].1.method(), Some(&Method::Ack));
    assert_eq!(s[1].1.status(), Some(487));
}

#[test]
fn max_forwards_zero_gets_483() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let text = format!("OPTIONS sip:b@{UAS} SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch=z9hG4bKmf\r\nMax-Forwards: 0\r\nFrom: <sip:a@a>;tag=1\r\nTo: <sip:b@b>\r\nCall-ID: mf\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
    let mut r = Request::new(
        SipMessage::parse(Bytes::from(text)).unwrap(),
        invite().source().clone(),
    );
    let e = tm
        .relay(
            &mut r,
            (Transport::Udp, UAS.parse().unwrap()),
            None,
            0,
            &mut out,
        )
        .unwrap_err();
    assert_eq!(e, TmError::TooManyHops);
    assert_eq!(codes(&mut out), vec![483]);
}

#[test]
fn table_full_and_ack_and_shutdown() {
    let mut c = cfg();
    c.max = 2;
    let mut tm = Tm::new(c);
    let mut out = Vec::new();
    assert_eq!(
        tm.newtran(&mut msg("ACK", "z9hG4bKa", "a", 1, ""), 0, &mut out),
        Err(TmError::AckHasNoTransaction)
    );
    tm.suspend(&mut msg("INVITE", "z9hG4bK1", "1", 1, ""), 0, &mut out)
        .unwrap();
    tm.newtran(&mut msg("INVITE", "z9hG4bK2", "2", 1, ""), 0, &mut out)
        .unwrap();
    assert_eq!(
        tm.newtran(&mut msg("INVITE", "z9hG4bK3", "3", 1, ""), 0, &mut out),
        Err(TmError::TableFull { max: 2 })
    );
    out.clear();
    tm.shutdown(1, &mut out);
    assert_eq!(codes(&mut out), vec![503, 503]);
    assert_eq!(tm.stats().suspended, 0);
    assert_eq!(
        tm.newtran(&mut msg("OPTIONS", "z9hG4bK4", "4", 1, ""), 2, &mut out),
        Err(TmError::ShuttingDown)
    );
}

#[test]
fn labels_are_unique_and_indexes_bounded() {
    let mut c = cfg();
    c.max = 10_000;
    let mut tm = Tm::new(c);
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for i in 0..1000 {
        let t = tm
            .newtran(
                &mut msg("OPTIONS", &format!("z9hG4bK{i}"), &format!("c{i}"), 1, ""),
                0,
                &mut out,
            )
            .unwrap();
        assert!(u64::from(t.index) < BUCKETS);
        assert!(seen.insert(t.label));
    }
}

#[test]
fn timer_wake_flag() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    assert_eq!(tm.next_deadline(), None);
    tm.suspend(&mut invite(), 0, &mut out).unwrap();
    assert!(tm.take_wake(), "first timer must wake the driver");
    assert_eq!(tm.next_deadline(), Some(120_000));
    tm.suspend(&mut msg("OPTIONS", "z9hG4bKo", "o", 1, ""), 0, &mut out)
        .unwrap();
    assert!(tm.take_wake(), "an earlier timer must wake the driver");
    assert_eq!(tm.next_deadline(), Some(30_000));
    tm.suspend(&mut msg("INVITE", "z9hG4bKi2", "i2", 1, ""), 100, &mut out)
        .unwrap();
    assert!(!tm.take_wake(), "a later timer needs no wake");
}

mod random {
    //! Random sequences of everything that can happen to a few calls:
    //! the table never panics, its suspended count matches its entries,
    //! and once time runs far enough every transaction is gone.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Newtran(usize),
        Suspend(usize),
        Resume(usize, bool),
        Reply(usize, u16),
        Relay(usize, bool),
        Answer(usize, u16),
        Cancel(usize),
        Ack(usize),
        Retransmit(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let call = 0usize..4;
        prop_oneof![
            call.clone().prop_map(Op::Newtran),
            call.clone().prop_map(Op::Suspend),
            (call.clone(), any::<bool>()).prop_map(|(c, b)| Op::Resume(c, b)),
            (
                call.clone(),
                prop::sample::select(vec![100u16, 180, 200, 404, 486, 603])
            )
                .prop_map(|(c, k)| Op::Reply(c, k)),
            (call.clone(), any::<bool>()).prop_map(|(c, b)| Op::Relay(c, b)),
            (
                call.clone(),
                prop::sample::select(vec![100u16, 180, 183, 200, 302, 486, 487, 503, 603])
            )
                .prop_map(|(c, k)| Op::Answer(c, k)),
            call.clone().prop_map(Op::Cancel),
            call.clone().prop_map(Op::Ack),
            call.clone().prop_map(Op::Retransmit),
            (0u64..200_000).prop_map(Op::Advance),
        ]
    }

    fn request(c: usize, method: &str) -> Request {
        let m = if c % 2 == 0 { "INVITE" } else { "MESSAGE" };
        let method = if method.is_empty() { m } else { method };
        msg(method, &format!("z9hG4bKr{c}"), &format!("rc{c}"), 1, "")
    }

    fn check(tm: &Tm) {
        let stashed = tm.txs.values().filter(|t| t.stash.is_some()).count();
        assert_eq!(tm.suspended, stashed);
        for tx in tm.txs.values() {
            for k in tx.timers.iter().flatten() {
                assert!(
                    tm.timers.map.contains_key(k),
                    "a transaction points at a missing timer"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn nothing_leaks(ops in prop::collection::vec(op(), 1..60)) {
            let mut tm = Tm::new(cfg());
            let mut out = Vec::new();
            let mut now = 0u64;
            let mut refs: HashMap<usize, TxRef> = HashMap::new();
            let mut sent_branch: HashMap<usize, SipMessage> = HashMap::new();
            let hop = (Transport::Udp, UAS.parse().unwrap());
            for o in ops {
                match o {
                    Op::Newtran(c) => {
                        if let Ok(t) = tm.newtran(&mut request(c, ""), now, &mut out) {
                            refs.insert(c, t);
                        }
                    }
                    Op::Suspend(c) => {
                        if let Ok(t) = tm.suspend(&mut request(c, ""), now, &mut out) {
                            refs.insert(c, t);
                        }
                    }
                    Op::Resume(c, right) => {
                        if let Some(t) = refs.get(&c) {
                            let label = if right { t.label } else { t.label ^ 0x5a5a };
                            if let Ok(mut r) = tm.resume(t.index, label) {
                                let _ = tm.reply(&mut r, 200, "OK", now, &mut out);
                            }
                        }
                    }
                    Op::Reply(c, code) => {
                        let _ = tm.reply(&mut request(c, ""), code, "R", now, &mut out);
                    }
                    Op::Relay(c, failure) => {
                        let mut r = request(c, "");
                        if failure {
                            r.set_failure_route("f");
                        }
                        let _ = tm.relay(&mut r, hop, None, now, &mut out);
                    }
                    Op::Answer(c, code) => {
                        if let Some(s) = sent_branch.get(&c) {
                            let a = answer(s, code);
                            tm.on_reply(&a, now, &mut out);
                        }
                    }
                    Op::Cancel(c) => {
                        let mut r = request(c, "CANCEL");
                        if c % 2 == 0 {
                            let _ = tm.on_request(&r, now, &mut out);
                        } else {
                            let _ = tm.newtran(&mut r, now, &mut out);
                        }
                    }
                    Op::Ack(c) => {
                        let _ = tm.on_request(&msg("ACK", &format!("z9hG4bKr{c}"), &format!("rc{c}"), 1, ";tag=x"), now, &mut out);
                        let _ = tm.on_request(&msg("ACK", "z9hG4bKnew", &format!("rc{c}"), 1, ";tag=x"), now, &mut out);
                    }
                    Op::Retransmit(c) => {
                        let _ = tm.on_request(&request(c, ""), now, &mut out);
                    }
                    Op::Advance(d) => {
                        now += d;
                        tm.on_timer(now, &mut out);
                    }
                }
                // Run failure routes as a router that does nothing, and
                // remember what each call last sent downstream.
                for a in std::mem::take(&mut out) {
                    match a {
                        Action::Failure { id, .. } => tm.failure_done(id, now, &mut out),
                        Action::Send { data, .. } => {
                            if let Ok(m) = SipMessage::parse(data) {
                                if m.is_request() && m.top_via().is_ok_and(|v| v.branch.is_some_and(|b| b.starts_with(b"z9hG4bKev"))) {
                                    let c = m.call_id().ok().and_then(|id| std::str::from_utf8(id).ok()).and_then(|s| s.trim_start_matches("rc").parse().ok());
                                    if let (Some(c), Some(&Method::Invite | &Method::Message)) = (c, m.method()) {
                                        sent_branch.insert(c, m);
                                    }
                                }
                            }
                        }
                    }
                }
                out.clear();
                check(&tm);
            }
            // Let every timer run out.
            for _ in 0..100 {
                now += 200_000;
                tm.on_timer(now, &mut out);
                for a in std::mem::take(&mut out) {
                    if let Action::Failure { id, .. } = a {
                        tm.failure_done(id, now, &mut out);
                    }
                }
                check(&tm);
            }
            prop_assert_eq!(tm.stats().live, 0);
            prop_assert_eq!(tm.stats().suspended, 0);
            prop_assert!(tm.timers.map.is_empty());
            prop_assert!(tm.by_key.is_empty());
            prop_assert!(tm.by_dialog.is_empty());
        }
    }
}

#[test]
fn wildcard_listener_advertises_the_routed_address() {
    let mut c = cfg();
    c.listeners = vec![(Transport::Udp, "0.0.0.0:5060".parse().unwrap())];
    let mut tm = Tm::new(c);
    let mut out = Vec::new();
    let hop = (Transport::Udp, UAS.parse().unwrap());
    let ip = "127.0.0.9".parse().unwrap();
    tm.relay(&mut invite(), hop, Some(ip), 0, &mut out).unwrap();
    let s = sent(&mut out);
    let fwd = &s.iter().find(|(_, m)| m.is_request()).unwrap().1;
    let via = fwd.top_via().unwrap();
    assert_eq!((via.host, via.port), (&b"127.0.0.9"[..], Some(5060)));
}

#[test]
fn reply_headers_and_body_go_into_routed_replies_only() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    r.append_to_reply("X-Why: because").unwrap();
    r.set_reply_body("text/plain", b"hello").unwrap();
    assert!(r.append_to_reply("no colon").is_err());
    tm.reply(&mut r, 180, "Ringing", 0, &mut out).unwrap();
    let s = sent(&mut out);
    let ringing = &s.last().unwrap().1;
    assert_eq!(ringing.header("X-Why"), Some(&b"because"[..]));
    assert_eq!(ringing.body(), b"hello");
    assert_eq!(ringing.content_length(), Some(5));
    // The table's own 408 carries none of it.
    tm.on_timer(120_000, &mut out);
    let s = sent(&mut out);
    assert_eq!(s[0].1.status(), Some(408));
    assert_eq!(s[0].1.header("X-Why"), None);
    assert_eq!(s[0].1.body(), b"");
}
