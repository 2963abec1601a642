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
//! Our own machines were written rather than sipx-sip's (see
//! docs/decisions/sip-transactions.md): a proxy's server and client sides
//! are coupled (a provisional from downstream becomes the server side's
//! "last provisional", a timeout on one side replies on the other), and
//! the traps listed in ARCHITECTURE.md (duplicate timer chains, RFC 2543
//! ACKs, no CANCEL/487 support) are easier to avoid in one table.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::edit::Edit;
use crate::error::ParseError;
use crate::key::TransactionKey;
use crate::message::{Method, SipMessage};
use crate::request::{ConnId, Request, Transport, TxRef};

/// Prefix of the branch parameter of every Via we add: the magic cookie,
/// then a tag of ours so a reply's branch can be decoded without a lookup.
const BRANCH_PREFIX: &str = "z9hG4bKev";

/// Buckets of the index: a transaction's index is its key's hash modulo
/// this, as Kamailio's tm table (which also has 2^16 entries).
const BUCKETS: u64 = 1 << 16;

/// Most timers fired by one [`Tm::on_timer`] call, so one call holds the
/// table lock for a bounded time; the driver calls again at once if more
/// are due.
const TIMER_BATCH: usize = 4096;

/// Why a transaction operation failed. Each variant names the values
/// involved, so a log line or a script error is actionable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TmError {
    /// No transaction with this index and label exists (never did, or it
    /// ended).
    #[error("no transaction {index}:{label}")]
    NoTransaction {
        /// The index asked for.
        index: u32,
        /// The label asked for.
        label: u32,
    },
    /// The transaction exists but is not suspended (already continued,
    /// cancelled, timed out), or never existed: a continue that changes
    /// nothing.
    #[error("no suspended transaction {index}:{label}")]
    NotSuspended {
        /// The index asked for.
        index: u32,
        /// The label asked for.
        label: u32,
    },
    /// The transaction already sent a final reply.
    #[error("transaction {index}:{label} already has a final reply ({code})")]
    AlreadyReplied {
        /// Its index.
        index: u32,
        /// Its label.
        label: u32,
        /// The final code it sent.
        code: u16,
    },
    /// The INVITE was cancelled; it may not be relayed any more.
    #[error("transaction {index}:{label} was cancelled")]
    Canceled {
        /// Its index.
        index: u32,
        /// Its label.
        label: u32,
    },
    /// A relayed branch is still waiting for its final reply.
    #[error("transaction {index}:{label} has a branch in progress")]
    BranchPending {
        /// Its index.
        index: u32,
        /// Its label.
        label: u32,
    },
    /// The transaction is already suspended.
    #[error("transaction {index}:{label} is already suspended")]
    AlreadySuspended {
        /// Its index.
        index: u32,
        /// Its label.
        label: u32,
    },
    /// ACK never creates a transaction (RFC 3261 §17): relay it
    /// statelessly with `t_relay`, or drop it.
    #[error("an ACK has no transaction of its own")]
    AckHasNoTransaction,
    /// The table holds `max` transactions already.
    #[error("transaction table full ({max} transactions)")]
    TableFull {
        /// The configured maximum.
        max: usize,
    },
    /// The request lacks what a transaction needs (Via, CSeq, Call-ID...).
    #[error("request unusable for a transaction: {0}")]
    BadRequest(ParseError),
    /// The relay destination cannot be used.
    #[error("cannot relay to {uri:?}: {reason}")]
    BadDestination {
        /// The destination or Request-URI.
        uri: String,
        /// Why.
        reason: String,
    },
    /// No listening socket of the transport and address family to send from.
    #[error("no {transport} socket to send to {addr}")]
    NoSocket {
        /// The transport wanted.
        transport: Transport,
        /// The destination.
        addr: SocketAddr,
    },
    /// Max-Forwards is 0: 483 was sent, the request is not forwarded.
    #[error("Max-Forwards reached 0; replied 483")]
    TooManyHops,
    /// The host is shutting down.
    #[error("the SIP host is shutting down")]
    ShuttingDown,
}

/// Counters of the transaction table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TmStats {
    /// Transactions in the table now (including finished ones lingering to
    /// absorb retransmissions).
    pub live: usize,
    /// Suspended transactions now.
    pub suspended: usize,
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
    /// INVITEs cancelled.
    pub canceled: u64,
    /// Retransmitted requests, and ACKs of non-2xx finals, absorbed.
    pub absorbed: u64,
}

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
}

/// Timer settings and our sockets (for the Via of relayed requests).
#[derive(Debug, Clone)]
pub(crate) struct TmConfig {
    pub(crate) t1: u64,
    pub(crate) t2: u64,
    pub(crate) fr: u64,
    pub(crate) fr_inv: u64,
    pub(crate) wait: u64,
    pub(crate) max: usize,
    pub(crate) listeners: Vec<(Transport, SocketAddr)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Server side: retransmit the final reply (RFC 3261 Timer G).
    Retrans = 0,
    /// Server side: no final reply by now gets 408 (fr_timer / fr_inv_timer).
    Fr = 1,
    /// End of the transaction (Timers H, I, J, L / Kamailio's wait_timer).
    Wait = 2,
    /// Branch: retransmit the request (Timers A / E).
    BRetrans = 3,
    /// Branch: no final reply by now times out (Timers B / F, fr timers).
    BTimeout = 4,
    /// Branch: retransmit our CANCEL.
    CRetrans = 5,
}

