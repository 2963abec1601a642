//! The table's counters, and the host's (requests received by method,
//! replies by code class) that [`crate::SipHandle::stats`] adds to them.
//!
//! The table's counters are plain integers: every change to the table
//! happens under its lock, so counting there costs an add. The host's
//! counters are relaxed atomics bumped on the socket threads
//! ([`HostCounters`]): no lock, no allocation. Both are read only when
//! someone asks (the metrics scrape, the stats RPC).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::message::Method;

/// The methods counted one by one in [`TmStats::requests`], in slot order;
/// the last slot counts every other method.
pub const COUNTED_METHODS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
    "INFO",
    "REFER",
    "MESSAGE",
    "UPDATE",
    "other",
];

/// The slot of `method` in [`COUNTED_METHODS`].
pub fn method_slot(method: &Method) -> usize {
    match method {
        Method::Invite => 0,
        Method::Ack => 1,
        Method::Bye => 2,
        Method::Cancel => 3,
        Method::Options => 4,
        Method::Register => 5,
        Method::Prack => 6,
        Method::Subscribe => 7,
        Method::Notify => 8,
        Method::Publish => 9,
        Method::Info => 10,
        Method::Refer => 11,
        Method::Message => 12,
        Method::Update => 13,
        Method::Other(_) => 14,
    }
}

/// The reply code classes, in slot order (`1xx` is slot 0).
pub const REPLY_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

/// The slot of a status code in [`REPLY_CLASSES`] (codes are 100..=699
/// once parsed or checked; anything else is clamped into range).
pub fn class_slot(code: u16) -> usize {
    (usize::from(code / 100)).clamp(1, 6) - 1
}

/// Upper bounds (milliseconds) of the buckets of
/// [`TmStats::suspend_wait`], from 1 ms to 60 s; one more bucket, past
/// the last bound, takes everything longer.
pub const SUSPEND_WAIT_BOUNDS_MS: [u64; 15] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
];

/// How long suspended transactions waited for their continue: a
/// histogram with fixed buckets ([`SUSPEND_WAIT_BOUNDS_MS`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WaitHistogram {
    /// Observations per bucket (not cumulative): `buckets[i]` counts waits
    /// above bound `i - 1` and at most bound `i`; the last one counts
    /// waits above 60 s.
    pub buckets: [u64; 16],
    /// Sum of the observed waits, in milliseconds.
    pub sum_ms: u64,
    /// Number of observations.
    pub count: u64,
}

impl WaitHistogram {
    /// Record a wait of `ms` milliseconds.
    pub fn observe(&mut self, ms: u64) {
        let slot = SUSPEND_WAIT_BOUNDS_MS.partition_point(|&b| b < ms);
        self.buckets[slot] += 1;
        self.sum_ms += ms;
        self.count += 1;
    }
}

