//! The NATS side of the event socket: the same sends as the TCP clients
//! get, published on NATS subjects, so many SIP nodes and many application
//! workers share the load, and each worker's answer comes back to the node
//! that holds the call.
//!
//! One rule: `relay` publishes on `<prefix>.relay`,
//! `multicast(data, tag)` on `<prefix>.multicast.<tag>`,
//! `unicast(data, tag)` on `<prefix>.unicast.<tag>` (workers subscribe to it
//! in a queue group, so one of them gets each event). Every message carries
//! the reply subject `<prefix>.node.<node>`: a worker answers with its
//! client's `respond`, and the answer reaches [`NatsHandler::reply`] on
//! this node, which runs it as a TCP client's message would run.
//!
//! Nobody listening is known at once: a watched send (the script's async
//! sends when no TCP client took the event) gets the reply subject
//! `<prefix>.node.<node>.<n>`, a number of its own; when no subscriber
//! has the subject, the NATS server answers on that subject with an empty
//! message of status 503 ("no responders", a feature of the protocol's
//! headers that async-nats asks for on connect), and the node hands the
//! event's data to [`NatsHandler::no_responders`]. A worker's answer to
//! that subject is an ordinary reply.
//!
//! While the client is not connected, a send fails at once
//! ([`SendError::Disconnected`], counted): nothing waits in a buffer for
//! the next connection. The client reconnects by itself, with backoff
//! (50 ms doubling to 1.6 s between attempts, forever).
//!
//! The crate knows nothing of SIP or scripts: the program implements
//! [`NatsHandler`], whose methods run on threads of their own
//! (`nats-worker-N`), never on the I/O runtime.
//!
//! A send is put in the client's command queue by the thread that sends
//! (no task of ours in between).

mod config;
pub mod rpc;
mod start;
#[cfg(feature = "test-server")]
pub mod testing;

pub use config::{
    is_publish_subject, is_subscribe_subject, ConfigError, NatsSection, Secret, Subscribe,
};

use async_nats::{Client, ConnectOptions, ServerAddr};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use lograte::warn_limited;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use start::{connect, reconnect_delay, Bound, Nats};

/// Sends queued in the client for its connection task (the client's
/// command queue); past it a send fails at once ([`SendError::Busy`]).
const OUT_QUEUE: usize = 65_536;
/// Incoming messages queued for the `nats-worker` threads before the
/// subscriptions wait.
const IN_QUEUE: usize = 4_096;
/// How long a watched send's data is kept for a no-responders status
/// (which comes at once, or never).
const WATCH_TTL: Duration = Duration::from_secs(5);
/// Most watched sends kept at once; past it a send is not watched.
const WATCH_LIMIT: usize = 200_000;

/// Why a send was not handed to the NATS client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The client is not connected to a server now.
    #[error("not connected to a NATS server")]
    Disconnected,
    /// The client's queue of commands for its connection task is full.
    #[error("{OUT_QUEUE} NATS sends already queued")]
    Busy,
    /// Empty data is refused, as for the TCP clients.
    #[error("empty data")]
    EmptyData,
    /// The subject (or the tag in it) is not a NATS subject to publish to.
    #[error("bad subject {0:?}: dot-separated tokens, no wildcards or white space")]
    BadSubject(String),
    /// The client refused the message (larger than the server's
    /// `max_payload`, say).
    #[error("refused by the NATS client: {0}")]
    Refused(String),
    /// NATS is shut down.
    #[error("NATS is shut down")]
    Shutdown,
}

/// Which of the three sends: the subject is `<prefix>.relay`,
/// `<prefix>.multicast.<tag>` or `<prefix>.unicast.<tag>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendKind {
    /// To every worker listening on `<prefix>.relay`.
    Relay,
    /// To every worker listening on `<prefix>.multicast.<tag>`.
    Multicast,
    /// To one worker of the queue group on `<prefix>.unicast.<tag>`.
    Unicast,
}

/// Why NATS could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A value of `[nats]` is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The credentials file cannot be read.
    #[error("[nats] creds_file = {path:?}: {reason}")]
    Creds {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The client could not be set up.
    #[error("cannot start the NATS client: {0}")]
    Connect(String),
    /// A subscription could not be made.
    #[error("cannot subscribe to NATS subject {subject:?}: {reason}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// What went wrong.
        reason: String,
    },
    /// A thread could not be started.
    #[error("cannot start the {0} thread: {1}")]
    Thread(String, std::io::Error),
}

