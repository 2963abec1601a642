//! The transaction table (Kamailio's tm), sans I/O.
//!
//! Nothing here touches a socket or reads a clock: every entry point takes
//! the current time in milliseconds and appends what must happen to an
//! output list ([`Action`]: a datagram or segment to send, a failure route
//! to run). The host drives it from socket input, router calls and one
//! timer task; the unit tests drive it with a hand-moved clock.
//!
//! A transaction is one entry in a map plus at most a few entries in one
//! ordered timer map; a suspended transaction is just such an entry with
//! its request stashed. No task, no thread per transaction.
//!
//! Our own machines were written rather than sipx-sip's: a proxy's server
//! and client sides are coupled (a provisional from downstream becomes the
//! server side's "last provisional", a timeout on one side replies on the
//! other), and sipx-sip's traps (duplicate timer chains, RFC 2543 ACKs, no
//! CANCEL/487 support) are easier to avoid in one table. The decision and
//! how each trap is avoided: docs/decisions/sip-transactions.md.
//!
//! Files, one job each: `server` (the upstream side: requests, ACK, CANCEL,
//! our replies, suspend / continue), `client` (the relayed branch and the
//! replies from downstream), `resolving` (a relay waiting for DNS), `branch_id` (the branch parameter we write
//! and read back), `timers` (the ordered timer map), `sharded` (the
//! table's maps), `admin` (listing and answering by id, for operators),
//! `error` and `stats`; this file holds the table itself,
//! its lookups and the timer dispatch.

mod admin;
mod branch_id;
mod client;
mod error;
mod reply;
mod resolving;
mod server;
mod sharded;
mod stateless;
mod stats;
mod timers;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::key::TransactionKey;
use crate::message::Method;
use crate::request::{ConnId, Request, Transport, TxRef};

pub(crate) use admin::{ReplyExtra, TxSummary, LIST_SHARDS};
pub use error::TmError;
pub(crate) use reply::build_reply;
pub use reply::check_reply;
pub(crate) use stats::HostCounters;
pub use stats::{
    class_slot, method_slot, TmStats, WaitHistogram, COUNTED_METHODS, REPLY_CLASSES,
    SUSPEND_WAIT_BOUNDS_MS,
};

use client::ClientState;
use server::{ServerState, Tx};
use sharded::Sharded;
use timers::{Timer, Timers};

/// Buckets of the index: a transaction's index is its key's hash modulo
/// this, as Kamailio's tm table (which also has 2^16 entries).
const BUCKETS: u64 = 1 << 16;

/// The host splits the table in this many parts, each a [`Tm`] under its
/// own lock, so router threads working on different calls do not meet on
/// one lock. A request goes to the part of its Call-ID (the host picks it);
/// a transaction's index keeps its part in its low bits
/// ([`part_of_index`]), so anything that names a transaction by index and
/// label (a reply's branch, `t_continue`, `tm.reply`) finds its part too.
pub(crate) const PARTS: usize = 8;

/// The part of the table that holds transaction index `index`.
pub(crate) fn part_of_index(index: u32) -> usize {
    index as usize % PARTS
}

/// The part of the table that holds transaction `id`.
pub(crate) fn part_of_id(id: u64) -> usize {
    part_of_index((id >> 32) as u32)
}

/// The part named by a reply's top Via, when it carries a branch of our
/// format (whichever host's seed: matching checks that).
pub(crate) fn part_of_reply(msg: &crate::message::SipMessage) -> Option<usize> {
    let branch = msg.top_via().ok()?.branch?;
    match branch_id::BranchId::parse(branch)? {
        branch_id::BranchId::Relay { index, .. } => Some(part_of_index(index)),
        _ => None,
    }
}

/// Most timers fired by one [`Tm::on_timer`] call, so one call holds the
/// table lock for a bounded time; the driver calls again at once if more
/// are due.
const TIMER_BATCH: usize = 4096;

/// Where to send something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dest {
    pub(crate) transport: Transport,
    pub(crate) addr: SocketAddr,
    /// Our socket to send from (UDP: the one the request came in on).
    pub(crate) local: Option<SocketAddr>,
    /// The stream connection to reply on, while it is open.
    pub(crate) conn: Option<ConnId>,
}

