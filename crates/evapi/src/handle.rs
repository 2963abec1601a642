//! Sending to clients from any thread: relay, multicast, unicast.

use crate::config::Config;
use crate::handler::{check_tag, TagError};
use crate::outbox::{ChunkPool, FanoutLog, Frame, PendingRelays, Push};
use crate::registry::{Client, CloseReason, Pick, Registry};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Why a relay was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Empty event data is refused (as in the original).
    #[error("empty event data")]
    EmptyData,
    /// The tag is empty or too long.
    #[error("bad tag: {0}")]
    BadTag(TagError),
    /// `context_mlimit` relays are pending and `send_task_timeout` is 0.
    #[error("dropping message: {limit} relays already pending (context_mlimit)")]
    QueueFull {
        /// The configured `context_mlimit`.
        limit: usize,
    },
    /// `context_mlimit` relays stayed pending for all of `send_task_timeout`.
    #[error("dropping message: no room among {limit} pending relays within {} µs (send_task_timeout)", .waited.as_micros())]
    TaskTimeout {
        /// The configured `context_mlimit`.
        limit: usize,
        /// How long the relay waited.
        waited: Duration,
    },
    /// The event socket is shutting down or has shut down.
    #[error("the event socket is shut down")]
    Shutdown,
}

/// The three ways to send to clients, as counted in
/// [`Stats::relays_by_kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayKind {
    /// To every client ([`EvapiHandle::relay`]).
    Relay = 0,
    /// To every client of a tag ([`EvapiHandle::multicast`]).
    Multicast = 1,
    /// To one client of a tag ([`EvapiHandle::unicast`],
    /// [`EvapiHandle::unicast_round_robin`]).
    Unicast = 2,
}

impl RelayKind {
    /// All kinds, in slot order.
    pub const ALL: [RelayKind; 3] = [RelayKind::Relay, RelayKind::Multicast, RelayKind::Unicast];

    /// Its name, as in the metrics label: `relay`, `multicast`, `unicast`.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayKind::Relay => "relay",
            RelayKind::Multicast => "multicast",
            RelayKind::Unicast => "unicast",
        }
    }
}

/// Counters of what the event socket has done since it started, and a few
/// gauges read when asked (`connected`, `pending_relays`,
/// `max_queued_bytes`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Clients connected now.
    pub connected: u64,
    /// Clients accepted since start.
    pub accepted: u64,
    /// Clients refused because `max_clients` were connected.
    pub refused: u64,
    /// Clients refused because their address is not in `allow_networks`.
    pub denied: u64,
    /// Clients dropped because their TLS handshake failed or timed out.
    pub tls_failures: u64,
    /// Connections dropped because they did not send `auth_token` in time.
    pub auth_failures: u64,
    /// Connections ended (connection-closed has run or is about to).
    pub closed: u64,
    /// Clients cut for being slow (queue limit or send_data_timeout).
    pub slow_cut: u64,
    /// Connections closed for malformed or oversized input.
    pub protocol_errors: u64,
    /// Messages received from clients (keep-alives not counted).
    pub messages_received: u64,
    /// Relay, multicast and unicast calls that were accepted.
    pub relays: u64,
    /// The same, by [`RelayKind`] slot.
    pub relays_by_kind: [u64; 3],
    /// Relay calls refused (empty data, bad tag, queue full, shutdown).
    pub relays_failed: u64,
    /// Of those, refused because `context_mlimit` relays were pending
    /// (at once, or after `send_task_timeout`).
    pub mlimit_refused: u64,
    /// Frames queued to clients (one relay to n clients counts n).
    pub frames_queued: u64,
    /// Frames written whole to clients' sockets (small frames, copied one
    /// after another into a client's buffer, are counted when that buffer
    /// has been written out).
    pub frames_written: u64,
    /// Bytes written to clients' sockets.
    pub bytes_written: u64,
    /// Relays pending now (tracked only with `context_mlimit`).
    pub pending_relays: u64,
    /// The largest number of bytes queued for one client now.
    pub max_queued_bytes: u64,
}

/// Relaxed atomics, bumped from any thread. Aligned to their own cache
/// lines, apart from the registry's lock beside them in [`Shared`].
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Counters {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub denied: AtomicU64,
    pub tls_failures: AtomicU64,
    pub auth_failures: AtomicU64,
    pub closed: AtomicU64,
    pub slow_cut: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub messages_received: AtomicU64,
    pub relays: [AtomicU64; 3],
    pub relays_failed: AtomicU64,
    pub mlimit_refused: AtomicU64,
    pub frames_queued: AtomicU64,
    pub frames_written: AtomicU64,
    pub bytes_written: AtomicU64,
}

