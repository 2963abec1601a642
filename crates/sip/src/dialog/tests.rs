//! The dialog table with a hand-moved clock and a sink that records what
//! would be sent and delivered: no sockets.

use super::*;
use crate::request::Source;
use crate::request::TxRef;
use std::sync::Arc;

const T1: u64 = 500;

#[derive(Default)]
struct Rec {
    sent: Mutex<Vec<(SocketAddr, String)>>,
    events: Mutex<Vec<DialogEvent>>,
}

struct RecSink(Arc<Rec>);

impl Sink for RecSink {
    fn send(&self, dest: Dest, data: Bytes) {
        let text = String::from_utf8_lossy(&data).into_owned();
        self.0.sent.lock().unwrap().push((dest.addr, text));
    }
    fn event(&self, event: DialogEvent) {
        self.0.events.lock().unwrap().push(event);
    }
    fn wake(&self) {}
}

fn table(cfg: DialogConfig) -> (Dialogs, Arc<Rec>) {
    let rec = Arc::new(Rec::default());
    let env = Env {
        cfg,
        t1: T1,
        t2: 4000,
        seed: 0x1234_5678,
        listeners: vec![(Transport::Udp, "127.0.0.1:5060".parse().unwrap())],
        via_ip: |_| None,
    };
    (
        Dialogs::with_manual_clock(env, Box::new(RecSink(rec.clone()))),
        rec,
    )
}

fn parse(text: &str) -> SipMessage {
    SipMessage::parse(Bytes::from(text.replace('\n', "\r\n"))).unwrap()
}

fn request(text: &str) -> Request {
    Request::new(
        parse(text),
        Source {
            transport: Transport::Udp,
            remote: "127.0.0.1:5070".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        },
    )
}

fn invite(cid: &str) -> Request {
    request(&format!(
        "INVITE sip:bob@127.0.0.1:5080 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{cid}
From: <sip:alice@a.example>;tag=fa
To: <sip:bob@b.example>
Call-ID: {cid}
CSeq: 1 INVITE
Contact: <sip:alice@127.0.0.1:5070>
Content-Length: 0

"
    ))
}

/// An in-dialog request; `from_callee`: sent by the callee.
fn in_dialog(method: &str, cid: &str, cseq: u32, from_callee: bool) -> Request {
    let (f, t) = if from_callee {
        ("<sip:bob@b.example>;tag=tb", "<sip:alice@a.example>;tag=fa")
    } else {
        ("<sip:alice@a.example>;tag=fa", "<sip:bob@b.example>;tag=tb")
    };
    request(&format!(
        "{method} sip:x@127.0.0.1 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{method}{cseq}
From: {f}
To: {t}
Call-ID: {cid}
CSeq: {cseq} {method}
Contact: <sip:moved@127.0.0.1:5090>
Content-Length: 0

"
    ))
}

fn ok(cid: &str, code: u16) -> Bytes {
    Bytes::from(
        format!(
            "SIP/2.0 {code} X
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{cid}
From: <sip:alice@a.example>;tag=fa
To: <sip:bob@b.example>;tag=tb
Call-ID: {cid}
CSeq: 1 INVITE
Contact: <sip:bob@127.0.0.1:5080>
Content-Length: 0

"
        )
        .replace('\n', "\r\n"),
    )
}

/// A reply to the BYE in `sent` (as the phone would send it).
fn reply_to(bye: &str, code: u16) -> SipMessage {
    let via = bye
        .lines()
        .find(|l| l.starts_with("Via:"))
        .unwrap()
        .to_owned();
    let cid = bye
        .lines()
        .find(|l| l.starts_with("Call-ID:"))
        .unwrap()
        .to_owned();
    parse(&format!(
        "SIP/2.0 {code} OK\n{via}\nFrom: <sip:a@a>;tag=x\nTo: <sip:b@b>;tag=y\n{cid}\nCSeq: 2 BYE\nContent-Length: 0\n\n"
    ))
}

fn names(rec: &Rec) -> Vec<&'static str> {
    rec.events.lock().unwrap().iter().map(|e| e.name).collect()
}

