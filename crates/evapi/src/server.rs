//! The event socket itself: the listener, the two-phase start, shutdown. A
//! connection passes `admit` to become a client, then `connection` serves it.
//! Socket I/O runs on the caller's tokio runtime, and event handlers on
//! threads of their own: the dispatcher (connection-new, connection-closed)
//! and the workers (messages). They wait on channels that wake them when an
//! event is queued; nothing polls. With `workers` 0 the dispatcher thread
//! runs a runtime of its own with the listener and every connection, and
//! the handler inline as events are read (see `dispatcher_runtime`).

use crate::access::AllowList;
use crate::admit::{admit, claim_slot, framed, PendingSlot};
use crate::config::{Config, ConfigError};
use crate::connection::{dispatcher, run_message, serve, Dispatch, Senders};
use crate::handle::{bump, EvapiHandle, Shared};
use crate::handler::EventHandler;
use crate::registry::{CloseReason, InFlight};
use bytes::Bytes;
use lograte::warn_limited;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Most events queued for the dispatcher, and per worker, before readers
/// wait (so a flood of messages pushes back on its sender over TCP instead
/// of growing memory).
const QUEUE_PER_THREAD: usize = 1024;

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
    accept: Option<Accept>,
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
        let inline = workers == 0;
        if !inline {
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
            inline: inline.then(|| (handler.clone(), handle.clone())),
        };
        let stop = Arc::new(Notify::new());
        let connections = TaskTracker::new();
        let accept = if inline {
            let (t, done) = dispatcher_runtime(
                listener,
                gate,
                shared,
                senders,
                stop.clone(),
                connections.clone(),
                handler,
            )?;
            threads.push(t);
            Accept::Thread(done)
        } else {
            Accept::Task(tokio::spawn(accept_loop(
                listener,
                gate,
                shared,
                senders,
                stop.clone(),
                connections.clone(),
            )))
        };
        info!(%local_addr, workers, tls = config_tls, allow = ?allow_text, "event socket listening");
        Ok(EventSocket {
            handle,
            local_addr,
            stop,
            accept: Some(accept),
            connections,
            threads,
        })
    }
}

/// Where the accept loop runs: a task on the caller's runtime, or (with
/// `workers = 0`) the dispatcher's own thread, which says when it is done.
enum Accept {
    Task(tokio::task::JoinHandle<()>),
    Thread(oneshot::Receiver<()>),
}

/// `workers = 0`: the dispatcher thread runs a runtime of its own, with
/// the accept loop and every connection on it, and the handler inline
/// (Kamailio's dispatcher reads its clients and runs their events itself).
/// A slow handler holds back the event socket's clients, as there, but not
/// the caller's runtime (SIP over TCP, timers, the admin listener). The
/// thread ends once its connections have; `done` fires when the accept
/// loop stops.
fn dispatcher_runtime(
    listener: TcpListener,
    gate: Gate,
    shared: Arc<Shared>,
    senders: Senders,
    stop: Arc<Notify>,
    connections: TaskTracker,
    handler: Arc<dyn EventHandler>,
) -> Result<(std::thread::JoinHandle<()>, oneshot::Receiver<()>), StartError> {
    let name = "evapi-dispatcher";
    let thread_err = |e| StartError::Thread(name.into(), e);
    // Moved to the new runtime: deregistered from the caller's here.
    let listener = listener.into_std().map_err(thread_err)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(thread_err)?;
    let (done_tx, done_rx) = oneshot::channel();
    let t = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            handler.thread_started(None);
            drop(handler);
            rt.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => {
                        accept_loop(l, gate, shared, senders, stop, connections.clone()).await
                    }
                    Err(e) => warn!(error = %e, "event socket: the listener cannot be moved to the dispatcher; nobody is accepted"),
                }
                let _ = done_tx.send(());
                connections.wait().await;
            });
        })
        .map_err(thread_err)?;
    Ok((t, done_rx))
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
    /// for each, and wait for the dispatcher and workers to finish: at most
    /// 5 s; one still busy in the handler then is named in a warning and
    /// left behind, so shutdown never hangs on a stuck handler.
    pub async fn shutdown(mut self) {
        self.begin_stop();
        match self.accept.take() {
            Some(Accept::Task(t)) => {
                let _ = t.await;
            }
            Some(Accept::Thread(done)) => {
                let _ = done.await;
            }
            None => {}
        }
        for client in self.handle.shared.registry().all() {
            client.request_close(CloseReason::Shutdown);
        }
        self.connections.close();
        // A connection waits for its last message to be handled before
        // connection-closed; a handler stuck on one must not hang shutdown.
        if tokio::time::timeout(Duration::from_secs(5), self.connections.wait())
            .await
            .is_err()
        {
            warn!(
                "connections still waiting on a busy handler after 5 s at shutdown; leaving them"
            );
        }
        // The last senders went with the accept task and the connections,
        // so the threads see their channels end once they are drained.
        let mut threads = std::mem::take(&mut self.threads);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            threads.retain(|t| !t.is_finished());
            if threads.is_empty() || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for t in &threads {
            warn!(
                thread = t.thread().name().unwrap_or("?"),
                "event thread still busy after 5 s at shutdown (a handler that does not \
                 return); leaving it"
            );
        }
        info!(local_addr = %self.local_addr, "event socket stopped");
    }
}

impl Drop for EventSocket {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.begin_stop();
            for client in self.handle.shared.registry().all() {
                client.request_close(CloseReason::Shutdown);
            }
            // No new connection is waited for: with `workers = 0` the
            // dispatcher's thread ends once the open ones have.
            self.connections.close();
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
            let fd = stream.as_raw_fd();
            let (rd, wr) = stream.into_split();
            let frames = framed(&shared, rd);
            let served = serve(
                shared.clone(),
                client,
                frames,
                wr,
                senders.clone(),
                Some(fd),
            );
            connections.spawn(served);
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
