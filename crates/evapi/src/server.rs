//! The listener, one task per connection, the dispatcher and the workers.
//!
//! Socket I/O runs on the caller's tokio runtime. Event handlers run on
//! threads of their own: the dispatcher (connection-new, connection-closed,
//! and messages when `workers` is 0) and the workers (messages). They wait
//! on channels that wake them when an event is queued; nothing polls.

use crate::access::AllowList;
use crate::codec::{FrameCodec, NetstringCodec, NetstringError, RawCodec};
use crate::config::{Config, ConfigError};
use crate::handle::{bump, EvapiHandle, Shared};
use crate::handler::{Event, EventContext, EventHandler};
use crate::outbox::{WriteStop, Writer};
use crate::registry::{Client, CloseReason, InFlight};
use bytes::Bytes;
use futures_util::StreamExt;
use lograte::{error_limited, warn_limited};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio_util::codec::FramedRead;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Events queued for the dispatcher thread, in the order they happened.
enum Dispatch {
    New(Arc<Client>, oneshot::Sender<()>),
    Message(InFlight, Bytes),
    Closed(Arc<Client>, CloseReason),
}

/// Most events queued for the dispatcher, and per worker, before readers
/// wait (so a flood of messages pushes back on its sender over TCP instead
/// of growing memory).
const QUEUE_PER_THREAD: usize = 1024;

/// Initial read buffer of a connection; it grows to fit larger frames.
const READ_BUFFER: usize = 1024;

/// Why the event socket could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A parameter is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr} (bind_addr {bind_addr:?}): {reason}")]
    Bind {
        /// The address tried.
        addr: SocketAddr,
        /// The parameter as given.
        bind_addr: String,
        /// What the system said (in the message, so not also a `source`).
        reason: std::io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start the {0} thread: {1}")]
    Thread(String, std::io::Error),
    /// The TLS certificate, key or CA cannot be used.
    #[error("event socket TLS: {0}")]
    Tls(crate::tls::TlsError),
}

impl From<crate::tls::TlsError> for StartError {
    fn from(e: crate::tls::TlsError) -> Self {
        StartError::Tls(e)
    }
}

#[derive(Clone)]
struct Senders {
    dispatch: flume::Sender<Dispatch>,
    work: Option<flume::Sender<(InFlight, Bytes)>>,
}

/// A running event socket.
///
/// Created by [`EventSocket::bind`] inside a tokio runtime; sends go
/// through [`EventSocket::handle`]. [`EventSocket::shutdown`] stops it
/// cleanly; dropping it without that stops accepting and closes clients
/// without waiting.
pub struct EventSocket {
    handle: EvapiHandle,
    local_addr: SocketAddr,
    stop: Arc<Notify>,
    accept_task: Option<tokio::task::JoinHandle<()>>,
    connections: TaskTracker,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// An event socket that is bound but not yet serving: its [`EvapiHandle`]
/// exists (sends find no clients yet), so whatever needs the handle (a
/// script engine) can be built before the handler that runs its events.
///
/// Made by [`EventSocket::listen`]; [`BoundSocket::start`] begins
/// accepting. Dropping it closes the listener.
pub struct BoundSocket {
    listener: TcpListener,
    local_addr: SocketAddr,
    gate: Gate,
    handle: EvapiHandle,
}

impl std::fmt::Debug for BoundSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundSocket")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl EventSocket {
    /// Validate `config`, bind the listener, start the dispatcher and the
    /// workers, and begin accepting clients: [`EventSocket::listen`] then
    /// [`BoundSocket::start`].
    pub async fn bind(
        config: Config,
        handler: Arc<dyn EventHandler>,
    ) -> Result<EventSocket, StartError> {
        EventSocket::listen(config).await?.start(handler)
    }