/// A timer's place in the ordered map: (deadline, sequence number). The
/// sequence makes keys unique, so a transaction can remove exactly its own.
type TimerKey = (u64, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    /// No final reply yet.
    Proceeding,
    /// Final reply sent; for INVITE waiting for the ACK.
    Completed,
    /// INVITE: the ACK came; lingering to absorb retransmissions.
    Confirmed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    /// Request sent, nothing received.
    Calling,
    /// A provisional received.
    Proceeding,
    /// A final >= 300 received (INVITE: ACKed), or timed out / failed.
    Completed,
    /// A 2xx received: later 2xx retransmissions are forwarded.
    Accepted,
}

#[derive(Debug)]
struct CancelState {
    data: Bytes,
    interval: u64,
    tries: u32,
    done: bool,
}

#[derive(Debug)]
struct Branch {
    no: u32,
    data: Bytes,
    /// The request as sent, for building its CANCEL and ACK.
    sent: SipMessage,
    dest: Dest,
    state: ClientState,
    interval: u64,
    /// A CANCEL is owed but no provisional came yet (RFC 3261 §9.1: wait
    /// for one before sending it).
    cancel_wanted: bool,
    cancel: Option<CancelState>,
}

impl Branch {
    fn active(&self) -> bool {
        matches!(self.state, ClientState::Calling | ClientState::Proceeding)
    }
}

#[derive(Debug)]
struct Tx {
    tref: TxRef,
    key: TransactionKey,
    invite: bool,
    /// The request (with the router's edits as of its last relay).
    req: Request,
    dest: Dest,
    state: ServerState,
    /// The last reply sent upstream, re-sent on retransmissions.
    last: Option<Bytes>,
    /// Its code (0: none).
    code: u16,
    /// The final was ours (not forwarded): we retransmit even a 2xx.
    local_final: bool,
    interval: u64,
    /// The request while suspended. Boxed, as the branch and the best
    /// reply: most transactions never need them, and every entry pays for
    /// what is inline.
    stash: Option<Box<Request>>,
    canceled: bool,
    in_failure: bool,
    branch: Option<Box<Branch>>,
    branches: u32,
    /// Best final reply of ended branches: (code, the reply, if one came).
    best: Option<Box<(u16, Option<SipMessage>)>>,
    /// (Call-ID, CSeq) while a local 2xx waits for its ACK.
    dialog: Option<(Bytes, u32)>,
    timers: [Option<TimerKey>; 6],
}

impl Tx {
    fn branch_active(&self) -> bool {
        self.branch.as_ref().is_some_and(|b| b.active())
    }

    /// Whether the transaction can still be suspended or relayed: no final
    /// reply yet, and not cancelled.
    fn open(&self, t: TxRef) -> Result<(), TmError> {
        let (index, label) = (t.index, t.label);
        if self.state != ServerState::Proceeding {
            return Err(TmError::AlreadyReplied {
                index,
                label,
                code: self.code,
            });
        }
        if self.canceled {
            return Err(TmError::Canceled { index, label });
        }
        Ok(())
    }
}

/// The ordered timer map and the bookkeeping that wakes its driver.
#[derive(Debug, Default)]
struct Timers {
    map: BTreeMap<TimerKey, (u64, Timer)>,
    seq: u64,
    /// The deadline the driver sleeps until (`u64::MAX`: none); arming an
    /// earlier one must wake it.
    armed_at: u64,
    wake: bool,
}

impl Timers {
    fn arm(&mut self, slots: &mut [Option<TimerKey>; 6], id: u64, kind: Timer, at: u64) {
        // Replacing, never adding: one pending timer per kind and
        // transaction, so a re-arm cannot start a second chain.
        if let Some(old) = slots[kind as usize].take() {
            self.map.remove(&old);
        }
        self.seq += 1;
        let key = (at, self.seq);
        self.map.insert(key, (id, kind));
        slots[kind as usize] = Some(key);
        if at < self.armed_at {
            self.wake = true;
        }
    }

    fn disarm(&mut self, slots: &mut [Option<TimerKey>; 6], kind: Timer) {
        if let Some(old) = slots[kind as usize].take() {
            self.map.remove(&old);
        }
    }
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

/// Maps split in shards so that growing one rehashes a sixteenth of the
/// table: one big rehash (hundreds of thousands of entries) would hold the
/// table lock long enough to stall every thread.
const SHARDS: usize = 16;

/// How an entry picks its shard.
trait ShardKey: std::hash::Hash + Eq {
    fn shard(&self, pick: &RandomState) -> usize;
}

impl ShardKey for u64 {
    /// A transaction id: its index is already a hash.
    fn shard(&self, _: &RandomState) -> usize {
        ((self >> 32) as usize) % SHARDS
    }
}

impl ShardKey for TransactionKey {
    fn shard(&self, pick: &RandomState) -> usize {
        (pick.hash_one(self) as usize) % SHARDS
    }
}

struct Sharded<K, V> {
    maps: Vec<HashMap<K, V>>,
    pick: RandomState,
    len: usize,
}

impl<K: ShardKey, V> Sharded<K, V> {
    fn new() -> Self {
        Sharded {
            maps: (0..SHARDS).map(|_| HashMap::new()).collect(),
            pick: RandomState::new(),
            len: 0,
        }
    }