/// Tracked and answered: (table, recorder, dialog).
fn answered(cfg: DialogConfig) -> (Dialogs, Arc<Rec>, DlgId) {
    let (t, rec) = table(cfg);
    let mut inv = invite("c1");
    let id = t.manage(&mut inv).unwrap();
    assert_eq!(t.manage(&mut inv).unwrap(), id, "twice is harmless");
    t.on_final(id, 200, &ok("c1", 200));
    (t, rec, id)
}

#[test]
fn an_answered_call_starts_and_ends_once_with_the_bye() {
    let (t, rec, id) = answered(DialogConfig::default());
    let info = t.info(id).unwrap();
    assert_eq!(info.state, DlgState::ConfirmedNa);
    assert_eq!(
        (info.from_uri.as_str(), info.to_uri.as_str()),
        ("sip:alice@a.example", "sip:bob@b.example")
    );
    assert_eq!((info.from_tag.as_str(), info.to_tag.as_str()), ("fa", "tb"));
    assert_eq!(names(&rec), ["dialog:start"]);
    // A retransmitted 2xx changes nothing.
    t.on_final(id, 200, &ok("c1", 200));
    let mut ack = in_dialog("ACK", "c1", 1, false);
    assert_eq!(t.sequential(&mut ack), Some(id));
    assert_eq!(t.info(id).unwrap().state, DlgState::Confirmed);
    let mut bye = in_dialog("BYE", "c1", 2, true);
    assert_eq!(t.sequential(&mut bye), Some(id));
    assert_eq!(names(&rec), ["dialog:start", "dialog:end"]);
    let end = rec.events.lock().unwrap()[1].clone();
    assert_eq!(end.info.end_reason, Some(EndReason::Bye(Side::Callee)));
    assert!(t.is_empty() && t.info(id).is_none());
    // Its retransmission is of no dialog any more: no second end.
    let mut again = in_dialog("BYE", "c1", 2, true);
    assert_eq!(t.sequential(&mut again), None);
    assert_eq!(names(&rec).len(), 2);
    assert!(
        rec.sent.lock().unwrap().is_empty(),
        "a BYE seen is not sent"
    );
}

#[test]
fn a_refused_or_cancelled_call_fails_once() {
    let (t, rec) = table(DialogConfig::default());
    for (cid, code) in [("c1", 486u16), ("c2", 487), ("c3", 408)] {
        let mut inv = invite(cid);
        let id = t.manage(&mut inv).unwrap();
        t.on_final(id, code, &ok(cid, code));
        t.on_final(id, code, &ok(cid, code));
    }
    assert_eq!(names(&rec), ["dialog:failed"; 3]);
    assert!(t.is_empty());
}

#[test]
fn a_dialog_answered_statelessly_leaves_without_an_event() {
    let (t, rec) = table(DialogConfig::default());
    let mut inv = invite("c1");
    t.manage(&mut inv).unwrap();
    assert_eq!(t.len(), 1);
    t.discard(&inv);
    assert!(t.is_empty() && names(&rec).is_empty());
    // With a transaction it stays (its final reply decides).
    let mut inv = invite("c2");
    t.manage(&mut inv).unwrap();
    inv.tx = Some(TxRef { index: 1, label: 1 });
    t.discard(&inv);
    assert_eq!(t.len(), 1);
}

