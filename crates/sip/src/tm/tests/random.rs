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
                        if let Ok(mut r) = tm.resume(t.index, label, now) {
                            let _ = tm.reply(&mut r, 200, "OK", now, &mut out);
                        }
                    }
                }
                Op::Reply(c, code) => {
                    let _ = tm.reply(&mut request(c, ""), code.into(), "R", now, &mut out);
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
                    Action::DialogFinal { .. } => {}
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
        prop_assert_eq!(tm.stats().waiting, 0);
        prop_assert!(tm.timers.map.is_empty());
        prop_assert!(tm.by_key.is_empty());
        prop_assert!(tm.by_dialog.is_empty());
    }
}
