//! The running host: sockets on tokio, router threads, the timer task, and
//! the handle the router (and anyone else) uses to act on transactions.
//!
//! Message flow: router threads read the UDP sockets themselves
//! (`child.rs`); a TCP connection's task queues each message to router
//! thread `hash(Call-ID) % children`. Either way the message is parsed,
//! the top Via of a request fixed (`received`, `rport`) and checked
//! ([`Shared::accept`]); then the thread, holding the call's stripe lock
//! (so messages of one call never run at the same time), asks the
//! transaction table whether the message is absorbed (a retransmission,
//! an ACK, a known CANCEL) and otherwise calls the [`crate::Router`].
//! Table operations return the sends to do; they are done after the table
//! lock is released, without blocking.
//!
//! Files: this one holds [`Shared`], the state every part of a host points
//! to; `start.rs` the two-phase start ([`SipHost::bind`], [`BoundHost`])
//! and the timer tasks; `child.rs` the router threads; `handle.rs` the
//! [`SipHandle`] operations; `dns.rs` the resolver that turns a relay's
//! name into an address on the runtime, never on a router thread.

mod child;
mod dns;
mod handle;
mod readers;
mod start;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use lograte::warn_limited;
use tokio::sync::Notify;
use tracing::debug;

use crate::config::ConfigError;
use crate::message::{Method, SipMessage};
use crate::request::{Request, Source};
use crate::tm::{part_of_id, part_of_index, part_of_reply, Action, HostCounters, Tm, PARTS};
use crate::transport::{check_request, lock, route_ip, via_rewritten, Net, Upcalls};

pub use handle::SipHandle;
pub use start::{BoundHost, SipHost};

/// Why the host did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is out of range or a `listen` entry does not parse.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A socket could not be bound.
    #[error("cannot listen on {entry:?}: {reason}")]
    Bind {
        /// The entry as given.
        entry: String,
        /// The system's error (in the message, so not also a `source`).
        reason: io::Error,
    },
    /// A router thread could not be started.
    #[error("cannot start router thread: {0}")]
    Thread(io::Error),
}

/// Work queued to a router thread.
pub(crate) enum Work {
    Request(Box<Request>),
    Reply(Box<(SipMessage, Source)>),
    Failure {
        id: u64,
        req: Box<Request>,
        route: String,
    },
    Dialog(Box<crate::DialogEvent>),
    Stop,
}

impl Work {
    /// The [`fnv`] hash of its Call-ID: it picks the thread and the
    /// stripe (a message's is computed once and kept with it).
    pub(crate) fn call_hash(&self) -> u64 {
        match self {
            Work::Request(r) | Work::Failure { req: r, .. } => r.msg().call_id_hash(),
            Work::Reply(b) => b.0.call_id_hash(),
            Work::Dialog(ev) => fnv(ev.info.callid.as_bytes()),
            Work::Stop => fnv(b""),
        }
    }
}

/// What every part of a host points to: the table, the sockets, the
/// router threads' queues. It holds no [`crate::Router`]: the router
/// belongs to the router threads, so a [`SipHandle`] kept by the router
/// itself (a script engine) makes no reference cycle.
pub(crate) struct Shared {
    /// The transaction table in [`PARTS`] parts, each under its own lock:
    /// a call's transactions are all in the part of its Call-ID.
    pub(crate) tm: Vec<Mutex<Tm>>,
    pub(crate) epoch: Instant,
    pub(crate) timer_wake: Notify,
    /// The time (ms since `epoch`, on a tick) the timer task sleeps until;
    /// `u64::MAX` while it is awake or has no deadline. A table operation
    /// wakes it only for a timer due before then, so a call whose timers
    /// fall after the next tick costs the timer task no wake-up.
    pub(crate) timer_due: std::sync::atomic::AtomicU64,
    /// One queue per router thread; filled from bind on, read once the
    /// host starts.
    pub(crate) children: Vec<child::Child>,
    /// By Call-ID hash: one call's messages never run at the same time on
    /// two router threads, and run in the order they were claimed.
    pub(crate) stripes: Vec<Mutex<child::Stripe>>,
    /// One per UDP socket: held while a router thread reads, parses and
    /// claims one datagram, so claims follow the socket's order.
    pub(crate) read_gates: Vec<Mutex<()>>,
    pub(crate) net: Arc<Net>,
    /// For stateless To tags.
    pub(crate) sl_tag: String,
    /// Resolves relay destinations that are names, on the runtime.
    pub(crate) dns: dns::Dns,
    /// The location table (`[usrloc]`).
    pub(crate) usrloc: Arc<crate::usrloc::Usrloc>,
    /// This host's addresses and `[sip] alias` names.
    pub(crate) myself: crate::myself::Myself,
    /// Requests and replies received, stateless replies sent.
    pub(crate) counters: HostCounters,
    /// The dialog table (`[dialog]`).
    pub(crate) dialogs: Arc<crate::Dialogs>,
    /// Wakes the dialog timer task when an earlier timer is armed.
    pub(crate) dialog_wake: Notify,
    /// Which router threads read the UDP sockets (`readers.rs`).
    pub(crate) readers: readers::Readers,
}

