//! Sockets: UDP reads for the router threads, TCP acceptors and connections (framed by
//! Content-Length), sending without blocking from any thread, and the
//! checks and Via fix-up every incoming request gets before routing.
//!
//! This layer knows nothing of transactions or routing: what arrives goes
//! up through [`Upcalls`], implemented by the host, so the dependencies
//! run one way (config ← transport ← host).

mod checks;
mod conn;
mod hop;
mod tcp;
mod udp;
mod wire_log;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use lograte::warn_limited;
use std::net::UdpSocket;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::{parse_listen, SipConfig};
use crate::request::{ConnId, Source, Transport};
use crate::tm::Dest;

#[cfg(test)]
pub(crate) use checks::fix_via;
pub(crate) use checks::{check_request, via_rewritten};
use conn::{Conn, Conns, NotQueued};
pub(crate) use hop::{parse_hop, route_ip, Target};
use tcp::run_conn;
pub(crate) use udp::Read;

/// What the sockets hand up to the host.
pub(crate) trait Upcalls: Send + Sync {
    /// A message off the wire (one datagram, or one frame of a stream).
    fn incoming(&self, data: Bytes, src: Source);
    /// Sending branch `no` of transaction `id` failed (no socket, connect
    /// refused or timed out).
    fn send_failed(&self, id: u64, no: u32);
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A router panic is caught on its thread; a poisoned lock still holds
    // consistent data (every table operation completes or returns early).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `listen` entry that could not be bound.
#[derive(Debug)]
pub(crate) struct BindError {
    pub(crate) entry: String,
    pub(crate) reason: io::Error,
}

/// Every socket of the `listen` list, bound; nothing reads them yet.
pub(crate) struct Bound {
    pub(crate) udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    pub(crate) tcp: Vec<(SocketAddr, TcpListener)>,
    /// In `listen` order, ports resolved.
    pub(crate) addrs: Vec<(Transport, SocketAddr)>,
}

/// Bind every `listen` entry (already checked by [`SipConfig::validate`]).
pub(crate) async fn bind_all(cfg: &SipConfig) -> Result<Bound, BindError> {
    let mut b = Bound {
        udp: Vec::new(),
        tcp: Vec::new(),
        addrs: Vec::new(),
    };
    for entry in &cfg.listen {
        let bind_err = |reason| BindError {
            entry: entry.clone(),
            reason,
        };
        let (t, addrs) = parse_listen(entry)
            .map_err(|e| bind_err(io::Error::new(io::ErrorKind::InvalidInput, e.to_string())))?;
        // One socket per address (`localhost` may stand for two).
        for a in addrs {
            match t {
                Transport::Udp => {
                    let s = udp::bind_udp(a, cfg.udp_recv_buffer).map_err(bind_err)?;
                    let la = s.local_addr().map_err(bind_err)?;
                    b.addrs.push((t, la));
                    b.udp.push((la, Arc::new(s)));
                }
                Transport::Tcp => {
                    let l = TcpListener::bind(a).await.map_err(bind_err)?;
                    let la = l.local_addr().map_err(bind_err)?;
                    b.addrs.push((t, la));
                    b.tcp.push((la, l));
                }
            }
        }
    }
    Ok(b)
}

/// The sockets of a host and what sending needs: shared by the socket
/// tasks and by whoever sends (router threads, event socket workers).
pub(crate) struct Net {
    pub(crate) udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    /// Datagrams a non-blocking send could not take at once, for a task
    /// that awaits the socket.
    udp_slow: mpsc::UnboundedSender<(usize, SocketAddr, Bytes)>,
    pub(crate) conns: Mutex<Conns>,
    pub(crate) next_conn: AtomicU64,
    rt: tokio::runtime::Handle,
    pub(crate) cancel: CancellationToken,
    max_message_size: usize,
    tcp_idle: Duration,
    max_tcp: usize,
    /// `tcp_send_queue_limit`: bytes one connection may have waiting.
    send_queue_limit: usize,
    /// `tcp_message_timeout_ms`: from a message's first byte to its last.
    message_timeout: Duration,
    /// `max_tcp_connections_per_ip`: accepted connections from one address.
    max_tcp_per_ip: usize,
    /// Some listener is bound to 0.0.0.0 or `::`.
    pub(crate) wildcard: bool,
    /// The host's side; its implementation holds the host weakly, so the
    /// sockets never keep the host alive.
    up: Arc<dyn Upcalls>,
}

/// The socket tasks' half of the bound sockets, kept until the host
/// starts.
pub(crate) struct Pending {
    tcp: Vec<(SocketAddr, TcpListener)>,
    slow_rx: mpsc::UnboundedReceiver<(usize, SocketAddr, Bytes)>,
}

/// The senders' half of the bound sockets, for [`Net::new`].
pub(crate) struct Sockets {
    udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    wildcard: bool,
    slow_tx: mpsc::UnboundedSender<(usize, SocketAddr, Bytes)>,
}

impl Bound {
    /// Split into what senders use now and what the socket tasks use once
    /// the host starts.
    pub(crate) fn split(self) -> (Sockets, Pending) {
        let (slow_tx, slow_rx) = mpsc::unbounded_channel();
        let sockets = Sockets {
            wildcard: self.addrs.iter().any(|(_, a)| a.ip().is_unspecified()),
            udp: self.udp,
            slow_tx,
        };
        let pending = Pending {
            tcp: self.tcp,
            slow_rx,
        };
        (sockets, pending)
    }
}

impl Net {
    /// Take the bound sockets; `up` receives what arrives once
    /// [`Net::start`] runs. Must be called on a tokio runtime.
    pub(crate) fn new(sockets: Sockets, cfg: &SipConfig, up: Arc<dyn Upcalls>) -> Net {
        Net {
            wildcard: sockets.wildcard,
            udp: sockets.udp,
            udp_slow: sockets.slow_tx,
            conns: Mutex::new(Conns::default()),
            next_conn: AtomicU64::new(1),
            rt: tokio::runtime::Handle::current(),
            cancel: CancellationToken::new(),
            max_message_size: cfg.max_message_size,
            tcp_idle: Duration::from_millis(cfg.tcp_idle_timeout_ms.max(1)),
            max_tcp: cfg.max_tcp_connections,
            send_queue_limit: cfg.tcp_send_queue_limit,
            message_timeout: Duration::from_millis(cfg.tcp_message_timeout_ms.max(1)),
            max_tcp_per_ip: cfg.max_tcp_connections_per_ip,
            up,
        }
    }