#[test]
fn our_byes_speak_for_the_other_side_with_its_next_cseq() {
    let (t, rec, id) = answered(DialogConfig::default());
    // The caller re-INVITEs with CSeq 5 and a new Contact.
    let mut re = in_dialog("INVITE", "c1", 5, false);
    assert_eq!(t.sequential(&mut re), Some(id));
    assert_eq!(
        t.info(id).unwrap().caller_contact,
        "sip:moved@127.0.0.1:5090"
    );
    t.bye(id, &[Side::Caller, Side::Callee]).unwrap();
    assert_eq!(names(&rec), ["dialog:start", "dialog:end"]);
    assert_eq!(
        rec.events.lock().unwrap()[1].info.end_reason,
        Some(EndReason::Command)
    );
    let sent = rec.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    let (to_caller, to_callee) = (&sent[0], &sent[1]);
    assert_eq!(to_caller.0, "127.0.0.1:5090".parse().unwrap());
    assert!(to_caller
        .1
        .starts_with("BYE sip:moved@127.0.0.1:5090 SIP/2.0\r\n"));
    assert!(to_caller.1.contains("From: <sip:bob@b.example>;tag=tb\r\n"));
    assert!(to_caller.1.contains("To: <sip:alice@a.example>;tag=fa\r\n"));
    assert!(to_caller.1.contains("CSeq: 1 BYE\r\n"), "{}", to_caller.1);
    assert_eq!(to_callee.0, "127.0.0.1:5080".parse().unwrap());
    assert!(to_callee
        .1
        .starts_with("BYE sip:bob@127.0.0.1:5080 SIP/2.0\r\n"));
    assert!(to_callee
        .1
        .contains("From: <sip:alice@a.example>;tag=fa\r\n"));
    assert!(to_callee.1.contains("To: <sip:bob@b.example>;tag=tb\r\n"));
    assert!(to_callee.1.contains("CSeq: 6 BYE\r\n"), "{}", to_callee.1);
    assert!(to_callee.1.contains("Call-ID: c1\r\n"));
    // Each parses, with our Via on top.
    for (_, m) in &sent {
        let m = SipMessage::parse(Bytes::from(m.clone())).unwrap();
        assert!(m
            .top_via()
            .unwrap()
            .branch
            .unwrap()
            .starts_with(b"z9hG4bKdlg"));
    }
    // Ending it again: it is not answered any more.
    assert!(matches!(
        t.bye(id, &[Side::Caller]),
        Err(DialogError::NotAnswered(..))
    ));
    // A BYE crossing ours ends nothing twice.
    let mut cross = in_dialog("BYE", "c1", 2, true);
    t.sequential(&mut cross);
    assert_eq!(names(&rec).len(), 2);
    assert_eq!(t.info(id).unwrap().state, DlgState::Deleted);
    // The answers take it out of the table.
    assert!(t.on_reply(&reply_to(&to_caller.1, 200)));
    assert_eq!(t.len(), 1);
    assert!(t.on_reply(&reply_to(&to_callee.1, 481)));
    assert!(t.is_empty());
    // A late retransmitted 200 is still ours (absorbed), and changes
    // nothing.
    assert!(t.on_reply(&reply_to(&to_callee.1, 200)));
    assert_eq!(names(&rec).len(), 2);
}

#[test]
fn the_timeout_byes_both_sides_and_a_silent_side_still_ends_it() {
    let (t, rec, id) = answered(DialogConfig::default());
    t.set_timeout(id, 10).unwrap();
    t.advance(9_999);
    t.on_timer();
    assert!(rec.sent.lock().unwrap().is_empty());
    t.advance(1);
    t.on_timer();
    assert_eq!(names(&rec), ["dialog:start", "dialog:end"]);
    assert_eq!(
        rec.events.lock().unwrap()[1].info.end_reason,
        Some(EndReason::Timeout)
    );
    assert_eq!(rec.sent.lock().unwrap().len(), 2);
    // The caller answers; the callee never does: retransmitted at T1,
    // 2*T1, ... until 64*T1.
    let first = rec.sent.lock().unwrap()[0].1.clone();
    t.on_reply(&reply_to(&first, 200));
    t.advance(T1);
    t.on_timer();
    assert_eq!(rec.sent.lock().unwrap().len(), 3);
    assert!(rec.sent.lock().unwrap()[2].1.contains("CSeq: 2 BYE"));
    let mut elapsed = T1;
    while !t.is_empty() && elapsed <= 64 * T1 {
        t.advance(T1);
        elapsed += T1;
        t.on_timer();
    }
    assert!(t.is_empty(), "left the table at Timer F");
    assert_eq!(elapsed, 64 * T1);
    assert_eq!(names(&rec), ["dialog:start", "dialog:end"], "reported once");
    let retrans = rec.sent.lock().unwrap().len() - 2;
    assert!((5..=12).contains(&retrans), "{retrans} retransmissions");
}

#[test]
fn without_timeout_bye_the_timeout_only_forgets() {
    let (t, rec, id) = answered(DialogConfig {
        timeout_bye: false,
        default_timeout: 5,
        ..Default::default()
    });
    assert_eq!(t.info(id).unwrap().timeout, 5);
    t.advance(5_000);
    t.on_timer();
    assert_eq!(names(&rec), ["dialog:start", "dialog:end"]);
    assert!(t.is_empty() && rec.sent.lock().unwrap().is_empty());
}