    /// Validate `config`, load the TLS files and bind the listener, without
    /// accepting anyone yet. The first phase of a two-phase start: every
    /// configuration error is reported here, before any thread runs.
    pub async fn listen(config: Config) -> Result<BoundSocket, StartError> {
        config.validate()?;
        let mut listener = None;
        let mut last_err = None;
        for addr in config.bind_addrs()? {
            match listen(addr) {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(e) => last_err = Some((addr, e)),
            }
        }
        let listener = match (listener, last_err) {
            (Some(l), _) => l,
            (None, Some((addr, reason))) => {
                return Err(StartError::Bind {
                    addr,
                    bind_addr: config.bind_addr.clone(),
                    reason,
                })
            }
            (None, None) => unreachable!("bind_addrs returns at least one address"),
        };
        let local_addr = listener.local_addr().map_err(|reason| StartError::Bind {
            addr: "0.0.0.0:0".parse().expect("valid"),
            bind_addr: config.bind_addr.clone(),
            reason,
        })?;
        let allow = AllowList::parse(&config.allow_networks).map_err(|e| {
            StartError::Config(ConfigError {
                param: "allow_networks",
                value: format!("{:?}", config.allow_networks),
                reason: e.to_string(),
            })
        })?;
        let tls = if config.tls_enabled() {
            let client_ca = (!config.tls_client_ca.is_empty())
                .then(|| std::path::Path::new(&config.tls_client_ca));
            let server = crate::tls::server_config(
                std::path::Path::new(&config.tls_cert),
                std::path::Path::new(&config.tls_key),
                client_ca,
            )?;
            Some(tokio_rustls::TlsAcceptor::from(server))
        } else {
            None
        };
        if !local_addr.ip().is_loopback()
            && !allow.is_restrictive()
            && config.tls_client_ca.is_empty()
        {
            warn!(
                %local_addr,
                "event socket listens beyond loopback with no allow_networks and no tls_client_ca: \
                 any host that reaches it can connect and steer calls"
            );
        }

        let handle = EvapiHandle {
            shared: Arc::new(Shared::new(config)),
        };
        Ok(BoundSocket {
            listener,
            local_addr,
            gate: Gate { allow, tls },
            handle,
        })
    }
}

impl BoundSocket {
    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The handle the running socket will use; valid from now on.
    pub fn handle(&self) -> EvapiHandle {
        self.handle.clone()
    }

    /// Start the dispatcher and the workers, which run `handler`, and begin
    /// accepting clients. The handle does not keep `handler` alive: the
    /// threads own it and drop it at shutdown, so a handler that holds the
    /// handle makes no reference cycle.
    pub fn start(self, handler: Arc<dyn EventHandler>) -> Result<EventSocket, StartError> {
        let BoundSocket {
            listener,
            local_addr,
            gate,
            handle,
        } = self;
        let shared = handle.shared.clone();
        let workers = shared.config.workers;
        let config_tls = gate.tls.is_some();
        let allow_text = shared.config.allow_networks.clone();
        let mut threads = Vec::new();
        let (dispatch_tx, dispatch_rx) = flume::bounded::<Dispatch>(QUEUE_PER_THREAD);
        let work_tx = if workers > 0 {
            let (tx, rx) = flume::bounded::<(InFlight, Bytes)>(QUEUE_PER_THREAD * workers);
            for n in 0..workers {
                let rx = rx.clone();
                let handler = handler.clone();
                let handle = handle.clone();
                let name = format!("evapi-worker-{n}");
                let t = std::thread::Builder::new()
                    .name(name.clone())
                    .spawn(move || {
                        handler.thread_started(Some(n));
                        for (client, msg) in rx.iter() {
                            run_message(&*handler, &handle, &client.0, &msg);
                        }
                    })
                    .map_err(|e| StartError::Thread(name, e))?;
                threads.push(t);
            }
            Some(tx)
        } else {
            None
        };
        {
            let handler = handler.clone();
            let handle = handle.clone();
            let t = std::thread::Builder::new()
                .name("evapi-dispatcher".into())
                .spawn(move || dispatcher(&*handler, &handle, dispatch_rx))
                .map_err(|e| StartError::Thread("evapi-dispatcher".into(), e))?;
            threads.push(t);
        }

        let senders = Senders {
            dispatch: dispatch_tx,
            work: work_tx,
        };
        let stop = Arc::new(Notify::new());
        let connections = TaskTracker::new();
        let accept_task = tokio::spawn(accept_loop(
            listener,
            gate,
            shared,
            senders,
            stop.clone(),
            connections.clone(),
        ));
        info!(%local_addr, workers, tls = config_tls, allow = ?allow_text, "event socket listening");
        Ok(EventSocket {
            handle,
            local_addr,
            stop,
            accept_task: Some(accept_task),
            connections,
            threads,
        })
    }
}

impl EventSocket {
    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to send to clients and read counts, for any thread.
    pub fn handle(&self) -> EvapiHandle {
        self.handle.clone()
    }

    fn begin_stop(&self) {
        let shared = &self.handle.shared;
        shared.shutting_down.store(true, Ordering::Release);
        shared.stop.send_replace(true);
        self.stop.notify_one();
    }