/// What the driver must do after a table operation.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send bytes. `branch`: the (transaction id, branch number) to report
    /// a send failure to, for relayed requests.
    Send {
        dest: Dest,
        data: Bytes,
        branch: Option<(u64, u32)>,
    },
    /// Run the router's failure route for transaction `id`, then call
    /// [`Tm::failure_done`].
    Failure {
        id: u64,
        req: Box<Request>,
        route: String,
    },
    /// The final reply `data` (code `code`) went upstream for an INVITE
    /// whose dialog is tracked: tell the dialog table.
    DialogFinal {
        dlg: crate::dialog::DlgId,
        code: u16,
        data: Bytes,
    },
}

/// What the table needs to know: timer settings (ms), its size, and our
/// sockets (for the Via of relayed requests).
#[derive(Debug, Clone)]
pub(crate) struct TableConfig {
    /// Transactions in all parts of the table, against `max`.
    pub(crate) live: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub(crate) t1: u64,
    pub(crate) t2: u64,
    pub(crate) fr: u64,
    pub(crate) fr_inv: u64,
    pub(crate) wait: u64,
    pub(crate) max: usize,
    pub(crate) listeners: Vec<(Transport, SocketAddr)>,
    /// This host's addresses and names: whether a Via is ours.
    pub(crate) myself: crate::myself::Myself,
}

fn no_tx(t: TxRef) -> TmError {
    TmError::NoTransaction {
        index: t.index,
        label: t.label,
    }
}

fn tx_id(t: TxRef) -> u64 {
    (u64::from(t.index) << 32) | u64::from(t.label)
}

/// What an incoming request turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// Handled by the table (a retransmission, the ACK of a non-2xx, a
    /// CANCEL of a known INVITE): the router does not see it.
    Absorbed,
    /// For the router.
    Route,
}

/// The transaction table.
pub(crate) struct Tm {
    cfg: TableConfig,
    /// Which part of the host's table this is (`0..PARTS`): the low bits
    /// of every index it gives.
    part: u32,
    /// Random per host: in our branches and To tags, so replies to
    /// another instance's branches are not taken for ours.
    seed: u32,
    hasher: foldhash::fast::RandomState,
    next_label: u32,
    /// Boxed: a transaction is large, and a rehash should move pointers.
    txs: Sharded<u64, Box<Tx>>,
    by_key: Sharded<TransactionKey, u64>,
    by_dialog: HashMap<(Bytes, u32), u64, foldhash::fast::RandomState>,
    timers: Timers,
    suspended: usize,
    /// Transactions with their final reply sent, lingering now.
    waiting: usize,
    /// Branches waiting for DNS now.
    resolving: usize,
    stats: TmStats,
    closing: bool,
}

impl Tm {
    /// A whole table (part 0 of one).
    #[cfg(test)]
    pub(crate) fn new(cfg: TableConfig) -> Tm {
        Tm::part(cfg, 0, Tm::random_seed())
    }

    /// A random seed for a host's branches and To tags, shared by all the
    /// parts of its table (and its dialog table's BYEs).
    pub(crate) fn random_seed() -> u32 {
        use std::hash::BuildHasher;
        RandomState::new().hash_one(0xc0ffee_u64) as u32
    }

    /// Part `part` of a host's table; every part has the host's `seed`.
    pub(crate) fn part(cfg: TableConfig, part: usize, seed: u32) -> Tm {
        let hasher = foldhash::fast::RandomState::default();
        Tm {
            cfg,
            part: (part % PARTS) as u32,
            seed,
            hasher,
            next_label: 0,
            txs: Sharded::new(),
            by_key: Sharded::new(),
            by_dialog: HashMap::default(),
            timers: Timers {
                armed_at: u64::MAX,
                ..Timers::default()
            },
            suspended: 0,
            waiting: 0,
            resolving: 0,
            stats: TmStats::default(),
            closing: false,
        }
    }

    pub(crate) fn listeners(&self) -> Vec<(Transport, SocketAddr)> {
        self.cfg.listeners.clone()
    }

