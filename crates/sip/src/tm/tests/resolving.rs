//! Relays to a name: the table holds the relay while the host resolves,
//! and the result comes back by transaction and branch number.

use super::*;

fn uas() -> (Transport, SocketAddr) {
    (Transport::Udp, UAS.parse().unwrap())
}

/// The failure route asked for, if any; the other actions stay.
fn take_failure(out: &mut Vec<Action>) -> Option<(u64, Box<Request>, String)> {
    let mut found = None;
    for a in std::mem::take(out) {
        match a {
            Action::Failure { id, req, route } => found = Some((id, req, route)),
            other => out.push(other),
        }
    }
    found
}

#[test]
fn resolved_name_sends_the_branch_and_nothing_before() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    let (t, no) = tm.relay_resolving(&mut r, 0, &mut out).unwrap();
    assert_eq!(codes(&mut out), vec![100], "only the 100 while resolving");
    assert_eq!(tm.stats().resolving, 1);
    // Retransmissions meanwhile get the 100; a second relay is refused.
    tm.on_request(&invite(), 10, &mut out);
    assert_eq!(codes(&mut out), vec![100]);
    let mut again = r.clone();
    assert!(matches!(
        tm.relay(&mut again, uas(), None, 20, &mut out),
        Err(TmError::BranchPending { .. })
    ));
    assert!(matches!(
        tm.suspend(&mut again, 20, &mut out),
        Err(TmError::BranchPending { .. })
    ));
    // A result for another branch number changes nothing.
    tm.relay_resolved(t, no + 1, uas(), None, 30, &mut out);
    assert!(out.is_empty());
    tm.relay_resolved(t, no, uas(), None, 40, &mut out);
    let s = sent(&mut out);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, UAS.parse::<SocketAddr>().unwrap());
    assert_eq!(s[0].1.method(), Some(&Method::Invite));
    assert_eq!(s[0].1.max_forwards().unwrap(), Some(69));
    assert_eq!(tm.stats().resolving, 0);
    assert_eq!(tm.stats().relayed, 1);
    // A late duplicate result sends nothing more.
    tm.relay_resolved(t, no, uas(), None, 50, &mut out);
    assert!(out.is_empty());
    // The branch runs as any other: Timer A from the send.
    tm.on_timer(540, &mut out);
    assert_eq!(sent(&mut out).len(), 1);
}

#[test]
fn unresolved_name_gets_478() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = msg("MESSAGE", "z9hG4bKmsg1", "call-m", 1, "");
    let (t, no) = tm.relay_resolving(&mut r, 0, &mut out).unwrap();
    assert!(out.is_empty());
    tm.relay_unresolved(t, no, 3000, &mut out);
    let s = sent(&mut out);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, UAC.parse::<SocketAddr>().unwrap());
    assert_eq!(s[0].1.status(), Some(478));
    assert_eq!(s[0].1.reason(), Some(&b"Unresolvable Destination"[..]));
    let st = tm.stats();
    assert_eq!((st.resolving, st.unresolvable), (0, 1));
    // Retransmissions get the 478 again.
    tm.on_request(
        &msg("MESSAGE", "z9hG4bKmsg1", "call-m", 1, ""),
        3100,
        &mut out,
    );
    assert_eq!(codes(&mut out), vec![478]);
}

#[test]
fn unresolved_name_runs_the_failure_route_with_478() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    r.set_failure_route("next");
    let (t, no) = tm.relay_resolving(&mut r, 0, &mut out).unwrap();
    out.clear();
    tm.relay_unresolved(t, no, 3000, &mut out);
    let (id, mut req, route) = take_failure(&mut out).expect("failure route");
    assert!(sent(&mut out).is_empty(), "no reply before the route ran");
    assert_eq!(route, "next");
    assert_eq!(req.failure_code(), Some(478));
    // The route relays again, to another name: the transaction waits for
    // that one, and the end of the route does not reply meanwhile.
    let (t2, no2) = tm.relay_resolving(&mut req, 3001, &mut out).unwrap();
    assert_eq!((t2, no2 > no), (t, true));
    tm.failure_done(id, 3002, &mut out);
    assert!(out.is_empty(), "the second relay is under way");
    // No route armed this time: the second 478 goes upstream.
    tm.relay_unresolved(t2, no2, 6000, &mut out);
    assert_eq!(codes(&mut out), vec![478]);
}