pub(crate) use crate::lex::fnv;

/// The part of the transaction table that holds the transactions of the
/// call whose Call-ID's [`fnv`] hash is `h`: the high half of the hash
/// whose low bits pick the router thread and the stripe, so the part
/// does not follow the thread.
pub(crate) fn part_of_hash(h: u64) -> usize {
    ((h >> 32) as usize) % PARTS
}

/// The part of the table of a request's transaction: the one its index
/// names once it has one, else its Call-ID's (the same part).
pub(crate) fn part_of_request(req: &Request) -> usize {
    match req.tx {
        Some(t) => part_of_index(t.index),
        None => part_of_hash(req.msg().call_id_hash()),
    }
}

/// The part of the table a reply is matched in: the one its branch names
/// when the branch is of our format, else its Call-ID's.
pub(crate) fn part_of_msg_reply(msg: &SipMessage) -> usize {
    part_of_reply(msg).unwrap_or_else(|| part_of_hash(msg.call_id_hash()))
}

impl Shared {
    pub(crate) fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Part `part` of the transaction table, locked.
    pub(crate) fn part(&self, part: usize) -> std::sync::MutexGuard<'_, Tm> {
        lock(&self.tm[part % self.tm.len()])
    }

    /// [`Shared::tm_op`] on the part of transaction `id`.
    pub(crate) fn tm_op_id<R>(
        self: &Arc<Self>,
        id: u64,
        f: impl FnOnce(&mut Tm, u64, &mut Vec<Action>) -> R,
    ) -> R {
        self.tm_op(part_of_id(id), f)
    }

    /// [`Shared::tm_op`] on every part in turn (each under its own lock).
    pub(crate) fn tm_op_all(self: &Arc<Self>, f: impl Fn(&mut Tm, u64, &mut Vec<Action>)) {
        for part in 0..self.tm.len() {
            self.tm_op(part, &f);
        }
    }

    /// Run a table operation on part `part` of the table, then do the
    /// sends it asked for (outside the lock) and wake the timer task if it
    /// armed a timer due before the task's next wake-up.
    pub(crate) fn tm_op<R>(
        self: &Arc<Self>,
        part: usize,
        f: impl FnOnce(&mut Tm, u64, &mut Vec<Action>) -> R,
    ) -> R {
        let mut out = Vec::new();
        let (r, armed) = {
            let mut tm = self.part(part);
            let now = self.now();
            let r = f(&mut tm, now, &mut out);
            let armed = if tm.take_wake() { tm.earliest() } else { None };
            (r, armed)
        };
        // Read only when this armed a timer earlier than its part had:
        // most table operations do not. SeqCst pairs with the timer task's
        // stores: either it sees this part's new timer when it reads the
        // part, or this sees the time it will sleep until (or `u64::MAX`
        // while it reads the parts).
        if let Some(at) = armed {
            let due = self.timer_due.load(std::sync::atomic::Ordering::SeqCst);
            if start::tick_up(at) < due {
                self.timer_wake.notify_one();
            }
        }
        self.execute(out);
        r
    }

    /// The address our Via advertises for a relay to `to`: on a wildcard
    /// listener, the local address the routing table picks for it.
    pub(crate) fn via_ip(&self, to: std::net::SocketAddr) -> Option<std::net::IpAddr> {
        if self.net.wildcard {
            route_ip(to)
        } else {
            None
        }
    }

    pub(crate) fn execute(self: &Arc<Self>, out: Vec<Action>) {
        for a in out {
            match a {
                Action::Send { dest, data, branch } => self.net.send(&dest, data, branch),
                Action::Failure { id, req, route } => {
                    if let Err(w) = self.dispatch(Work::Failure { id, req, route }) {
                        // The route cannot run: forward the best reply now
                        // rather than leave the transaction hanging.
                        drop(w);
                        self.tm_op_id(id, |tm, now, out| tm.failure_done(id, now, out));
                    }
                }
                Action::DialogFinal { dlg, code, data } => self.dialogs.on_final(dlg, code, &data),
            }
        }
    }

    /// Queue work to the router thread of its Call-ID.
    pub(crate) fn dispatch(&self, w: Work) -> Result<(), Work> {
        let n = self.children.len() as u64;
        let child = (w.call_hash() % n) as usize;
        self.children[child].try_send(w).map_err(|e| {
            if matches!(e, flume::TrySendError::Full(_)) {
                warn_limited!(child, "router thread queue full, dropping a message");
            } else {
                debug!(child, "router thread stopped, dropping a message");
            }
            e.into_inner()
        })
    }
}