    pub(crate) fn stats(&self) -> TmStats {
        TmStats {
            live: self.txs.len(),
            waiting: self.waiting,
            suspended: self.suspended,
            resolving: self.resolving,
            ..self.stats
        }
    }

    /// The earliest timer deadline; the driver sleeps until then. Records
    /// it so arming an earlier one sets the wake flag.
    pub(crate) fn next_deadline(&mut self) -> Option<u64> {
        let next = self.timers.map.keys().next().map(|k| k.0);
        self.timers.armed_at = next.unwrap_or(u64::MAX);
        self.timers.wake = false;
        next
    }

    /// The earliest deadline in this part, if any (no side effect).
    pub(crate) fn earliest(&self) -> Option<u64> {
        self.timers.map.keys().next().map(|k| k.0)
    }

    /// Whether a timer earlier than the driver's sleep was armed since the
    /// last [`Tm::next_deadline`]; clears the flag.
    pub(crate) fn take_wake(&mut self) -> bool {
        std::mem::take(&mut self.timers.wake)
    }

    fn fr_for(&self, invite: bool) -> u64 {
        if invite {
            self.cfg.fr_inv
        } else {
            self.cfg.fr
        }
    }

    fn to_tag(&self, t: TxRef) -> String {
        format!("{:08x}-{:x}.{:x}", self.seed, t.index, t.label)
    }

    fn send(out: &mut Vec<Action>, dest: &Dest, data: Bytes) {
        out.push(Action::Send {
            dest: dest.clone(),
            data,
            branch: None,
        });
    }

    /// Where replies to a request go (RFC 3261 §18.2.2, RFC 3581): back on
    /// its connection for TCP; over UDP to the source address when rport
    /// was asked for (or forced by the router), else to the source IP
    /// (what `received` holds) and the Via port.
    pub(crate) fn reply_dest(req: &Request) -> Dest {
        let s = req.source();
        // Over TCP the connection (`conn`) is tried first; this address is
        // where a new one is opened if it closed: the Via's port, since
        // the source port of a closed connection is nobody's.
        let addr = match (s.transport, req.msg().top_via()) {
            (Transport::Udp, Ok(v)) if v.rport.is_some() || req.force_rport() => s.remote,
            (_, Ok(v)) => SocketAddr::new(s.remote.ip(), v.port.unwrap_or(5060)),
            (_, Err(_)) => s.remote,
        };
        Dest {
            transport: s.transport,
            addr,
            local: Some(s.local),
            conn: s.conn,
        }
    }

    /// Whether the request's INVITE transaction was cancelled.
    pub(crate) fn is_canceled(&self, req: &Request) -> bool {
        let id = match req.tx {
            Some(t) => Some(tx_id(t)),
            None => req
                .msg()
                .transaction_key_ref()
                .ok()
                .and_then(|k| self.by_key.get_ref(k.for_invite()).copied()),
        };
        id.and_then(|i| self.txs.get(&i))
            .is_some_and(|t| t.canceled)
    }

    /// Whether a transaction exists for this request (t_check_trans).
    pub(crate) fn exists(&self, req: &Request) -> bool {
        if let Some(t) = req.tx {
            return self.txs.contains_key(&tx_id(t));
        }
        match req.msg().transaction_key_ref() {
            Ok(k) if req.msg().method() == Some(&Method::Cancel) => {
                self.by_key.get_ref(k).is_some() || self.by_key.get_ref(k.for_invite()).is_some()
            }
            Ok(k) => self.by_key.get_ref(k).is_some(),
            Err(_) => false,
        }
    }

    /// Fire the timers due at `now`.
    pub(crate) fn on_timer(&mut self, now: u64, out: &mut Vec<Action>) {
        for _ in 0..TIMER_BATCH {
            let Some((&key, &(id, kind))) = self.timers.map.iter().next() else {
                break;
            };
            if key.0 > now {
                break;
            }
            self.timers.map.remove(&key);
            let Some(tx) = self.txs.get_mut(&id) else {
                continue;
            };
            if tx.timers[kind as usize] != Some(key) {
                continue;
            }
            tx.timers[kind as usize] = None;
            self.fire(id, kind, now, out);
        }
    }