/// Counters of the transaction table, and of the host around it.
///
/// Replies are counted when first sent upstream, not their
/// retransmissions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TmStats {
    /// Transactions in the table now (including finished ones lingering to
    /// absorb retransmissions).
    pub live: usize,
    /// Of those, finished ones lingering now (Kamailio's "waiting").
    pub waiting: usize,
    /// Suspended transactions now.
    pub suspended: usize,
    /// Relays waiting for their destination's name to resolve now.
    pub resolving: usize,
    /// Transactions created since start.
    pub created: u64,
    /// Transactions removed from the table since start.
    pub freed: u64,
    /// Final replies generated locally (t_reply, 408, 487, 503...).
    pub local_replies: u64,
    /// Branches relayed.
    pub relayed: u64,
    /// Transactions suspended since start.
    pub suspended_total: u64,
    /// Transactions continued.
    pub resumed: u64,
    /// Suspended transactions that reached their final-reply timeout
    /// (fr_timer / fr_inv_timer) before a continue: answered 408.
    pub suspend_timeouts: u64,
    /// How long continued transactions had been suspended.
    pub suspend_wait: WaitHistogram,
    /// Final-reply timeouts (408), server side and branches.
    pub timeouts: u64,
    /// Relays whose destination did not resolve in time (478).
    pub unresolvable: u64,
    /// INVITEs cancelled.
    pub canceled: u64,
    /// Retransmitted requests, and ACKs of non-2xx finals, absorbed.
    pub absorbed: u64,
    /// Replies matching no transaction forwarded by their Via (a 2xx
    /// retransmitted after the INVITE transaction ended, above all).
    pub stateless_replies: u64,
    /// Replies from downstream that matched one of our branches (and that
    /// the router's reply routes let through).
    pub branch_replies: u64,
    /// Transactions by the class of the final reply sent upstream
    /// ([`REPLY_CLASSES`] slots; the 1xx slot stays 0).
    pub finals: [u64; 6],
    /// Replies the table generated and sent upstream, by class: the 100
    /// of an INVITE, t_reply, and local finals (408, 487, 503...).
    pub replies_local: [u64; 6],
    /// Replies from downstream forwarded upstream, by class: on their
    /// transaction, or statelessly by their Via.
    pub replies_relayed: [u64; 6],
    /// Host: requests received and parsed, by [`COUNTED_METHODS`] slot,
    /// retransmissions included.
    pub requests: [u64; 15],
    /// Host: replies received and parsed, by class.
    pub replies_received: [u64; 6],
    /// Host: stateless replies sent (sl_send_reply, and 400 to malformed
    /// requests), by class.
    pub replies_stateless: [u64; 6],
}

impl TmStats {
    /// Add the counters of another part of the table. Every field is
    /// named, so a counter added later cannot be forgotten here.
    pub(crate) fn add(&mut self, o: &TmStats) {
        let TmStats {
            live,
            waiting,
            suspended,
            resolving,
            created,
            freed,
            local_replies,
            relayed,
            suspended_total,
            resumed,
            suspend_timeouts,
            suspend_wait,
            timeouts,
            unresolvable,
            canceled,
            absorbed,
            stateless_replies,
            branch_replies,
            finals,
            replies_local,
            replies_relayed,
            requests,
            replies_received,
            replies_stateless,
        } = o;
        self.live += live;
        self.waiting += waiting;
        self.suspended += suspended;
        self.resolving += resolving;
        self.created += created;
        self.freed += freed;
        self.local_replies += local_replies;
        self.relayed += relayed;
        self.suspended_total += suspended_total;
        self.resumed += resumed;
        self.suspend_timeouts += suspend_timeouts;
        for (a, b) in self
            .suspend_wait
            .buckets
            .iter_mut()
            .zip(suspend_wait.buckets)
        {
            *a += b;
        }
        self.suspend_wait.sum_ms += suspend_wait.sum_ms;
        self.suspend_wait.count += suspend_wait.count;
        self.timeouts += timeouts;
        self.unresolvable += unresolvable;
        self.canceled += canceled;
        self.absorbed += absorbed;
        self.stateless_replies += stateless_replies;
        self.branch_replies += branch_replies;
        let sum = |a: &mut [u64], b: &[u64]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        sum(&mut self.finals, finals);
        sum(&mut self.replies_local, replies_local);
        sum(&mut self.replies_relayed, replies_relayed);
        sum(&mut self.requests, requests);
        sum(&mut self.replies_received, replies_received);
        sum(&mut self.replies_stateless, replies_stateless);
    }

    /// A reply the table generated went upstream.
    pub(crate) fn local_reply(&mut self, code: u16) {
        self.replies_local[class_slot(code)] += 1;
    }

    /// A reply from downstream went upstream.
    pub(crate) fn relayed_reply(&mut self, code: u16) {
        self.replies_relayed[class_slot(code)] += 1;
    }

    /// All replies sent upstream by class: stateless, generated by the
    /// table, and relayed.
    pub fn replies_sent(&self) -> [u64; 6] {
        std::array::from_fn(|i| {
            self.replies_stateless[i] + self.replies_local[i] + self.replies_relayed[i]
        })
    }
}

