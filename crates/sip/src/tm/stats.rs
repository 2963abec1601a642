//! The table's counters.

/// Counters of the transaction table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TmStats {
    /// Transactions in the table now (including finished ones lingering to
    /// absorb retransmissions).
    pub live: usize,
    /// Suspended transactions now.
    pub suspended: usize,
    /// Relays waiting for their destination's name to resolve now.
    pub resolving: usize,
    /// Transactions created since start.
    pub created: u64,
    /// Final replies generated locally (t_reply, 408, 487, 503...).
    pub local_replies: u64,
    /// Branches relayed.
    pub relayed: u64,
    /// Transactions continued.
    pub resumed: u64,
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
}