    /// Start the socket tasks: one per TCP listener, and the slow UDP
    /// sender (the router threads read the UDP sockets).
    pub(crate) fn start(self: &Arc<Self>, pending: Pending) -> Vec<JoinHandle<()>> {
        let _rt = self.rt.enter();
        let mut tasks = Vec::new();
        tasks.push(udp::spawn_udp_slow_sender(
            Arc::clone(self),
            pending.slow_rx,
        ));
        for (local, listener) in pending.tcp {
            tasks.push(tcp::spawn_tcp_acceptor(Arc::clone(self), listener, local));
        }
        tasks
    }

    /// Spawn on the host's runtime (callable from any thread).
    pub(crate) fn spawn<F>(&self, f: F) -> JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.rt.spawn(f)
    }

    /// Hand a message up to the host.
    fn deliver(&self, data: Bytes, src: Source) {
        wire_log::incoming(&data, &src);
        self.up.incoming(data, src);
    }

    /// Close every stream connection once its queued data is written.
    pub(crate) fn close_conns(&self) {
        lock(&self.conns).clear();
    }

    /// Send without blocking. `branch`: the relayed branch to report to
    /// [`Upcalls::send_failed`] if the send fails.
    pub(crate) fn send(self: &Arc<Self>, dest: &Dest, data: Bytes, branch: Option<(u64, u32)>) {
        wire_log::outgoing(&data, dest.transport, dest.addr, dest.local, dest.conn);
        match dest.transport {
            Transport::Udp => self.send_udp(dest, data, branch),
            Transport::Tcp => self.send_tcp(dest, data, branch),
        }
    }