/// The host's own counters: bumped on the socket threads without a lock.
/// Aligned to their own cache lines: they sit in the host's shared state
/// beside the table's lock, which the router threads take all the time,
/// and a counter bump must not pull that line away from them.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct HostCounters {
    requests: [AtomicU64; 15],
    replies_received: [AtomicU64; 6],
    replies_stateless: [AtomicU64; 6],
}

impl HostCounters {
    pub(crate) fn request(&self, method: &Method) {
        self.requests[method_slot(method)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reply_received(&self, code: u16) {
        self.replies_received[class_slot(code)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stateless_reply(&self, code: u16) {
        self.replies_stateless[class_slot(code)].fetch_add(1, Ordering::Relaxed);
    }

    /// Copy the counters into `stats`.
    pub(crate) fn fill(&self, stats: &mut TmStats) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        stats.requests = std::array::from_fn(|i| get(&self.requests[i]));
        stats.replies_received = std::array::from_fn(|i| get(&self.replies_received[i]));
        stats.replies_stateless = std::array::from_fn(|i| get(&self.replies_stateless[i]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn slots() {
        assert_eq!(COUNTED_METHODS[method_slot(&Method::Invite)], "INVITE");
        assert_eq!(COUNTED_METHODS[method_slot(&Method::Update)], "UPDATE");
        assert_eq!(
            COUNTED_METHODS[method_slot(&Method::Other(Bytes::from_static(b"FOO")))],
            "other"
        );
        assert_eq!(REPLY_CLASSES[class_slot(100)], "1xx");
        assert_eq!(REPLY_CLASSES[class_slot(299)], "2xx");
        assert_eq!(REPLY_CLASSES[class_slot(699)], "6xx");
        assert_eq!(class_slot(0), 0);
        assert_eq!(class_slot(999), 5);
    }

    #[test]
    fn histogram_buckets_are_upper_bounds() {
        let mut h = WaitHistogram::default();
        for ms in [0, 1, 2, 3, 60_000, 60_001] {
            h.observe(ms);
        }
        assert_eq!(h.buckets[0], 2, "0 and 1 ms: le 1 ms");
        assert_eq!(h.buckets[1], 1, "2 ms: le 2 ms");
        assert_eq!(h.buckets[2], 1, "3 ms: le 5 ms");
        assert_eq!(h.buckets[14], 1, "60 s: le 60 s");
        assert_eq!(h.buckets[15], 1, "past 60 s");
        assert_eq!((h.count, h.sum_ms), (6, 120_007));
    }

    #[test]
    fn add_sums_every_counter() {
        let mut a = TmStats {
            live: 1,
            created: 2,
            branch_replies: 3,
            ..TmStats::default()
        };
        a.suspend_wait.observe(3);
        a.finals[1] = 4;
        let mut b = a;
        b.requests[14] = 5;
        b.add(&a);
        assert_eq!((b.live, b.created, b.branch_replies), (2, 4, 6));
        assert_eq!((b.suspend_wait.count, b.suspend_wait.sum_ms), (2, 6));
        assert_eq!(b.suspend_wait.buckets[2], 2);
        assert_eq!((b.finals[1], b.requests[14]), (8, 5));
    }

    #[test]
    fn host_counters_fill() {
        let c = HostCounters::default();
        c.request(&Method::Invite);
        c.request(&Method::Invite);
        c.request(&Method::Other(Bytes::from_static(b"FOO")));
        c.reply_received(180);
        c.stateless_reply(404);
        let mut s = TmStats::default();
        c.fill(&mut s);
        assert_eq!(s.requests[0], 2);
        assert_eq!(s.requests[14], 1);
        assert_eq!(s.replies_received[0], 1);
        assert_eq!(s.replies_stateless[3], 1);
        assert_eq!(s.replies_sent()[3], 1);
    }
}