/// What NATS delivers to the program. Every method runs on one of the
/// `nats-worker-N` threads; a panic is caught and logged.
pub trait NatsHandler: Send + Sync + 'static {
    /// A worker thread has started (for per-thread state, a script VM).
    fn thread_started(&self, worker: usize) {
        let _ = worker;
    }
    /// A message arrived on this node's reply subject: a worker's answer.
    fn reply(&self, payload: &Bytes) {
        let _ = payload;
    }
    /// A watched send reached nobody (NATS had no responders): `data` is
    /// what was sent.
    fn no_responders(&self, data: &Bytes) {
        let _ = data;
    }
    /// A message arrived on a `[[nats.subscribe]]` subject (`subject` as
    /// configured, wildcards and all).
    fn message(&self, subject: &str, payload: &Bytes) {
        let _ = (subject, payload);
    }
}

/// What the NATS side has done since start, and whether it is connected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Connected to a server now.
    pub connected: bool,
    /// Connections made (the first one and each reconnection).
    pub connects: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Messages handed to the client.
    pub published: u64,
    /// Sends refused (disconnected, queue full, bad subject, empty).
    pub send_failed: u64,
    /// Of those, refused because the client was not connected.
    pub send_disconnected: u64,
    /// Watched sends that reached nobody.
    pub no_responders: u64,
    /// Answers received on the reply subject.
    pub replies: u64,
    /// Messages received on `[[nats.subscribe]]` subjects.
    pub messages: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connects: AtomicU64,
    disconnects: AtomicU64,
    published: AtomicU64,
    send_failed: AtomicU64,
    send_disconnected: AtomicU64,
    no_responders: AtomicU64,
    replies: AtomicU64,
    messages: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Out {
    subject: String,
    reply: Option<String>,
    data: Bytes,
}

enum Incoming {
    Reply(Bytes),
    NoResponders(Bytes),
    Message(Arc<str>, Bytes),
}

struct Shared {
    client: Client,
    servers: Vec<String>,
    prefix: String,
    node: String,
    /// `<prefix>.node.<node>`
    reply: String,
    watched: Mutex<HashMap<u64, (Bytes, Instant)>>,
    next_watch: AtomicU64,
    counters: Counters,
    /// `<server>: <cause>` of the last connection attempt that failed.
    last_error: Mutex<Option<String>>,
}

/// A cheap, cloneable handle to send over NATS from any thread. A send
/// never waits: it is put in the client's queue or refused at once.
#[derive(Clone)]
pub struct NatsHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for NatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsHandle")
            .field("node", &self.shared.node)
            .field("connected", &self.connected())
            .finish()
    }
}

