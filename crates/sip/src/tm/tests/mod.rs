//! The transaction table driven by hand: a clock moved by the test, the
//! sends read back from the action list.

use super::*;
use crate::message::SipMessage;
use crate::request::Source;

const UAC: &str = "127.0.0.1:5070";
const UAS: &str = "127.0.0.1:5080";

fn cfg() -> TableConfig {
    TableConfig {
        live: Default::default(),
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
        myself: crate::myself::Myself::new(
            vec![
                (Transport::Udp, "127.0.0.1:5060".parse().unwrap()),
                (Transport::Tcp, "127.0.0.1:5060".parse().unwrap()),
            ],
            &[],
        ),
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
            Action::Failure { .. } | Action::DialogFinal { .. } => None,
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
    let e = tm.resume(t.index, t.label + 1, 400).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("no suspended transaction {}:{}", t.index, t.label + 1)
    );
    assert_eq!(tm.stats().suspended, 1);
    let mut back = tm.resume(t.index, t.label, 500).unwrap();
    assert_eq!(back.tx(), Some(t));
    assert_eq!(back.header("X-Kept"), Some(&b"yes"[..]));
    assert_eq!(tm.stats().suspended, 0);
    assert!(matches!(
        tm.resume(t.index, t.label, 600),
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
        tm.resume(t.index, t.label, 600),
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

/// A request that already had a To tag (a re-INVITE) keeps it in our
/// final; an ACK with a new branch is matched against that tag.
#[test]
fn ack_with_a_new_branch_matches_the_request_s_own_to_tag() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = msg("INVITE", "z9hG4bKre1", "call-9", 2, ";tag=dialog-tag");
    tm.reply(&mut r, 488, "Not Here", 0, &mut out).unwrap();
    let replies = sent(&mut out);
    let final_reply = &replies.last().unwrap().1;
    assert_eq!(final_reply.to().unwrap().tag, Some(&b"dialog-tag"[..]));
    let ack = msg("ACK", "z9hG4bKre-ack", "call-9", 2, ";tag=dialog-tag");
    assert_eq!(tm.on_request(&ack, 100, &mut out), Incoming::Absorbed);
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
        tm.resume(t.index, t.label, 600),
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
    let mut back = tm.resume(t.index, t.label, 0).unwrap();
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

mod proxy;
mod random;
mod relay;
mod resolving;
mod stats;

/// A refused reply is refused before the transaction exists: no
/// transaction, no 100 Trying, nothing in the output.
#[test]
fn refused_t_reply_creates_and_sends_nothing() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    for (code, reason) in [
        (99, "Low"),
        (700, "High"),
        (65_736, "Wraps"),
        (42, "Answer"),
        (200, "OK\r\nX-Injected: yes"),
        (200, "OK\n"),
        (200, "O\0K"),
    ] {
        let mut r = invite();
        assert!(tm.reply(&mut r, code, reason, 0, &mut out).is_err());
        assert!(out.is_empty(), "{code} {reason:?}");
        assert_eq!(r.tx(), None);
        assert_eq!(tm.stats().live, 0);
    }
    let mut ack = msg("ACK", "z9hG4bKinv1", "call-1", 1, "");
    assert_eq!(
        tm.reply(&mut ack, 200, "OK", 0, &mut out),
        Err(TmError::ReplyToAck)
    );
    assert!(out.is_empty());
    // A header line that could not be appended never reaches a reply; the
    // valid reply goes out.
    let mut r = invite();
    assert!(r.append_to_reply("X-A: 1\r\nX-Injected: yes").is_err());
    tm.reply(&mut r, 486, "Busy Here", 0, &mut out).unwrap();
    let s = sent(&mut out);
    assert_eq!(
        s.iter()
            .map(|(_, m)| m.status().unwrap())
            .collect::<Vec<_>>(),
        vec![100, 486]
    );
    assert!(s.iter().all(|(_, m)| m.header("X-Injected").is_none()));
}