/// Where the dialog table sends its BYEs and delivers its events: weak,
/// as the table is part of what it points to.
pub(crate) struct DialogSink(pub(crate) std::sync::Weak<Shared>);

impl crate::dialog::Sink for DialogSink {
    fn send(&self, dest: crate::tm::Dest, data: Bytes) {
        if let Some(sh) = self.0.upgrade() {
            sh.net.send(&dest, data, None);
        }
    }

    fn event(&self, event: crate::DialogEvent) {
        if let Some(sh) = self.0.upgrade() {
            let _ = sh.dispatch(Work::Dialog(Box::new(event)));
        }
    }

    fn wake(&self) {
        if let Some(sh) = self.0.upgrade() {
            sh.dialog_wake.notify_one();
        }
    }
}

/// The sockets' upcalls: weak from the transport, so it never keeps the
/// host alive.
struct Up(std::sync::Weak<Shared>);

impl Upcalls for Up {
    /// A message off a TCP connection: accepted as any message, then
    /// queued to its router thread.
    fn incoming(&self, data: Bytes, src: Source) {
        let Some(sh) = self.0.upgrade() else { return };
        if let Some(w) = sh.accept(data, src) {
            let _ = sh.dispatch(w);
        }
    }

    fn send_failed(&self, id: u64, no: u32) {
        if let Some(sh) = self.0.upgrade() {
            sh.tm_op_id(id, |tm, now, out| tm.send_failed(id, no, now, out));
        }
    }
}

impl Shared {
    /// A message off the wire: parse, count, check, fix the Via of a
    /// request; the work for a router thread, or `None` when it was
    /// refused (logged; a bad request gets 400 when a reply can be
    /// routed).
    pub(crate) fn accept(self: &Arc<Self>, data: Bytes, src: Source) -> Option<Work> {
        let msg = match SipMessage::parse(data) {
            Ok(m) => m,
            Err(e) => {
                warn_limited!(peer = %src.remote, transport = %src.transport, error = %e, "dropping unparseable message");
                return None;
            }
        };
        if let Some(m) = msg.method() {
            self.counters.request(m);
        } else if let Some(code) = msg.status() {
            self.counters.reply_received(code);
        }
        if !msg.is_request() {
            if msg.call_id().is_err() {
                warn_limited!(peer = %src.remote, "dropping reply without Call-ID");
                return None;
            }
            if msg.top_via().is_err() {
                warn_limited!(peer = %src.remote, "dropping reply with a bad Via");
                return None;
            }
            return Some(Work::Reply(Box::new((msg, src))));
        }
        // The router reads headers as they arrived; the rewritten top Via
        // (received, rport) is for the replies and relays we build. The
        // Via check only reads the message, and the request is boxed
        // before the checks: a message and a request are large, and each
        // move of one is a copy (the moves this saves were 307 of 18,024
        // instructions per stateless request; bench/instructions.py).
        let req = match via_rewritten(&msg, &src) {
            Ok(None) => Box::new(Request::new(msg, src)),
            Ok(Some(fixed)) => Box::new(Request::with_original(fixed, msg, src)),
            Err(e) => {
                warn_limited!(peer = %src.remote, error = %e, "dropping request with a bad top Via");
                return None;
            }
        };
        if let Err((code, reason, e)) = check_request(req.msg()) {
            warn_limited!(peer = %req.source().remote, error = %e, code, "refusing malformed request");
            if req.msg().method() != Some(&Method::Ack) {
                let _ = SipHandle::from(Arc::clone(self)).sl_reply(&req, code.into(), reason);
            }
            return None;
        }
        Some(Work::Request(req))
    }
}