    /// Stop accepting, write what is queued to each client (at most
    /// `shutdown_flush_ms`), close every connection, run connection-closed
    /// for each, and wait for the dispatcher and workers to finish.
    pub async fn shutdown(mut self) {
        self.begin_stop();
        if let Some(t) = self.accept_task.take() {
            let _ = t.await;
        }
        for client in self.handle.shared.registry().all() {
            client.request_close(CloseReason::Shutdown);
        }
        self.connections.close();
        self.connections.wait().await;
        // The last senders went with the accept task and the connections,
        // so the threads see their channels end once they are drained.
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        info!(local_addr = %self.local_addr, "event socket stopped");
    }
}

impl Drop for EventSocket {
    fn drop(&mut self) {
        if self.accept_task.is_some() {
            self.begin_stop();
            for client in self.handle.shared.registry().all() {
                client.request_close(CloseReason::Shutdown);
            }
        }
    }
}

/// Pending connections the kernel may hold for us (the system default is
/// often 128, which drops SYNs in a connection storm).
const LISTEN_BACKLOG: u32 = 1024;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv6() {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What a new connection must pass before it is a client.
struct Gate {
    allow: AllowList,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

async fn accept_loop(
    listener: TcpListener,
    gate: Gate,
    shared: Arc<Shared>,
    senders: Senders,
    stop: Arc<Notify>,
    connections: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.notified() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather
                // than spin on an error that will repeat at once.
                warn_limited!(error = %e, "accept failed");
                tokio::select! {
                    _ = stop.notified() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                continue;
            }
        };
        if !gate.allow.allows(peer.ip()) {
            bump(&shared.counters.denied);
            warn_limited!(%peer, "client refused: its address is not in allow_networks");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        if gate.tls.is_none() && !shared.config.auth_enabled() {
            // Nothing to wait for: the connection is a client now or never.
            let Some(client) = claim_slot(&shared, peer) else {
                continue;
            };
            let (rd, wr) = stream.into_split();
            let frames = framed(&shared, rd);
            connections.spawn(serve(shared.clone(), client, frames, wr, senders.clone()));
            continue;
        }
        let Some(pending) = PendingSlot::enter(&shared) else {
            bump(&shared.counters.refused);
            warn_limited!(
                %peer,
                limit = shared.config.max_pending(),
                "connection refused: too many connections still in their TLS handshake or auth"
            );
            continue;
        };
        connections.spawn(admit(
            shared.clone(),
            stream,
            peer,
            senders.clone(),
            gate.tls.clone(),
            pending,
        ));
    }
}

/// Take a `max_clients` slot for a connection from `peer`, or refuse it
/// (logged and counted) when all are taken.
fn claim_slot(shared: &Shared, peer: SocketAddr) -> Option<Arc<Client>> {
    let max = shared.config.max_clients;
    let client = {
        let mut reg = shared.registry_mut();
        reg.next_index(max).map(|conidx| {
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            let c = Arc::new(Client::new(
                id,
                conidx,
                peer,
                shared.config.client_queue_limit,
            ));
            reg.insert(c.clone());
            c
        })
    };
    match &client {
        Some(c) => {
            bump(&shared.counters.accepted);
            info!(conidx = c.conidx, %peer, "client connected");
        }
        None => {
            bump(&shared.counters.refused);
            warn_limited!(%peer, max_clients = max, "client refused: max_clients reached");
        }
    }
    client
}

/// Frames read from a client's byte stream, in the configured format.
fn framed<S: AsyncRead>(shared: &Shared, stream: S) -> FramedRead<S, FrameCodec> {
    let codec = if shared.config.netstring_format == 1 {
        FrameCodec::Netstring(NetstringCodec::new(shared.config.max_frame_size))
    } else {
        FrameCodec::Raw(RawCodec::new(shared.config.max_frame_size))
    };
    FramedRead::with_capacity(stream, codec, READ_BUFFER)
}

/// One of the `max_pending` places of connections that are not clients
/// yet; given back when dropped, whatever ends the wait.
struct PendingSlot(Arc<Shared>);

impl PendingSlot {
    fn enter(shared: &Arc<Shared>) -> Option<PendingSlot> {
        let limit = shared.config.max_pending();
        shared
            .pending_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| PendingSlot(shared.clone()))
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.0.pending_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection that must pass the TLS handshake or send `auth_token`
/// before it is a client: neither takes a `max_clients` slot, and
/// connection-new runs only once both are passed. Shutdown ends the wait.
async fn admit(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    senders: Senders,
    tls: Option<tokio_rustls::TlsAcceptor>,
    pending: PendingSlot,
) {
    let mut stop = shared.stop.subscribe();
    let stopped = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let Some(acceptor) = tls else {
        let admitted = tokio::select! {
            a = authenticate(&shared, stream, peer) => a,
            _ = stopped => None,
        };
        drop(pending);
        if let Some((client, frames, wr)) = admitted {
            serve(shared, client, frames, wr, senders).await;
        }
        return;
    };
    let limit = Duration::from_millis(shared.config.tls_handshake_timeout_ms);
    let handshake_then_auth = async {
        match tokio::time::timeout(limit, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => authenticate(&shared, tls, peer).await,
            failure => {
                let reason = match failure {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no handshake within {} ms", limit.as_millis()),
                };
                bump(&shared.counters.tls_failures);
                warn_limited!(%peer, %reason, "connection dropped: TLS handshake failed");
                None
            }
        }
    };
    let admitted = tokio::select! {
        a = handshake_then_auth => a,
        _ = stopped => None,
    };
    drop(pending);
    if let Some((client, frames, wr)) = admitted {
        serve(shared, client, frames, wr, senders).await;
    }
}

/// A client ready to serve: its slot, its reader, its writer half.
type Admitted<S> = (
    Arc<Client>,
    FramedRead<<S as SplitStream>::Read, FrameCodec>,
    <S as SplitStream>::Write,
);

/// A client's stream, split into halves for its reader and its writer:
/// owned halves for TCP (no lock on the hot path), `tokio::io::split` for
/// TLS, whose two directions share one session.
trait SplitStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type Read: AsyncRead + Unpin + Send;
    type Write: AsyncWrite + Unpin + Send;
    fn halves(self) -> (Self::Read, Self::Write);
}

impl SplitStream for TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn halves(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl SplitStream for tokio_rustls::server::TlsStream<TcpStream> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// Wait for `auth_token` when one is set, then claim a slot.
async fn authenticate<S: SplitStream>(
    shared: &Shared,
    stream: S,
    peer: SocketAddr,
) -> Option<Admitted<S>> {
    let (rd, wr) = stream.halves();
    let mut frames = framed(shared, rd);
    if shared.config.auth_enabled() {
        let limit = Duration::from_millis(shared.config.auth_timeout_ms);
        let first = tokio::time::timeout(limit, async {
            loop {
                match frames.next().await {
                    Some(Ok(m)) if m.is_empty() => continue, // keep-alive
                    other => return other,
                }
            }
        })
        .await;
        let failure = match first {
            Ok(Some(Ok(m))) if shared.config.auth_token.matches(&m) => None,
            Ok(Some(Ok(_))) => Some("its first message is not the auth_token".to_string()),
            Ok(Some(Err(e))) => Some(e.to_string()),
            Ok(None) => Some("closed before sending the auth_token".to_string()),
            Err(_) => Some(format!("no auth_token within {} ms", limit.as_millis())),
        };
        if let Some(reason) = failure {
            bump(&shared.counters.auth_failures);
            warn_limited!(%peer, %reason, "connection dropped: not authenticated");
            return None;
        }
    }
    // The same reader goes on: bytes that came after the token are in it.
    claim_slot(shared, peer).map(|client| (client, frames, wr))
}

/// Run one client's connection: connection-new, then reading and writing
/// until it ends, then connection-closed.
async fn serve<R, W>(
    shared: Arc<Shared>,
    client: Arc<Client>,
    mut frames: FramedRead<R, FrameCodec>,
    wr: W,
    senders: Senders,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mut writer = Writer::new(wr);

    // connection-new runs before anything of the client is read.
    let (done_tx, done_rx) = oneshot::channel();
    let reason = if senders
        .dispatch
        .send_async(Dispatch::New(client.clone(), done_tx))
        .await
        .is_err()
        || done_rx.await.is_err()
    {
        CloseReason::Shutdown
    } else if let Some(reason) = client.close_reason() {
        reason
    } else {
        let timeout = shared.config.send_data_timeout();
        tokio::select! {
            r = read_loop(&mut frames, &shared, &client, &senders) => r,
            w = writer.run(&client.outbox, timeout) => match w {
                WriteStop::Closed => client.close_reason().unwrap_or(CloseReason::Shutdown),
                WriteStop::Timeout(t) => CloseReason::SendTimeout(t),
                WriteStop::Io(e) => CloseReason::Io(e.to_string()),
            },
            r = client.closed() => r,
        }
    };
    client.request_close(reason.clone());
    // The slot is free at once, before any flush below: a client that has
    // gone must not keep the next one out.
    shared.registry_mut().remove(client.conidx, client.id);

    // On a clean close (shutdown, or close() by the handler), what was
    // queued before it still goes out, within a bound. After a failed or
    // timed-out write nothing more is written: a frame cut short is never
    // followed by another.
    if matches!(reason, CloseReason::Shutdown | CloseReason::Closed) {
        let bound = Duration::from_millis(shared.config.shutdown_flush_ms);
        let timeout = shared.config.send_data_timeout();
        let flushed = tokio::time::timeout(bound, writer.flush(&client.outbox, timeout)).await;
        if !matches!(flushed, Ok(Ok(()))) {
            debug!(conidx = client.conidx, peer = %client.peer, mid_frame = writer.mid_frame(), "queued frames not all written before close");
        }
    }
    client.outbox.close();
    let mut wr = writer.into_inner();
    let _ = tokio::time::timeout(Duration::from_millis(100), wr.shutdown()).await;
    drop(wr);

    bump(&shared.counters.closed);
    match &reason {
        CloseReason::QueueLimit(_) | CloseReason::SendTimeout(_) => {
            bump(&shared.counters.slow_cut);
            warn_limited!(conidx = client.conidx, peer = %client.peer, %reason, "client cut");
        }
        CloseReason::Protocol(_) => {
            bump(&shared.counters.protocol_errors);
            warn_limited!(conidx = client.conidx, peer = %client.peer, %reason, "client closed");
        }
        _ => info!(conidx = client.conidx, peer = %client.peer, %reason, "client disconnected"),
    }
    // connection-closed runs once, whatever ended the connection, after the
    // connection's last message-received. The dispatcher outlives every
    // connection task, so this send only fails if its thread died, and then
    // there is nobody left to tell.
    client.messages_drained().await;
    let _ = senders
        .dispatch
        .send_async(Dispatch::Closed(client, reason))
        .await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    frames: &mut FramedRead<R, FrameCodec>,
    shared: &Shared,
    client: &Arc<Client>,
    senders: &Senders,
) -> CloseReason {
    loop {
        let msg = match frames.next().await {
            None => return CloseReason::PeerClosed,
            Some(Err(NetstringError::Io(e))) => return CloseReason::Io(e.to_string()),
            Some(Err(e)) => return CloseReason::Protocol(e.to_string()),
            Some(Ok(msg)) => msg,
        };
        if msg.is_empty() {
            continue; // `0:,` keep-alive
        }
        bump(&shared.counters.messages_received);
        let ticket = InFlight::new(client);
        let queued = match &senders.work {
            Some(work) => work.send_async((ticket, msg)).await.is_ok(),
            None => senders
                .dispatch
                .send_async(Dispatch::Message(ticket, msg))
                .await
                .is_ok(),
        };
        if !queued {
            return CloseReason::Shutdown;
        }
    }
}

fn dispatcher(handler: &dyn EventHandler, handle: &EvapiHandle, rx: flume::Receiver<Dispatch>) {
    handler.thread_started(None);
    for event in rx.iter() {
        match event {
            Dispatch::New(client, done) => {
                let ctx = EventContext {
                    event: Event::ConnectionNew,
                    client: &client,
                    handle,
                    message: None,
                    reason: None,
                };
                guarded(Event::ConnectionNew, &client, || {
                    handler.connection_new(&ctx)
                });
                let _ = done.send(());
            }
            Dispatch::Message(client, msg) => run_message(handler, handle, &client.0, &msg),
            Dispatch::Closed(client, reason) => {
                let ctx = EventContext {
                    event: Event::ConnectionClosed,
                    client: &client,
                    handle,
                    message: None,
                    reason: Some(&reason),
                };
                guarded(Event::ConnectionClosed, &client, || {
                    handler.connection_closed(&ctx)
                });
            }
        }
    }
}

fn run_message(
    handler: &dyn EventHandler,
    handle: &EvapiHandle,
    client: &Arc<Client>,
    msg: &Bytes,
) {
    let ctx = EventContext {
        event: Event::MessageReceived,
        client,
        handle,
        message: Some(msg),
        reason: None,
    };
    guarded(Event::MessageReceived, client, || {
        handler.message_received(&ctx)
    });
}

/// Run a handler; a panic is logged and the thread goes on.
fn guarded(event: Event, client: &Client, f: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(f)) {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        error_limited!(%event, conidx = client.conidx, peer = %client.peer, panic = %what, "event handler panicked");
    }
}
