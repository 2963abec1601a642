//! Relayed transactions: the client side and how it feeds the server side.

use super::*;

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

/// Upstream's ACK for a forwarded non-2xx that comes with a branch of its
/// own is matched by Call-ID, CSeq and the To tag the downstream put in
/// that final (kept with the transaction when the final went up): another
/// tag is routed, the downstream's is absorbed.
#[test]
fn relayed_non_2xx_ack_with_a_new_branch_matches_the_downstream_tag() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    let fwd = relayed(&mut tm, &mut r, 0);
    tm.on_reply(&answer(&fwd, 486), 100, &mut out);
    assert_eq!(sent(&mut out)[1].1.status(), Some(486));
    let stranger = msg("ACK", "z9hG4bKack-a", "call-1", 1, ";tag=not-uas");
    assert_eq!(tm.on_request(&stranger, 200, &mut out), Incoming::Route);
    let ack = msg("ACK", "z9hG4bKack-b", "call-1", 1, ";tag=uas");
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

/// The host's table is in parts that share a seed and one count against
/// `max`: each part's indexes carry its number in their low bits (so
/// `t_continue`, `tm.reply` and a reply's branch find the part), and a
/// transaction created in one part counts against the limit in all.
#[test]
fn parts_share_the_limit_and_their_indexes_name_the_part() {
    let mut c = cfg();
    c.max = 3;
    let mut parts: Vec<Tm> = (0..PARTS).map(|p| Tm::part(c.clone(), p, 7)).collect();
    let mut out = Vec::new();
    let mut refs = Vec::new();
    for (p, call) in [(1, "a"), (6, "b"), (6, "c")] {
        let mut r = msg("INVITE", &format!("z9hG4bK{call}"), call, 1, "");
        let t = parts[p].suspend(&mut r, 0, &mut out).unwrap();
        assert_eq!(
            part_of_index(t.index),
            p,
            "index {:#x} in part {p}",
            t.index
        );
        assert!(u64::from(t.index) < BUCKETS);
        refs.push(t);
    }
    assert_eq!(
        parts[3].newtran(&mut msg("INVITE", "z9hG4bKd", "d", 1, ""), 0, &mut out),
        Err(TmError::TableFull { max: 3 }),
        "the limit counts the other parts' transactions"
    );
    // A relayed branch names its part: the reply is matched there.
    let mut r = parts[6].resume(refs[1].index, refs[1].label, 1).unwrap();
    let sent_inv = relayed(&mut parts[6], &mut r, 1);
    let reply = answer(&sent_inv, 180);
    assert_eq!(part_of_reply(&reply), Some(6));
    assert!(parts[6].match_reply(&reply).is_some());
    // The part forgets its transactions when they end: room again.
    out.clear();
    parts[1].shutdown(2, &mut out);
    // Its 503 goes unacknowledged: given up at Timer H (64*T1), then gone.
    for now in [40_000, 80_000] {
        parts[1].on_timer(now, &mut out);
    }
    assert_eq!(parts[1].stats().live, 0);
    parts[3]
        .newtran(
            &mut msg("OPTIONS", "z9hG4bKe", "e", 1, ""),
            80_000,
            &mut out,
        )
        .unwrap();
}
