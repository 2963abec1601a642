//! The listener: bind, accept, refuse peers outside the allowed networks
//! and connections past the limit, serve each connection with hyper, stop.

use crate::config::{ConfigError, HttpConfig};
use crate::routes;
use hostaddr::network::AllowList;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use lograte::warn_limited;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info};

/// Renders the `GET /metrics` text (Prometheus exposition format). Called
/// off the I/O threads, once per scrape.
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;

/// What the listener serves: the program's parts it answers from.
#[derive(Clone)]
pub struct Services {
    /// The methods of `POST /RPC`.
    pub rpc: Arc<rpc::Registry>,
    /// The text of `GET /metrics`.
    pub metrics: MetricsFn,
    /// The program's version, shown by `GET /health`.
    pub version: &'static str,
    /// When the program started (the `uptime` of `GET /health`).
    pub started: Instant,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("rpc", &self.rpc)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// What `GET /health` says: starting (503), ready (200), stopping (503).
/// Shared between the listener and the program, which moves it forward.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<AtomicU8>);

const STARTING: u8 = 0;
const READY: u8 = 1;
const STOPPING: u8 = 2;

impl Health {
    /// The program's listeners are all up.
    pub fn set_ready(&self) {
        // Never back from stopping: a signal during start wins.
        let _ = self
            .0
            .compare_exchange(STARTING, READY, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The program is shutting down.
    pub fn set_stopping(&self) {
        self.0.store(STOPPING, Ordering::Release);
    }

    /// Whether the program is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire) == READY
    }

    /// `"starting"`, `"ok"` or `"stopping"`, as `GET /health` words it.
    pub fn status(&self) -> &'static str {
        match self.0.load(Ordering::Acquire) {
            STARTING => "starting",
            READY => "ok",
            _ => "stopping",
        }
    }
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A bad `[http]` value.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address cannot be bound (in use, not an address of this host,
    /// a privileged port...).
    #[error("cannot listen on [http] listen = {listen:?} ({addr}): {source}")]
    Bind {
        /// The setting as written.
        listen: String,
        /// The address tried last.
        addr: SocketAddr,
        /// The system's reason.
        source: std::io::Error,
    },
}

/// Pending connections the kernel may hold before accept.
const LISTEN_BACKLOG: u32 = 128;

/// How long shutdown waits for requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Which peers may connect.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    allow: AllowList,
    /// Loopback peers may always connect; only the crate's own tests turn
    /// this off, to reach the refusal path over loopback.
    loopback: bool,
}

impl Gate {
    /// Whether a peer at `ip` may connect: loopback, or a network of
    /// `allow_networks` (an empty list allows nobody else).
    pub(crate) fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        (self.loopback && ip.is_loopback())
            || (self.allow.is_restrictive() && self.allow.allows(ip))
    }
}

/// A running admin listener.
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    health: Health,
    stop: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl HttpServer {
    /// Validate `config`, bind, and serve until [`HttpServer::shutdown`].
    /// `/health` answers "starting" until [`Health::set_ready`].
    pub async fn start(config: &HttpConfig, services: Services) -> Result<HttpServer, StartError> {
        config.validate()?;
        let gate = Gate {
            allow: config.allow_list()?,
            loopback: true,
        };
        Self::start_with(config, services, gate).await
    }

    pub(crate) async fn start_with(
        config: &HttpConfig,
        services: Services,
        gate: Gate,
    ) -> Result<HttpServer, StartError> {
        let mut last = None;
        let mut bound = None;
        for addr in config.listen_addrs()? {
            match bind(addr) {
                Ok(l) => {
                    bound = Some(l);
                    break;
                }
                Err(e) => last = Some((addr, e)),
            }
        }
        let listener = match (bound, last) {
            (Some(l), _) => l,
            (None, Some((addr, source))) => {
                return Err(StartError::Bind {
                    listen: config.listen.clone(),
                    addr,
                    source,
                })
            }
            (None, None) => unreachable!("socket_addrs gives at least one address"),
        };
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            listen: config.listen.clone(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        let health = Health::default();
        let app = routes::router(routes::Shared {
            services,
            health: health.clone(),
            token: config.token.clone(),
            body_timeout: config.body_timeout(),
        });
        let (stop, stopped) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(
            listener,
            Arc::new(Semaphore::new(config.max_connections)),
            config.max_connections,
            gate,
            config.header_timeout(),
            app,
            stopped,
        ));
        info!(addr = %local_addr, "admin HTTP listening (POST /RPC, GET /metrics, GET /health)");
        Ok(HttpServer {
            local_addr,
            health,
            stop,
            accept,
        })
    }

    /// The address bound (with the real port when `listen` gave port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The state `GET /health` reports; the program moves it forward.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Stop accepting, let requests in progress finish (at most two
    /// seconds), close every connection.
    pub async fn shutdown(self) {
        self.health.set_stopping();
        let _ = self.stop.send(true);
        let _ = self.accept.await;
        info!(addr = %self.local_addr, "admin HTTP stopped");
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv6() {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn accept_loop(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    max_connections: usize,
    gate: Gate,
    header_timeout: Duration,
    app: axum::Router,
    mut stopped: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather
                // than spin on an error that repeats at once.
                warn_limited!(error = %e, "admin HTTP: accept failed");
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                continue;
            }
        };
        if !gate.allows(peer.ip()) {
            warn_limited!(
                %peer,
                "admin HTTP: connection refused: not loopback and not in [http] allow_networks"
            );
            refuse(stream);
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn_limited!(
                %peer,
                limit = max_connections,
                "admin HTTP: connection refused: [http] max_connections are open"
            );
            refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(stream), routes::service(app.clone(), peer));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // Held until the connection ends: the count of open connections.
            let _slot = slot;
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "admin HTTP connection closed");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("admin HTTP: requests still in progress at shutdown were cut");
    }
}

/// Close a refused connection without reading from it (had the peer sent
/// bytes already, the kernel answers the close with a reset).
fn refuse(stream: TcpStream) {
    drop(stream);
}

#[cfg(test)]
mod tests;