#[test]
fn a_timeout_set_before_the_answer_counts_from_it() {
    let (t, rec) = table(DialogConfig::default());
    let mut inv = invite("c1");
    let id = t.manage(&mut inv).unwrap();
    t.set_timeout(id, 3).unwrap();
    t.advance(60_000);
    t.on_final(id, 200, &ok("c1", 200));
    t.advance(2_999);
    t.on_timer();
    assert_eq!(names(&rec), ["dialog:start"]);
    t.advance(1);
    t.on_timer();
    assert_eq!(names(&rec), ["dialog:start", "dialog:end"]);
    assert!(t.set_timeout(id, 0).is_err(), "0 s refused");
}

#[test]
fn matching_by_did_and_by_tags_and_not_by_strangers() {
    let (t, _, id) = answered(DialogConfig::default());
    let did = table::did_param(id);
    // A second INVITE with the same Call-ID (a new dialog, unanswered):
    // nothing in-dialog matches it.
    let other = t.manage(&mut invite("c1")).unwrap();
    assert_ne!(other, id);
    let mut ack = in_dialog("ACK", "c1", 1, false);
    ack.rr.routed_params = Some(format!(";lr;ftag=fa{did}"));
    assert_eq!(t.sequential(&mut ack), Some(id));
    assert!(t.is_known(&ack));
    // Another Call-ID, other tags: not this dialog, whatever the did.
    let mut stranger = in_dialog("BYE", "other", 2, false);
    stranger.rr.routed_params = Some(did.clone());
    assert_eq!(t.sequential(&mut stranger), None);
    assert!(!t.is_known(&stranger));
    let mut wrong_tag = request(
        "BYE sip:x@127.0.0.1 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-w
From: <sip:alice@a.example>;tag=fa
To: <sip:bob@b.example>;tag=zz
Call-ID: c1
CSeq: 9 BYE
Content-Length: 0

",
    );
    assert_eq!(t.sequential(&mut wrong_tag), None);
    assert_eq!(t.info(id).unwrap().state, DlgState::Confirmed);
}

#[test]
fn profiles_count_live_dialogs_and_vars_stay_with_the_dialog() {
    let (t, rec) = table(DialogConfig::default());
    let mut ids = Vec::new();
    for cid in ["a", "b", "c"] {
        let mut inv = invite(cid);
        let id = t.manage(&mut inv).unwrap();
        t.set_profile(id, "caller", if cid == "c" { "bob" } else { "alice" })
            .unwrap();
        t.set_profile(id, "caller", if cid == "c" { "bob" } else { "alice" })
            .unwrap();
        ids.push(id);
    }
    assert_eq!(t.profile_size("caller", Some("alice")), 2);
    assert_eq!(t.profile_size("caller", None), 3);
    t.set_var(ids[0], "account", Some("1001")).unwrap();
    assert_eq!(t.var(ids[0], "account").as_deref(), Some("1001"));
    t.on_final(ids[0], 200, &ok("a", 200));
    let start = rec.events.lock().unwrap()[0].clone();
    assert_eq!(start.info.var("account"), Some("1001"), "in the event");
    t.on_final(ids[1], 603, &ok("b", 603));
    assert_eq!(t.profile_size("caller", Some("alice")), 1);
    t.bye(ids[0], &[Side::Caller]).unwrap();
    let bye = rec.sent.lock().unwrap()[0].1.clone();
    t.on_reply(&reply_to(&bye, 200));
    assert_eq!(t.profile_size("caller", Some("alice")), 0);
    assert_eq!(t.profile_size("caller", None), 1);
    assert!(t
        .set_var(ids[2], "x", Some(&"v".repeat(MAX_VAR_LEN + 1)))
        .is_err());
    assert_eq!(t.states(), [1, 0, 0, 0, 0]);
}

#[test]
fn the_table_is_bounded() {
    let (t, _) = table(DialogConfig {
        max_dialogs: 2,
        ..Default::default()
    });
    t.manage(&mut invite("a")).unwrap();
    t.manage(&mut invite("b")).unwrap();
    assert_eq!(t.manage(&mut invite("c")), Err(DialogError::Full(2)));
    // Not an initial INVITE.
    let mut bye = in_dialog("BYE", "zz", 2, false);
    assert_eq!(t.manage(&mut bye), Err(DialogError::Unknown));
}