impl NatsHandle {
    /// Whether the client is connected to a server now (a read of the
    /// client's state, no I/O).
    pub fn connected(&self) -> bool {
        self.shared.client.connection_state() == async_nats::connection::State::Connected
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// The subject prefix.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// `<prefix>.node.<node>`: where answers to this node go.
    pub fn reply_subject(&self) -> &str {
        &self.shared.reply
    }

    /// Publish `data` on `subject`, with `reply` as its reply subject if
    /// given (`KSR.nats.publish`).
    pub fn publish(
        &self,
        subject: &str,
        data: &[u8],
        reply: Option<&str>,
    ) -> Result<(), SendError> {
        let r = self.try_publish(subject, data, reply);
        self.count(&r);
        r
    }

    fn try_publish(
        &self,
        subject: &str,
        data: &[u8],
        reply: Option<&str>,
    ) -> Result<(), SendError> {
        if !is_publish_subject(subject) {
            return Err(SendError::BadSubject(subject.into()));
        }
        if let Some(r) = reply {
            if !is_publish_subject(r) {
                return Err(SendError::BadSubject(r.into()));
            }
        }
        self.queue(Out {
            subject: subject.into(),
            reply: reply.map(Into::into),
            data: Bytes::copy_from_slice(data),
        })
    }

    /// The evapi send `kind` of `data` (to `tag` for multicast and
    /// unicast), with this node's reply subject. `watch`: if nobody
    /// listens, hand `data` to [`NatsHandler::no_responders`].
    pub fn send(
        &self,
        kind: SendKind,
        data: &[u8],
        tag: &[u8],
        watch: bool,
    ) -> Result<(), SendError> {
        let r = self.try_send(kind, data, tag, watch);
        self.count(&r);
        r
    }

    fn try_send(
        &self,
        kind: SendKind,
        data: &[u8],
        tag: &[u8],
        watch: bool,
    ) -> Result<(), SendError> {
        if data.is_empty() {
            return Err(SendError::EmptyData);
        }
        let s = &*self.shared;
        let subject = match kind {
            SendKind::Relay => format!("{}.relay", s.prefix),
            SendKind::Multicast | SendKind::Unicast => {
                let tag = std::str::from_utf8(tag)
                    .ok()
                    .filter(|t| is_publish_subject(t))
                    .ok_or_else(|| {
                        SendError::BadSubject(String::from_utf8_lossy(tag).into_owned())
                    })?;
                let what = if kind == SendKind::Multicast {
                    "multicast"
                } else {
                    "unicast"
                };
                format!("{}.{what}.{tag}", s.prefix)
            }
        };
        if !self.connected() {
            return Err(SendError::Disconnected);
        }
        let data = Bytes::copy_from_slice(data);
        let watch = watch.then(|| self.watch(&data)).flatten();
        let reply = match watch {
            Some(n) => format!("{}.{n}", s.reply),
            None => s.reply.clone(),
        };
        let r = self.queue(Out {
            subject,
            reply: Some(reply),
            data,
        });
        if let (Err(_), Some(n)) = (&r, watch) {
            self.unwatch(n);
        }
        r
    }

    fn watch(&self, data: &Bytes) -> Option<u64> {
        let mut w = self
            .shared
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if w.len() >= WATCH_LIMIT {
            warn_limited!(
                limit = WATCH_LIMIT,
                "too many NATS sends watched for no responders; this one is not"
            );
            return None;
        }
        let n = self.shared.next_watch.fetch_add(1, Ordering::Relaxed);
        w.insert(n, (data.clone(), Instant::now()));
        Some(n)
    }

    fn unwatch(&self, n: u64) -> Option<Bytes> {
        let mut w = self
            .shared
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        w.remove(&n).map(|(d, _)| d)
    }

    /// Put `out` in the client's command queue now, from this thread:
    /// the client's connection task writes it at its next turn. Checked
    /// against the connection state here, so nothing waits in the
    /// client's queue for a connection to come back.
    fn queue(&self, out: Out) -> Result<(), SendError> {
        if !self.connected() {
            return Err(SendError::Disconnected);
        }
        let client = &self.shared.client;
        // The client's queue is a bounded channel: the send is ready at
        // once when there is room, pending (dropped here, nothing sent)
        // when it is full.
        let sent = match out.reply {
            Some(reply) => client
                .publish_with_reply(out.subject, reply, out.data)
                .now_or_never(),
            None => client.publish(out.subject, out.data).now_or_never(),
        };
        match sent {
            Some(Ok(())) => {
                bump(&self.shared.counters.published);
                Ok(())
            }
            Some(Err(e)) if e.kind() == async_nats::client::PublishErrorKind::Send => {
                Err(SendError::Shutdown)
            }
            Some(Err(e)) => Err(SendError::Refused(e.to_string())),
            None => Err(SendError::Busy),
        }
    }

    fn count(&self, r: &Result<(), SendError>) {
        let c = &self.shared.counters;
        match r {
            Ok(()) => {}
            Err(e) => {
                bump(&c.send_failed);
                if *e == SendError::Disconnected {
                    bump(&c.send_disconnected);
                }
                tracing::debug!(error = %e, "NATS send refused");
            }
        }
    }

    /// The counters, and the connection state now.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            connected: self.connected(),
            connects: get(&c.connects),
            disconnects: get(&c.disconnects),
            published: get(&c.published),
            send_failed: get(&c.send_failed),
            send_disconnected: get(&c.send_disconnected),
            no_responders: get(&c.no_responders),
            replies: get(&c.replies),
            messages: get(&c.messages),
        }
    }

    /// The servers configured.
    pub fn servers(&self) -> &[String] {
        &self.shared.servers
    }

    /// Why the last connection attempt that failed failed, with the
    /// server: `nats://nats1:4222: authorization violation: ...`. Kept
    /// after a later success (it is history, not state: see
    /// [`NatsHandle::connected`]).
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