    fn fire(&mut self, id: u64, kind: Timer, now: u64, out: &mut Vec<Action>) {
        let (t1, t2) = (self.cfg.t1, self.cfg.t2);
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        match kind {
            Timer::Retrans => {
                if tx.state == ServerState::Completed {
                    if let Some(l) = &tx.last {
                        Self::send(out, &tx.dest, l.clone());
                    }
                    tx.interval = (tx.interval * 2).min(t2);
                    self.timers
                        .arm(&mut tx.timers, id, Timer::Retrans, now + tx.interval);
                }
            }
            Timer::Wait => self.remove(id),
            Timer::Fr => {
                if tx.state == ServerState::Proceeding && !tx.branch_active() && !tx.in_failure {
                    self.stats.timeouts += 1;
                    if tx.stash.is_some() {
                        self.stats.suspend_timeouts += 1;
                    }
                    let _ = self.local_final(id, 408, "Request Timeout", now, out);
                }
            }
            Timer::BRetrans => {
                let invite = tx.invite;
                if let Some(b) = tx.branch.as_mut().filter(|b| b.active()) {
                    Self::send(out, &b.dest, b.data.clone());
                    b.interval = match (invite, b.state) {
                        (true, _) => b.interval * 2,
                        (false, ClientState::Proceeding) => t2,
                        (false, _) => (b.interval * 2).min(t2),
                    };
                    self.timers
                        .arm(&mut tx.timers, id, Timer::BRetrans, now + b.interval);
                }
            }
            Timer::BTimeout => {
                let invite = tx.invite;
                if let Some(b) = tx.branch.as_mut().filter(|b| b.active()) {
                    if invite && b.state == ClientState::Proceeding {
                        Self::start_cancel(b, &mut self.timers, &mut tx.timers, id, t1, now, out);
                    }
                    b.state = ClientState::Completed;
                    self.timers.disarm(&mut tx.timers, Timer::BRetrans);
                    self.stats.timeouts += 1;
                    self.branch_ended(id, 408, None, now, out);
                }
            }
            Timer::CRetrans => {
                if let Some(c) = tx.branch.as_mut().and_then(|b| {
                    let dest = b.dest.clone();
                    b.cancel.as_mut().map(|c| (c, dest))
                }) {
                    let (c, dest) = c;
                    // Timer F bounds a non-INVITE client transaction: 64*T1
                    // in all, about 10 retransmissions.
                    if !c.done && c.tries < 10 {
                        c.tries += 1;
                        Self::send(out, &dest, c.data.clone());
                        c.interval = (c.interval * 2).min(t2);
                        let at = now + c.interval;
                        self.timers.arm(&mut tx.timers, id, Timer::CRetrans, at);
                    }
                }
            }
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(mut tx) = self.txs.remove(&id) {
            self.cfg
                .live
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            self.stats.freed += 1;
            if tx.state != ServerState::Proceeding {
                self.waiting -= 1;
            }
            for k in 0..6 {
                if let Some(key) = tx.timers[k].take() {
                    self.timers.map.remove(&key);
                }
            }
            if tx.stash.is_some() {
                self.suspended -= 1;
            }
            if tx.resolving.is_some() {
                self.resolving -= 1;
            }
            if self.by_key.get(&tx.key) == Some(&id) {
                self.by_key.remove(&tx.key);
            }
            if let Some(d) = tx.dialog {
                self.by_dialog.remove(&d);
            }
        }
    }

    /// Refuse new transactions and answer every one still without a final
    /// reply with 503.
    pub(crate) fn shutdown(&mut self, now: u64, out: &mut Vec<Action>) {
        self.closing = true;
        let pending: Vec<u64> = self
            .txs
            .iter()
            .filter(|(_, t)| t.state == ServerState::Proceeding)
            .map(|(&id, _)| id)
            .collect();
        for id in pending {
            let _ = self.local_final(id, 503, "Service Unavailable", now, out);
        }
    }
}

#[cfg(test)]
mod tests;