    fn map(&self, k: &K) -> &HashMap<K, V> {
        &self.maps[k.shard(&self.pick)]
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.map(k).get(k)
    }

    fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let i = k.shard(&self.pick);
        self.maps[i].get_mut(k)
    }

    fn contains_key(&self, k: &K) -> bool {
        self.map(k).contains_key(k)
    }

    fn insert(&mut self, k: K, v: V) -> Option<V> {
        let i = k.shard(&self.pick);
        let old = self.maps[i].insert(k, v);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    fn remove(&mut self, k: &K) -> Option<V> {
        let i = k.shard(&self.pick);
        let old = self.maps[i].remove(k);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.maps.iter().flat_map(|m| m.iter())
    }

    #[cfg(test)]
    fn values(&self) -> impl Iterator<Item = &V> {
        self.maps.iter().flat_map(|m| m.values())
    }
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
    cfg: TmConfig,
    /// Random per host: in our branches and To tags, so replies to
    /// another instance's branches are not taken for ours.
    seed: u32,
    hasher: RandomState,
    next_label: u32,
    /// Boxed: a transaction is large, and a rehash should move pointers.
    txs: Sharded<u64, Box<Tx>>,
    by_key: Sharded<TransactionKey, u64>,
    by_dialog: HashMap<(Bytes, u32), u64>,
    timers: Timers,
    suspended: usize,
    stats: TmStats,
    closing: bool,
}

impl Tm {
    pub(crate) fn new(cfg: TmConfig) -> Tm {
        let hasher = RandomState::new();
        let seed = hasher.hash_one(0xc0ffee_u64) as u32;
        Tm {
            cfg,
            seed,
            hasher,
            next_label: 0,
            txs: Sharded::new(),
            by_key: Sharded::new(),
            by_dialog: HashMap::new(),
            timers: Timers {
                armed_at: u64::MAX,
                ..Timers::default()
            },
            suspended: 0,
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
            suspended: self.suspended,
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
    /// was asked for, else to the source IP (what `received` holds) and the
    /// Via port.
    pub(crate) fn reply_dest(req: &Request) -> Dest {
        let s = req.source();
        // Over TCP the connection (`conn`) is tried first; this address is
        // where a new one is opened if it closed: the Via's port, since
        // the source port of a closed connection is nobody's.
        let addr = match (s.transport, req.msg().top_via()) {
            (Transport::Udp, Ok(v)) if v.rport.is_some() => s.remote,
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
                .transaction_key()
                .ok()
                .and_then(|k| self.by_key.get(&k.for_invite()).copied()),
        };
        id.and_then(|i| self.txs.get(&i))
            .is_some_and(|t| t.canceled)
    }

    /// Whether a transaction exists for this request (t_check_trans).
    pub(crate) fn exists(&self, req: &Request) -> bool {
        if let Some(t) = req.tx {
            return self.txs.contains_key(&tx_id(t));
        }
        match req.msg().transaction_key() {
            Ok(k) if req.msg().method() == Some(&Method::Cancel) => {
                self.by_key.contains_key(&k) || self.by_key.contains_key(&k.for_invite())
            }
            Ok(k) => self.by_key.contains_key(&k),
            Err(_) => false,
        }
    }

    /// A request from the network: absorb it if it belongs to a known
    /// transaction, else hand it to the router.
    pub(crate) fn on_request(
        &mut self,
        req: &Request,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Incoming {
        let Ok(key) = req.msg().transaction_key() else {
            return Incoming::Route;
        };
        match req.msg().method() {
            Some(Method::Ack) => self.on_ack(req, key, now),
            Some(Method::Cancel) => {
                if let Some(&id) = self.by_key.get(&key) {
                    self.retransmission(id, out);
                    return Incoming::Absorbed;
                }
                match self.by_key.get(&key.for_invite()) {
                    Some(&inv) => {
                        self.on_cancel(req, inv, now, out);
                        Incoming::Absorbed
                    }
                    None => Incoming::Route,
                }
            }
            _ => match self.by_key.get(&key) {
                Some(&id) => {
                    self.retransmission(id, out);
                    Incoming::Absorbed
                }
                None => Incoming::Route,
            },
        }
    }

    fn retransmission(&mut self, id: u64, out: &mut Vec<Action>) {
        self.stats.absorbed += 1;
        let Some(tx) = self.txs.get(&id) else { return };
        // RFC 6026: once a forwarded 2xx went up, a retransmitted INVITE is
        // absorbed silently (the 2xx is the UAS's to retransmit).
        let silent = tx.invite && (200..300).contains(&tx.code) && !tx.local_final;
        if let (Some(last), false) = (&tx.last, silent) {
            Self::send(out, &tx.dest, last.clone());
        }
    }

    fn on_ack(&mut self, req: &Request, key: TransactionKey, now: u64) -> Incoming {
        let mut id = self.by_key.get(&key).copied();
        if id.is_none() {
            // RFC 2543 ACK: its key carries the To tag of our reply, the
            // INVITE's did not.
            if let TransactionKey::Rfc2543 { to_tag, .. } = &key {
                let mut k = key.clone();
                if let TransactionKey::Rfc2543 { to_tag: t, .. } = &mut k {
                    *t = None;
                }
                id = self.by_key.get(&k).copied().filter(|i| {
                    self.txs.get(i).is_some_and(|tx| {
                        let ours = tx
                            .last
                            .as_ref()
                            .and_then(|l| SipMessage::parse(l.clone()).ok())
                            .and_then(|m| m.to().ok().and_then(|t| t.tag.map(<[u8]>::to_vec)));
                        ours.as_deref() == to_tag.as_deref()
                    })
                });
            }
        }
        if id.is_none() {
            // The ACK of a 2xx we generated comes with a new branch, and so
            // does the ACK of a non-2xx from some UACs: match it by Call-ID
            // and CSeq (and the To tag of the final it acknowledges), to stop
            // retransmitting the final.
            let (Ok(cid), Ok(cseq)) = (req.msg().call_id(), req.msg().cseq()) else {
                return Incoming::Route;
            };
            let ack_tag = req.msg().to().ok().and_then(|t| t.tag.map(<[u8]>::to_vec));
            let d = (Bytes::copy_from_slice(cid), cseq.number);
            id = self.by_dialog.get(&d).copied().filter(|i| {
                self.txs.get(i).is_some_and(|tx| {
                    let ours = tx
                        .last
                        .as_ref()
                        .and_then(|l| SipMessage::parse(l.clone()).ok())
                        .and_then(|m| m.to().ok().and_then(|t| t.tag.map(<[u8]>::to_vec)));
                    ours == ack_tag
                })
            });
            if id.is_some() {
                self.by_dialog.remove(&d);
            }
        }
        let Some(id) = id else {
            return Incoming::Route;
        };
        let Some(tx) = self.txs.get_mut(&id) else {
            return Incoming::Route;
        };
        if tx.state == ServerState::Completed {
            tx.state = ServerState::Confirmed;
            self.timers.disarm(&mut tx.timers, Timer::Retrans);
            let linger = if tx.dest.transport.is_reliable() {
                0
            } else {
                self.cfg.wait
            };
            self.timers
                .arm(&mut tx.timers, id, Timer::Wait, now + linger);
            if let Some(d) = tx.dialog.take() {
                self.by_dialog.remove(&d);
            }
        }
        // A 2xx's ACK is end to end: the router passes it on. A non-2xx's
        // ACK ends here.
        if (200..300).contains(&tx.code) {
            Incoming::Route
        } else {
            self.stats.absorbed += 1;
            Incoming::Absorbed
        }
    }

    fn on_cancel(&mut self, cancel: &Request, inv: u64, now: u64, out: &mut Vec<Action>) {
        // The CANCEL is a transaction of its own: retransmissions of it get
        // the same 200.
        let mut c = cancel.clone();
        if let Ok(t) = self.create(&mut c, now, out) {
            let _ = self.local_final(tx_id(t), 200, "OK", now, out);
        } else {
            // Table full or shutting down: still answer, statelessly.
            if let Ok(r) = cancel.msg().response(200, b"OK", None, &[]) {
                Self::send(out, &Self::reply_dest(cancel), r);
            }
        }
        let Some(tx) = self.txs.get_mut(&inv) else {
            return;
        };
        if tx.state != ServerState::Proceeding || tx.canceled {
            return;
        }
        tx.canceled = true;
        self.stats.canceled += 1;
        if tx.stash.take().is_some() {
            self.suspended -= 1;
        }
        if let Some(b) = tx.branch.as_mut().filter(|b| b.active()) {
            if b.state == ClientState::Proceeding {
                Self::start_cancel(
                    b,
                    &mut self.timers,
                    &mut tx.timers,
                    inv,
                    self.cfg.t1,
                    now,
                    out,
                );
            } else {
                b.cancel_wanted = true;
            }
            return;
        }
        // Suspended, routing, or in a failure route: we answer for it.
        let _ = self.local_final(inv, 487, "Request Terminated", now, out);
    }

    fn start_cancel(
        b: &mut Branch,
        timers: &mut Timers,
        slots: &mut [Option<TimerKey>; 6],
        id: u64,
        t1: u64,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        if b.cancel.is_some() {
            return;
        }
        b.cancel_wanted = false;
        let Ok(data) = b.sent.cancel() else { return };
        out.push(Action::Send {
            dest: b.dest.clone(),
            data: data.clone(),
            branch: None,
        });
        if !b.dest.transport.is_reliable() {
            timers.arm(slots, id, Timer::CRetrans, now + t1);
        }
        b.cancel = Some(CancelState {
            data,
            interval: t1,
            tries: 0,
            done: false,
        });
    }

    /// Create the transaction of a request, or find the existing one.
    pub(crate) fn newtran(
        &mut self,
        req: &mut Request,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<TxRef, TmError> {
        if let Some(t) = req.tx {
            return if self.txs.contains_key(&tx_id(t)) {
                Ok(t)
            } else {
                Err(TmError::NoTransaction {
                    index: t.index,
                    label: t.label,
                })
            };
        }
        self.create(req, now, out)
    }

    fn create(
        &mut self,
        req: &mut Request,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<TxRef, TmError> {
        let key = req.msg().transaction_key().map_err(TmError::BadRequest)?;
        if let Some(tx) = self.by_key.get(&key).and_then(|id| self.txs.get(id)) {
            req.tx = Some(tx.tref);
            return Ok(tx.tref);
        }
        let invite = match req.msg().method() {
            Some(Method::Ack) => return Err(TmError::AckHasNoTransaction),
            Some(Method::Invite) => true,
            Some(_) => false,
            None => return Err(TmError::BadRequest(ParseError::WrongKind("not a request"))),
        };
        // A transaction needs what its replies copy.
        for r in [
            req.msg().cseq().map(|_| ()),
            req.msg().call_id().map(|_| ()),
        ] {
            r.map_err(TmError::BadRequest)?;
        }
        if self.closing {
            return Err(TmError::ShuttingDown);
        }
        if self.txs.len() >= self.cfg.max {
            return Err(TmError::TableFull { max: self.cfg.max });
        }
        let index = (self.hasher.hash_one(&key) % BUCKETS) as u32;
        let tref = loop {
            self.next_label = self.next_label.wrapping_add(1);
            let t = TxRef {
                index,
                label: self.next_label,
            };
            // A label wraps after 4 billion transactions; skip 0 and any
            // pair still alive.
            if t.label != 0 && !self.txs.contains_key(&tx_id(t)) {
                break t;
            }
        };
        let id = tx_id(tref);
        req.tx = Some(tref);
        let dest = Self::reply_dest(req);
        let mut tx = Tx {
            tref,
            key: key.clone(),
            invite,
            req: req.clone(),
            dest,
            state: ServerState::Proceeding,
            last: None,
            code: 0,
            local_final: false,
            interval: self.cfg.t1,
            stash: None,
            canceled: false,
            in_failure: false,
            branch: None,
            branches: 0,
            best: None,
            dialog: None,
            timers: [None; 6],
        };
        if invite {
            // RFC 3261 §16.2: a stateful proxy answers an INVITE with 100 at
            // once, so the UAC stops retransmitting it.
            if let Ok(r) = req.msg().response(100, b"Trying", None, &[]) {
                Self::send(out, &tx.dest, r.clone());
                tx.last = Some(r);
                tx.code = 100;
            }
        }
        let fr = self.fr_for(invite);
        self.timers.arm(&mut tx.timers, id, Timer::Fr, now + fr);
        self.txs.insert(id, Box::new(tx));
        self.by_key.insert(key, id);
        self.stats.created += 1;
        Ok(tref)
    }

    fn tx_mut(&mut self, t: TxRef) -> Result<&mut Tx, TmError> {
        self.txs
            .get_mut(&tx_id(t))
            .map(|b| &mut **b)
            .ok_or_else(|| no_tx(t))
    }

    /// Reply on the request's transaction (created if needed).
    pub(crate) fn reply(
        &mut self,
        req: &mut Request,
        code: u16,
        reason: &str,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), TmError> {
        let t = self.newtran(req, now, out)?;
        let tx = self.tx_mut(t)?;
        if tx.state != ServerState::Proceeding {
            return Err(TmError::AlreadyReplied {
                index: t.index,
                label: t.label,
                code: tx.code,
            });
        }
        let id = tx_id(t);
        // The router's reply headers and body, as set on this copy of the
        // request, go into this reply.
        tx.req.take_reply_parts(req);
        if code < 200 {
            let tag = (code > 100).then(|| self.to_tag(t));
            let tx = self.tx_mut(t)?;
            let r = tx
                .req
                .build_reply(code, reason, tag.as_deref().map(str::as_bytes))
                .map_err(TmError::BadRequest)?;
            Self::send(out, &tx.dest, r.clone());
            tx.last = Some(r);
            tx.code = code;
            return Ok(());
        }
        self.final_reply(id, code, reason, true, now, out)
    }

    /// A final reply we generate on our own (timeouts, 487, 503...): no
    /// headers or body of the router's.
    fn local_final(
        &mut self,
        id: u64,
        code: u16,
        reason: &str,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), TmError> {
        self.final_reply(id, code, reason, false, now, out)
    }

    /// Send a final reply we build (with the router's reply headers and
    /// body when `routed`); ends a suspension and cancels an active branch.
    fn final_reply(
        &mut self,
        id: u64,
        code: u16,
        reason: &str,
        routed: bool,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), TmError> {
        let tag = match self.txs.get(&id) {
            Some(tx) => self.to_tag(tx.tref),
            None => return Ok(()),
        };
        let Some(tx) = self.txs.get_mut(&id) else {
            return Ok(());
        };
        let r = if routed {
            tx.req.build_reply(code, reason, Some(tag.as_bytes()))
        } else {
            tx.req
                .msg()
                .response(code, reason.as_bytes(), Some(tag.as_bytes()), &[])
                .or_else(|_| tx.req.msg().response(code, reason.as_bytes(), None, &[]))
        }
        .map_err(TmError::BadRequest)?;
        if tx.stash.take().is_some() {
            self.suspended -= 1;
        }
        if let Some(b) = tx.branch.as_mut().filter(|b| b.active()) {
            // Our own final ends the branch: cancel it downstream.
            if tx.invite && b.state == ClientState::Proceeding {
                Self::start_cancel(
                    b,
                    &mut self.timers,
                    &mut tx.timers,
                    id,
                    self.cfg.t1,
                    now,
                    out,
                );
            }
            b.state = ClientState::Completed;
            self.timers.disarm(&mut tx.timers, Timer::BRetrans);
            self.timers.disarm(&mut tx.timers, Timer::BTimeout);
        }
        tx.local_final = true;
        self.stats.local_replies += 1;
        self.send_final(id, r, code, now, out);
        Ok(())
    }

    /// Send a final reply upstream (ours or forwarded) and set the timers
    /// that follow it.
    fn send_final(&mut self, id: u64, data: Bytes, code: u16, now: u64, out: &mut Vec<Action>) {
        let cfg_t1 = self.cfg.t1;
        let wait = self.cfg.wait;
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        Self::send(out, &tx.dest, data.clone());
        tx.last = Some(data);
        tx.code = code;
        tx.state = ServerState::Completed;
        self.timers.disarm(&mut tx.timers, Timer::Fr);
        let reliable = tx.dest.transport.is_reliable();
        if tx.invite && (code >= 300 || tx.local_final) {
            // The ACK of this final comes back to us. It should carry the
            // INVITE's branch (RFC 3261 §17.1.1.3), but some UACs (SIPp's
            // `ack_txn`, for one) send a new branch, and Kamailio absorbs
            // those too: so the ACK is also matched by Call-ID and CSeq.
            if tx.dialog.is_none() {
                if let (Ok(cid), Ok(cseq)) = (tx.req.msg().call_id(), tx.req.msg().cseq()) {
                    let d = (Bytes::copy_from_slice(cid), cseq.number);
                    self.by_dialog.insert(d.clone(), id);
                    tx.dialog = Some(d);
                }
            }
            // Retransmit until the ACK (Timer G), give up at Timer H.
            if !reliable {
                tx.interval = cfg_t1;
                self.timers
                    .arm(&mut tx.timers, id, Timer::Retrans, now + cfg_t1);
            }
            self.timers
                .arm(&mut tx.timers, id, Timer::Wait, now + 64 * cfg_t1);
        } else {
            let linger = if reliable && !tx.invite { 0 } else { wait };
            self.timers
                .arm(&mut tx.timers, id, Timer::Wait, now + linger);
        }
    }

    /// Suspend the request's transaction (created if needed).
    pub(crate) fn suspend(
        &mut self,
        req: &mut Request,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<TxRef, TmError> {
        let t = self.newtran(req, now, out)?;
        let fr_inv = self.cfg.fr_inv;
        let fr = self.cfg.fr;
        let tx = self.txs.get_mut(&tx_id(t)).ok_or_else(|| no_tx(t))?;
        let (index, label) = (t.index, t.label);
        tx.open(t)?;
        if tx.stash.is_some() {
            return Err(TmError::AlreadySuspended { index, label });
        }
        if tx.branch_active() {
            return Err(TmError::BranchPending { index, label });
        }
        tx.stash = Some(Box::new(req.clone()));
        tx.in_failure = false;
        let at = now + if tx.invite { fr_inv } else { fr };
        self.timers.arm(&mut tx.timers, tx_id(t), Timer::Fr, at);
        self.suspended += 1;
        Ok(t)
    }

    /// Hand a suspended request back.
    pub(crate) fn resume(&mut self, index: u32, label: u32) -> Result<Request, TmError> {
        let t = TxRef { index, label };
        let not = TmError::NotSuspended { index, label };
        let tx = self.txs.get_mut(&tx_id(t)).ok_or(not.clone())?;
        if tx.state != ServerState::Proceeding || tx.canceled {
            return Err(not);
        }
        let req = tx.stash.take().ok_or(not)?;
        self.suspended -= 1;
        self.stats.resumed += 1;
        Ok(*req)
    }

    /// Our socket to relay from: the first listener of the transport and
    /// address family.
    fn pick_local(&self, transport: Transport, addr: SocketAddr) -> Result<SocketAddr, TmError> {
        self.cfg
            .listeners
            .iter()
            .find(|(t, a)| *t == transport && a.is_ipv4() == addr.is_ipv4())
            .map(|(_, a)| *a)
            .ok_or(TmError::NoSocket { transport, addr })
    }

    /// Relay the request statefully to `hop` (already resolved from the
    /// destination URI or Request-URI). ACK is relayed statelessly.
    /// `via_ip`: the address to put in our Via when the listener is bound
    /// to a wildcard address (the host looks up the route to `hop`).
    pub(crate) fn relay(
        &mut self,
        req: &mut Request,
        hop: (Transport, SocketAddr),
        via_ip: Option<std::net::IpAddr>,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), TmError> {
        let (transport, addr) = hop;
        let local = self.pick_local(transport, addr)?;
        let sent_by = match via_ip {
            Some(ip) if local.ip().is_unspecified() => SocketAddr::new(ip, local.port()),
            _ => local,
        };
        let dest = Dest {
            transport,
            addr,
            local: Some(local),
            conn: None,
        };
        if req.msg().method() == Some(&Method::Ack) {
            // Stateless: the branch only has to be the same for the same
            // ACK, so derive it from the incoming one.
            let h = self.hasher.hash_one(
                req.msg()
                    .top_via()
                    .ok()
                    .and_then(|v| v.branch)
                    .unwrap_or_default(),
            );
            let via = format!(
                "SIP/2.0/{} {};branch={}{:08x}.a.{:x}",
                transport.via_name(),
                sent_by,
                BRANCH_PREFIX,
                self.seed,
                h
            );
            Self::send(out, &dest, req.serialize_for_relay(&via));
            return Ok(());
        }
        if !req.max_forwards_set() && req.msg().max_forwards() == Ok(Some(0)) {
            self.reply(req, 483, "Too Many Hops", now, out)?;
            return Err(TmError::TooManyHops);
        }
        let t = self.newtran(req, now, out)?;
        let id = tx_id(t);
        let (t1, fr) = (self.cfg.t1, self.cfg.fr);
        let seed = self.seed;
        let tx = self.txs.get_mut(&id).ok_or_else(|| no_tx(t))?;
        let (index, label) = (t.index, t.label);
        tx.open(t)?;
        if tx.branch_active() {
            return Err(TmError::BranchPending { index, label });
        }
        tx.branches += 1;
        let no = tx.branches;
        let via = format!(
            "SIP/2.0/{} {};branch={}{:08x}.{:x}.{:x}.{}",
            transport.via_name(),
            sent_by,
            BRANCH_PREFIX,
            seed,
            index,
            label,
            no
        );
        let data = req.serialize_for_relay(&via);
        let sent = SipMessage::parse(data.clone()).map_err(TmError::BadRequest)?;
        if tx.stash.take().is_some() {
            self.suspended -= 1;
        }
        let mut stored = req.clone();
        stored.tx = Some(t);
        tx.req = stored;
        req.failure_route = None;
        tx.in_failure = false;
        self.timers.disarm(&mut tx.timers, Timer::Fr);
        out.push(Action::Send {
            dest: dest.clone(),
            data: data.clone(),
            branch: Some((id, no)),
        });
        if !transport.is_reliable() {
            self.timers
                .arm(&mut tx.timers, id, Timer::BRetrans, now + t1);
        }
        self.timers
            .arm(&mut tx.timers, id, Timer::BTimeout, now + fr);
        self.timers.disarm(&mut tx.timers, Timer::CRetrans);
        tx.branch = Some(Box::new(Branch {
            no,
            data,
            sent,
            dest,
            state: ClientState::Calling,
            interval: t1,
            cancel_wanted: false,
            cancel: None,
        }));
        self.stats.relayed += 1;
        Ok(())
    }

    /// Which of our branches a reply answers: (transaction id, branch
    /// number), from the branch we wrote in its top Via.
    pub(crate) fn match_reply(&self, msg: &SipMessage) -> Option<(u64, u32)> {
        let via = msg.top_via().ok()?;
        let b = std::str::from_utf8(via.branch?).ok()?;
        let rest = b.strip_prefix(BRANCH_PREFIX)?;
        let mut it = rest.split('.');
        let seed = u32::from_str_radix(it.next()?, 16).ok()?;
        let index = u32::from_str_radix(it.next()?, 16).ok()?;
        let label = u32::from_str_radix(it.next()?, 16).ok()?;
        let no: u32 = it.next()?.parse().ok()?;
        if seed != self.seed || it.next().is_some() {
            return None;
        }
        let id = tx_id(TxRef { index, label });
        let tx = self.txs.get(&id)?;
        (tx.branch.as_ref()?.no == no).then_some((id, no))
    }

    /// A reply from downstream, matched by [`Tm::match_reply`].
    pub(crate) fn on_reply(&mut self, msg: &SipMessage, now: u64, out: &mut Vec<Action>) {
        let Some((id, _)) = self.match_reply(msg) else {
            return;
        };
        let Some(code) = msg.status() else { return };
        let (t1, fr_inv) = (self.cfg.t1, self.cfg.fr_inv);
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let Some(b) = tx.branch.as_mut() else { return };
        if msg.cseq().map(|c| c.method) == Ok(Method::Cancel) {
            if let Some(c) = b.cancel.as_mut() {
                c.done = true;
                self.timers.disarm(&mut tx.timers, Timer::CRetrans);
            }
            return;
        }
        let strip = || msg.edit().with(Edit::RemoveFirstVia).serialize();
        match (b.state, code) {
            (ClientState::Calling | ClientState::Proceeding, 100..=199) => {
                let first = b.state == ClientState::Calling;
                b.state = ClientState::Proceeding;
                if tx.invite {
                    // Timer A stops; Timer C (fr_inv_timer) replaces B.
                    self.timers.disarm(&mut tx.timers, Timer::BRetrans);
                    if first {
                        self.timers
                            .arm(&mut tx.timers, id, Timer::BTimeout, now + fr_inv);
                    }
                    if b.cancel_wanted {
                        Self::start_cancel(b, &mut self.timers, &mut tx.timers, id, t1, now, out);
                    }
                }
                if code > 100 && tx.state == ServerState::Proceeding {
                    let r = strip();
                    Self::send(out, &tx.dest, r.clone());
                    tx.last = Some(r);
                    tx.code = code;
                }
            }
            (ClientState::Calling | ClientState::Proceeding, 200..=299) => {
                b.state = ClientState::Accepted;
                self.timers.disarm(&mut tx.timers, Timer::BRetrans);
                self.timers.disarm(&mut tx.timers, Timer::BTimeout);
                self.timers.disarm(&mut tx.timers, Timer::CRetrans);
                if tx.state == ServerState::Proceeding {
                    if tx.stash.take().is_some() {
                        self.suspended -= 1;
                    }
                    self.send_final(id, strip(), code, now, out);
                } else {
                    // A proxy forwards every 2xx (RFC 3261 §16.7 step 5).
                    Self::send(out, &tx.dest, strip());
                }
            }
            (ClientState::Accepted, 200..=299) => Self::send(out, &tx.dest, strip()),
            (ClientState::Completed, 200..=299) => {
                // A 2xx after the branch timed out or was cancelled: the
                // callee answered, so the caller must see it (RFC 3261
                // §16.7 step 5), whatever was sent upstream before.
                b.state = ClientState::Accepted;
                Self::send(out, &tx.dest, strip());
            }
            (ClientState::Calling | ClientState::Proceeding, _) => {
                b.state = ClientState::Completed;
                self.timers.disarm(&mut tx.timers, Timer::BRetrans);
                self.timers.disarm(&mut tx.timers, Timer::BTimeout);
                if tx.invite {
                    if let Ok(ack) = b.sent.ack(msg) {
                        Self::send(out, &b.dest, ack);
                    }
                }
                self.branch_ended(id, code, Some(msg.clone()), now, out);
            }
            (ClientState::Completed, 300..=699) if tx.invite => {
                // A retransmitted final: our ACK was lost.
                if let Ok(ack) = b.sent.ack(msg) {
                    Self::send(out, &b.dest, ack);
                }
            }
            _ => {}
        }
    }

    /// A branch ended without success: run the failure route if one is
    /// armed, else forward the best final reply.
    fn branch_ended(
        &mut self,
        id: u64,
        code: u16,
        reply: Option<SipMessage>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        // 6xx wins (a global failure), then the lowest code.
        let rank = |c: u16| (c < 600, c);
        let better = tx.best.as_ref().is_none_or(|b| rank(code) < rank(b.0));
        if better {
            tx.best = Some(Box::new((code, reply)));
        }
        if tx.state != ServerState::Proceeding {
            return;
        }
        if let Some(route) = tx.req.failure_route.take() {
            let mut r = tx.req.clone();
            r.failure_code = Some(code);
            r.tx = Some(tx.tref);
            tx.in_failure = true;
            out.push(Action::Failure {
                id,
                req: Box::new(r),
                route,
            });
        } else {
            self.send_best(id, now, out);
        }
    }

    fn send_best(&mut self, id: u64, now: u64, out: &mut Vec<Action>) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        match tx.best.take().map(|b| *b) {
            Some((code, Some(reply))) => {
                let data = reply.edit().with(Edit::RemoveFirstVia).serialize();
                self.send_final(id, data, code, now, out);
            }
            Some((408, None)) => {
                let _ = self.local_final(id, 408, "Request Timeout", now, out);
            }
            Some((code, None)) => {
                let _ = self.local_final(id, code, "Service Unavailable", now, out);
            }
            None => {
                let _ = self.local_final(id, 500, "Server Internal Error", now, out);
            }
        }
    }

    /// The failure route of transaction `id` returned: if it neither
    /// replied, relayed nor suspended, forward the best final reply.
    pub(crate) fn failure_done(&mut self, id: u64, now: u64, out: &mut Vec<Action>) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        if !tx.in_failure {
            return;
        }
        tx.in_failure = false;
        if tx.state == ServerState::Proceeding && !tx.branch_active() && tx.stash.is_none() {
            self.send_best(id, now, out);
        }
    }

    /// Sending branch `no` of transaction `id` failed (connect refused,
    /// unreachable): the branch ends as if with 503.
    pub(crate) fn send_failed(&mut self, id: u64, no: u32, now: u64, out: &mut Vec<Action>) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let Some(b) = tx.branch.as_mut().filter(|b| b.no == no && b.active()) else {
            return;
        };
        b.state = ClientState::Completed;
        self.timers.disarm(&mut tx.timers, Timer::BRetrans);
        self.timers.disarm(&mut tx.timers, Timer::BTimeout);
        self.branch_ended(id, 503, None, now, out);
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
            for k in 0..6 {
                if let Some(key) = tx.timers[k].take() {
                    self.timers.map.remove(&key);
                }
            }
            if tx.stash.is_some() {
                self.suspended -= 1;
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
#[path = "tm_tests.rs"]
mod tests;