    fn send_udp(self: &Arc<Self>, dest: &Dest, data: Bytes, branch: Option<(u64, u32)>) {
        let sock = self
            .udp
            .iter()
            .position(|(a, _)| Some(*a) == dest.local)
            .or_else(|| {
                self.udp
                    .iter()
                    .position(|(a, _)| a.is_ipv4() == dest.addr.is_ipv4())
            });
        let Some(i) = sock else {
            warn_limited!(to = %dest.addr, "no UDP socket for the address family");
            return self.report_failure(branch);
        };
        match self.udp[i].1.send_to(&data, dest.addr) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let _ = self.udp_slow.send((i, dest.addr, data));
            }
            Err(e) => {
                warn_limited!(to = %dest.addr, error = %e, "UDP send failed");
                self.report_failure(branch);
            }
        }
    }

    fn report_failure(&self, branch: Option<(u64, u32)>) {
        if let Some((id, no)) = branch {
            self.up.send_failed(id, no);
        }
    }

    fn send_tcp(self: &Arc<Self>, dest: &Dest, data: Bytes, branch: Option<(u64, u32)>) {
        let mut data = Some(data);
        {
            let mut conns = lock(&self.conns);
            let id = dest
                .conn
                .filter(|c| conns.by_id.contains_key(c))
                .or_else(|| conns.by_remote.get(&dest.addr).copied());
            if let Some((id, c)) = id.and_then(|i| Some((i, conns.by_id.get(&i)?))) {
                match c.queue(data.take().unwrap_or_default(), self.send_queue_limit) {
                    Ok(()) => return,
                    Err(NotQueued::Closed(d)) => data = Some(d),
                    Err(NotQueued::OverLimit { queued, len }) => {
                        // The peer does not read what we send: cut it
                        // rather than buffer without end. Once out of the
                        // table nothing more is queued for it, so this is
                        // logged once per connection.
                        warn_limited!(
                            conn = id,
                            peer = %c.remote,
                            queued,
                            len,
                            limit = self.send_queue_limit,
                            "cutting TCP connection: its peer does not read (over tcp_send_queue_limit)"
                        );
                        conns.remove(id);
                        drop(conns);
                        return self.report_failure(branch);
                    }
                }
            }
        }
        // No open connection: open one (RFC 3261 §18.2.2 for replies, and
        // every new destination of a relay).
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (conn, rx) = Conn::new(dest.addr, false);
        let _ = conn.queue(data.unwrap_or_default(), self.send_queue_limit);
        let state = Arc::clone(&conn.state);
        lock(&self.conns).insert(id, conn);
        let net = Arc::clone(self);
        let addr = dest.addr;
        self.rt.spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await;
            match r {
                Ok(Ok(s)) => {
                    let local = s.local_addr().unwrap_or(addr);
                    debug!(conn = id, peer = %addr, "TCP connection opened");
                    run_conn(net, id, s, rx, state, addr, local).await;
                }
                Ok(Err(e)) => {
                    warn_limited!(conn = id, peer = %addr, error = %e, "TCP connect failed");
                    net.forget_conn(id);
                    net.report_failure(branch);
                }
                Err(_) => {
                    warn_limited!(conn = id, peer = %addr, "TCP connect timed out");
                    net.forget_conn(id);
                    net.report_failure(branch);
                }
            }
        });
    }

    pub(crate) fn forget_conn(&self, id: ConnId) {
        lock(&self.conns).remove(id);
    }
}