#[test]
fn failure_route_doing_nothing_forwards_478() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    r.set_failure_route("f");
    let (t, no) = tm.relay_resolving(&mut r, 0, &mut out).unwrap();
    out.clear();
    tm.relay_unresolved(t, no, 3000, &mut out);
    let (id, _, _) = take_failure(&mut out).unwrap();
    tm.failure_done(id, 3001, &mut out);
    assert_eq!(codes(&mut out), vec![478]);
}

#[test]
fn cancel_while_resolving_gets_487_and_the_branch_is_never_sent() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    let (t, no) = tm.relay_resolving(&mut r, 0, &mut out).unwrap();
    out.clear();
    tm.on_request(&msg("CANCEL", "z9hG4bKinv1", "call-1", 1, ""), 10, &mut out);
    let mut c = codes(&mut out);
    c.sort();
    assert_eq!(c, vec![200, 487]);
    tm.relay_resolved(t, no, uas(), None, 20, &mut out);
    assert!(out.is_empty(), "nothing relayed after the CANCEL");
    assert_eq!(tm.stats().resolving, 0);
    tm.relay_unresolved(t, no, 30, &mut out);
    assert!(out.is_empty());
}

#[test]
fn fr_timer_while_resolving_gets_408_and_a_late_result_is_ignored() {
    let mut tm = Tm::new(TableConfig { fr: 1000, ..cfg() });
    let mut out = Vec::new();
    let mut r = msg("OPTIONS", "z9hG4bKopt1", "call-o", 1, "");
    let (t, no) = tm.relay_resolving(&mut r, 0, &mut out).unwrap();
    tm.on_timer(1000, &mut out);
    assert_eq!(codes(&mut out), vec![408]);
    tm.relay_resolved(t, no, uas(), None, 1500, &mut out);
    assert!(out.is_empty());
    // Gone after wait_timer, counters consistent.
    tm.on_timer(7000, &mut out);
    let st = tm.stats();
    assert_eq!((st.live, st.resolving), (0, 0));
}

#[test]
fn transaction_removed_while_resolving_keeps_the_count_right() {
    let mut tm = Tm::new(TableConfig {
        fr: 1000,
        wait: 0,
        ..cfg()
    });
    let mut out = Vec::new();
    let mut r = msg("OPTIONS", "z9hG4bKopt2", "call-o2", 1, "");
    let (t, no) = tm.relay_resolving(&mut r, 0, &mut out).unwrap();
    tm.on_timer(1000, &mut out);
    tm.on_timer(1001, &mut out);
    assert_eq!((tm.stats().live, tm.stats().resolving), (0, 0));
    out.clear();
    tm.relay_unresolved(t, no, 3000, &mut out);
    assert!(out.is_empty());
}

#[test]
fn max_forwards_zero_to_a_name_gets_483_at_once() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let text = "MESSAGE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKmf0\r\nMax-Forwards: 0\r\nFrom: <sip:a@a>;tag=1\r\nTo: <sip:b@b>\r\nCall-ID: mf0\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
    let mut r = Request::new(
        SipMessage::parse(Bytes::from(text)).unwrap(),
        Source {
            transport: Transport::Udp,
            remote: UAC.parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        },
    );
    assert!(matches!(
        tm.relay_resolving(&mut r, 0, &mut out),
        Err(TmError::TooManyHops)
    ));
    assert_eq!(codes(&mut out), vec![483]);
    assert_eq!(tm.stats().resolving, 0);
}