impl Counters {
    /// A writer's system call wrote `bytes`, completing `frames`.
    pub fn written(&self, frames: u64, bytes: usize) {
        self.frames_written.fetch_add(frames, Ordering::Relaxed);
        self.bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// State shared by the listener, the connections, the threads and handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    registry: RwLock<Registry>,
    pub pending: Arc<PendingRelays>,
    /// Copy buffers for the clients' queues, reused.
    pub chunks: Arc<ChunkPool>,
    /// Small frames relayed to every client, read by all their writers.
    pub log: Arc<FanoutLog>,
    pub counters: Counters,
    pub next_id: AtomicU64,
    /// Connections in their TLS handshake or auth, not clients yet.
    pub pending_connections: AtomicUsize,
    /// Becomes true when shutdown begins: connections that are not clients
    /// yet stop waiting.
    pub stop: tokio::sync::watch::Sender<bool>,
    pub shutting_down: AtomicBool,
}

impl Shared {
    pub fn new(config: Config) -> Self {
        Shared {
            config,
            registry: RwLock::new(Registry::default()),
            pending: Arc::new(PendingRelays::default()),
            chunks: Arc::default(),
            log: Arc::default(),
            counters: Counters::default(),
            next_id: AtomicU64::new(1),
            pending_connections: AtomicUsize::new(0),
            stop: tokio::sync::watch::Sender::new(false),
            shutting_down: AtomicBool::new(false),
        }
    }

    pub fn registry(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn registry_mut(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_tag(&self, client: &Client, tag: Bytes) -> bool {
        self.registry_mut().set_tag(client.conidx, client.id, tag)
    }
}

/// One connected client, as listed by [`EvapiHandle::clients`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// Connection index.
    pub conidx: usize,
    /// Unique connection number.
    pub connection_id: u64,
    /// Address and port of the client.
    pub peer: SocketAddr,
    /// Its tag, if set.
    pub tag: Option<Bytes>,
    /// Bytes queued for it and not yet written.
    pub queued_bytes: usize,
    /// When it connected.
    pub connected_at: std::time::SystemTime,
    /// Messages received from it (keep-alives not counted).
    pub frames_in: u64,
    /// Bytes of those messages (payload, without framing).
    pub bytes_in: u64,
    /// Frames written to it whole.
    pub frames_out: u64,
    /// Bytes written to it (framing included).
    pub bytes_out: u64,
}

/// A cheap, cloneable handle to send to the clients of an event socket from
/// any thread, async or not.
///
/// Sending never waits on a client's socket: the data is framed once, and
/// queued for every recipient (a small frame copied into each recipient's
/// buffer, a large one shared by reference); each connection's writer
/// does the I/O. The only wait is the one asked for by `send_task_timeout`
/// when `context_mlimit` relays are already pending.
#[derive(Debug, Clone)]
pub struct EvapiHandle {
    pub(crate) shared: Arc<Shared>,
}

impl EvapiHandle {
    /// Send `data` to every connected client. Returns how many clients it
    /// was queued for (0 when none is connected).
    pub fn relay(&self, data: &[u8]) -> Result<usize, SendError> {
        self.send(data, None, Pick::All, RelayKind::Relay)
    }

    /// Send `data` to every client whose tag is exactly `tag`.
    pub fn multicast(&self, data: &[u8], tag: &[u8]) -> Result<usize, SendError> {
        self.send(data, Some(tag), Pick::All, RelayKind::Multicast)
    }

    /// Send `data` to the first client (lowest connection index) whose tag
    /// is `tag`, as the original does. Returns 0 or 1.
    pub fn unicast(&self, data: &[u8], tag: &[u8]) -> Result<usize, SendError> {
        self.send(data, Some(tag), Pick::First, RelayKind::Unicast)
    }

    /// Send `data` to one client of `tag`, taking them in turn, so the load
    /// is spread over all of them. Returns 0 or 1.
    pub fn unicast_round_robin(&self, data: &[u8], tag: &[u8]) -> Result<usize, SendError> {
        self.send(data, Some(tag), Pick::RoundRobin, RelayKind::Unicast)
    }

    fn send(
        &self,
        data: &[u8],
        tag: Option<&[u8]>,
        pick: Pick,
        kind: RelayKind,
    ) -> Result<usize, SendError> {
        let result = self.try_send(data, tag, pick);
        let c = &self.shared.counters;
        match &result {
            Ok(_) => bump(&c.relays[kind as usize]),
            Err(e) => {
                bump(&c.relays_failed);
                if matches!(
                    e,
                    SendError::QueueFull { .. } | SendError::TaskTimeout { .. }
                ) {
                    bump(&c.mlimit_refused);
                }
                tracing::debug!(error = %e, "relay refused");
            }
        }
        result
    }

