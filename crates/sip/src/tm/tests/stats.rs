//! The counters: each one moves where its event happens, and only there.

use super::*;

#[test]
fn suspend_resume_counts_and_times_the_wait() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let t = tm.suspend(&mut invite(), 1_000, &mut out).unwrap();
    let s = tm.stats();
    assert_eq!((s.suspended, s.suspended_total, s.resumed), (1, 1, 0));
    assert_eq!(s.replies_local[0], 1, "the INVITE's 100");
    let mut back = tm.resume(t.index, t.label, 1_030).unwrap();
    let s = tm.stats();
    assert_eq!((s.suspended, s.suspended_total, s.resumed), (0, 1, 1));
    assert_eq!(s.suspend_wait.count, 1);
    assert_eq!(s.suspend_wait.sum_ms, 30);
    // 30 ms: above the 25 ms bound, at most 50 ms.
    assert_eq!(s.suspend_wait.buckets[5], 1, "{:?}", s.suspend_wait);
    tm.reply(&mut back, 180, "Ringing", 1_031, &mut out)
        .unwrap();
    tm.reply(&mut back, 200, "OK", 1_032, &mut out).unwrap();
    let s = tm.stats();
    assert_eq!(s.replies_local, [2, 1, 0, 0, 0, 0]);
    assert_eq!(s.finals, [0, 1, 0, 0, 0, 0]);
    assert_eq!((s.live, s.waiting, s.local_replies), (1, 1, 1));
    assert_eq!(s.suspend_timeouts, 0);
    // Retransmitted finals are not counted again.
    tm.on_timer(1_532, &mut out);
    assert!(!out.is_empty());
    assert_eq!(tm.stats().replies_local, [2, 1, 0, 0, 0, 0]);
}

#[test]
fn a_suspension_that_times_out_is_counted_as_such() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    tm.suspend(&mut invite(), 0, &mut out).unwrap();
    tm.on_timer(120_000, &mut out);
    let s = tm.stats();
    assert_eq!((s.suspend_timeouts, s.timeouts, s.resumed), (1, 1, 0));
    assert_eq!(s.finals[3], 1, "408");
    assert_eq!(s.suspend_wait.count, 0);
    // A relayed branch that times out is a timeout, not a suspension's.
    let mut r = msg("INVITE", "z9hG4bKinv2", "call-2", 1, "");
    relayed(&mut tm, &mut r, 0);
    tm.on_timer(400_000, &mut out);
    let s = tm.stats();
    assert_eq!((s.suspend_timeouts, s.timeouts), (1, 2));
}

#[test]
fn relayed_replies_by_class_and_waiting_until_freed() {
    let mut tm = Tm::new(cfg());
    let mut out = Vec::new();
    let mut r = invite();
    let fwd = relayed(&mut tm, &mut r, 0);
    tm.on_reply(&answer(&fwd, 100), 10, &mut out);
    tm.on_reply(&answer(&fwd, 180), 11, &mut out);
    tm.on_reply(&answer(&fwd, 486), 12, &mut out);
    let s = tm.stats();
    assert_eq!(s.branch_replies, 3);
    // The 100 stops here (hop by hop); 180 and 486 go upstream.
    assert_eq!(s.replies_relayed, [1, 0, 0, 1, 0, 0]);
    assert_eq!(s.replies_local, [1, 0, 0, 0, 0, 0], "our own 100");
    assert_eq!(s.finals, [0, 0, 0, 1, 0, 0]);
    assert_eq!((s.live, s.waiting, s.freed), (1, 1, 0));
    // Timer H ends it (no ACK came).
    tm.on_timer(1_000_000, &mut out);
    let s = tm.stats();
    assert_eq!((s.live, s.waiting, s.freed, s.created), (0, 0, 1, 1));
}