    fn try_send(&self, data: &[u8], tag: Option<&[u8]>, pick: Pick) -> Result<usize, SendError> {
        let shared = &*self.shared;
        if data.is_empty() {
            return Err(SendError::EmptyData);
        }
        if let Some(tag) = tag {
            check_tag(tag).map_err(SendError::BadTag)?;
        }
        if shared.shutting_down.load(Ordering::Acquire) {
            return Err(SendError::Shutdown);
        }
        let limit = shared.config.context_mlimit;
        let pending = if limit > 0 {
            let wait = shared.config.send_task_timeout();
            let slot = shared.pending.acquire(limit, wait).ok_or(match wait {
                None => SendError::QueueFull { limit },
                Some(waited) => SendError::TaskTimeout { limit, waited },
            })?;
            Some(Arc::new(slot))
        } else {
            None
        };
        let frame = Frame::new(data, shared.config.netstring_format == 1, pending);
        let log = crate::frame_log::enabled();
        let registry = shared.registry();
        // A relay to one client may be written to its socket at once (see
        // `Outbox::deliver`); one to several is queued for their writers,
        // so the relaying thread never makes a system call per recipient.
        let alone = match (tag, pick) {
            (None, _) => registry.count() == 1,
            (Some(_), Pick::First | Pick::RoundRobin) => true,
            (Some(tag), Pick::All) => registry.tag_count(tag) == 1,
        };
        let deliver = |client: &Client| match client.outbox.deliver(&frame, alone, &shared.counters)
        {
            Push::Queued => {
                if log {
                    crate::frame_log::queued(client, data);
                }
                true
            }
            Push::Closed => false,
            Push::Overflow => {
                client.request_close(CloseReason::QueueLimit(shared.config.client_queue_limit));
                false
            }
        };
        let sent = match tag {
            // A small frame to every client (of several) is appended once
            // to the fan-out log that all their writers read (unless each
            // recipient is to be logged).
            None if !alone && !log && matches!(frame, Frame::Small { .. }) => {
                shared.log.append(&frame, |end| {
                    // The log would pass some client's limit: look at each.
                    let mut room = u64::MAX;
                    for c in registry.all() {
                        match c.outbox.log_room(end) {
                            Some(r) => room = room.min(r),
                            None => c.request_close(CloseReason::QueueLimit(
                                shared.config.client_queue_limit,
                            )),
                        }
                    }
                    room
                })
            }
            None => registry.all().filter(|c| deliver(c)).count(),
            Some(tag) => registry.for_tag(tag, pick, |c| deliver(c)),
        };
        drop(registry);
        shared
            .counters
            .frames_queued
            .fetch_add(sent as u64, Ordering::Relaxed);
        Ok(sent)
    }

    /// Clients connected now.
    pub fn client_count(&self) -> usize {
        self.shared.registry().count()
    }

    /// Clients connected now whose tag is exactly `tag`.
    pub fn tag_count(&self, tag: &[u8]) -> usize {
        self.shared.registry().tag_count(tag)
    }

    /// The connected clients, in connection index order.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.shared
            .registry()
            .all_with_tags()
            .map(|(c, tag)| ClientInfo {
                conidx: c.conidx,
                connection_id: c.id,
                peer: c.peer,
                tag: tag.cloned(),
                queued_bytes: c.outbox.queued_bytes(),
                connected_at: c.connected_at,
                frames_in: c.frames_in.load(Ordering::Relaxed),
                bytes_in: c.bytes_in.load(Ordering::Relaxed),
                frames_out: c.outbox.frames_written(),
                bytes_out: c.outbox.bytes_written(),
            })
            .collect()
    }

    /// Close the client at connection index `conidx`, as an operator
    /// (`evapi.close`): what is queued for it is still written (within
    /// the shutdown flush bound), then connection-closed runs as for any
    /// close. Returns its address, or `None` when no client has that
    /// index.
    pub fn close_client(&self, conidx: usize) -> Option<SocketAddr> {
        let registry = self.shared.registry();
        let client = registry.client(conidx)?;
        client.request_close(CloseReason::Operator);
        Some(client.peer)
    }

    /// Relays pending now: framed, and not yet written to every recipient.
    /// Tracked only when `context_mlimit` is set; 0 otherwise.
    pub fn pending_relays(&self) -> usize {
        self.shared.pending.count()
    }

    /// The largest number of bytes queued for one client now (0 with no
    /// client): a walk over the clients, for a scrape, not a hot path.
    pub fn max_queued_bytes(&self) -> usize {
        self.shared
            .registry()
            .all()
            .map(|c| c.outbox.queued_bytes())
            .max()
            .unwrap_or(0)
    }

    /// The counters, and the gauges read now.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let relays_by_kind = std::array::from_fn(|i| get(&c.relays[i]));
        Stats {
            connected: self.client_count() as u64,
            accepted: get(&c.accepted),
            refused: get(&c.refused),
            denied: get(&c.denied),
            tls_failures: get(&c.tls_failures),
            auth_failures: get(&c.auth_failures),
            closed: get(&c.closed),
            slow_cut: get(&c.slow_cut),
            protocol_errors: get(&c.protocol_errors),
            messages_received: get(&c.messages_received),
            relays: relays_by_kind.iter().sum(),
            relays_by_kind,
            relays_failed: get(&c.relays_failed),
            mlimit_refused: get(&c.mlimit_refused),
            frames_queued: get(&c.frames_queued),
            frames_written: get(&c.frames_written),
            bytes_written: get(&c.bytes_written),
            pending_relays: self.pending_relays() as u64,
            max_queued_bytes: self.max_queued_bytes() as u64,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }
}
