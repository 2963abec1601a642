//! The running host: sockets on tokio, router threads, the timer task, and
//! the handle the router (and anyone else) uses to act on transactions.
//!
//! Message flow: a socket task parses what arrives, fixes the top Via of a
//! request (`received`, `rport`), and queues it to router thread
//! `hash(Call-ID) % children`, so messages of one call are handled in
//! order by one thread. That thread asks the transaction table whether the
//! message is absorbed (a retransmission, an ACK, a known CANCEL) and
//! otherwise calls the [`Router`]. Table operations return the sends to do;
//! they are done after the table lock is released, without blocking.

use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::HostConfig;
use crate::message::SipMessage;
use crate::request::{Request, Source, Transport, TxRef};
use crate::router::Router;
use crate::tm::{Action, Incoming, TableConfig, Tm, TmError, TmStats};
use crate::transport::{
    bind_udp, parse_listen, resolve_hop, route_ip, spawn_tcp_acceptor, spawn_udp_reader,
    spawn_udp_slow_sender, Conns,
};

/// Why the host did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A `listen` entry is not `udp:ADDR:PORT` or `tcp:ADDR:PORT`.
    #[error("bad listen entry {entry:?}: {reason}")]
    BadListen {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A socket could not be bound.
    #[error("cannot listen on {entry:?}: {reason}")]
    Bind {
        /// The entry as given.
        entry: String,
        /// The system's error (in the message, so not also a `source`).
        reason: io::Error,
    },
    /// The `listen` list is empty.
    #[error("no listen address configured")]
    NoListeners,
    /// A setting is out of range.
    #[error("bad setting: {0}")]
    BadConfig(String),
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
    Stop,
}

pub(crate) struct Shared {
    pub(crate) tm: Mutex<Tm>,
    pub(crate) epoch: Instant,
    pub(crate) timer_wake: Notify,
    pub(crate) router: Arc<dyn Router>,
    pub(crate) children: Vec<flume::Sender<Work>>,
    pub(crate) udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    /// Datagrams a non-blocking send could not take at once, for a task
    /// that awaits the socket.
    pub(crate) udp_slow: mpsc::UnboundedSender<(usize, SocketAddr, Bytes)>,
    pub(crate) conns: Mutex<Conns>,
    pub(crate) next_conn: AtomicU64,
    pub(crate) rt: tokio::runtime::Handle,
    pub(crate) cancel: CancellationToken,
    pub(crate) max_message_size: usize,
    pub(crate) tcp_idle: Duration,
    pub(crate) max_tcp: usize,
    /// For stateless To tags.
    pub(crate) sl_tag: String,
    /// Some listener is bound to 0.0.0.0 or `::`.
    pub(crate) wildcard: bool,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A router panic is caught on its thread; a poisoned lock still holds
    // consistent data (every table operation completes or returns early).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// FNV-1a: the same Call-ID must pick the same thread from any thread.
pub(crate) fn fnv(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &c in b {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

impl Shared {
    pub(crate) fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Run a table operation, then do the sends it asked for (outside the
    /// lock) and wake the timer task if it armed an earlier timer.
    pub(crate) fn tm_op<R>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Tm, u64, &mut Vec<Action>) -> R,
    ) -> R {
        let mut out = Vec::new();
        let (r, wake) = {
            let mut tm = lock(&self.tm);
            let now = self.now();
            let r = f(&mut tm, now, &mut out);
            (r, tm.take_wake())
        };
        if wake {
            self.timer_wake.notify_one();
        }
        self.execute(out);
        r
    }

    pub(crate) fn execute(self: &Arc<Self>, out: Vec<Action>) {
        for a in out {
            match a {
                Action::Send { dest, data, branch } => self.send(&dest, data, branch),
                Action::Failure { id, req, route } => {
                    let cid = req.msg().call_id().unwrap_or_default().to_vec();
                    if let Err(w) = self.dispatch(&cid, Work::Failure { id, req, route }) {
                        // The route cannot run: forward the best reply now
                        // rather than leave the transaction hanging.
                        drop(w);
                        self.tm_op(|tm, now, out| tm.failure_done(id, now, out));
                    }
                }
            }
        }
    }

    pub(crate) fn dispatch(&self, call_id: &[u8], w: Work) -> Result<(), Work> {
        let n = self.children.len() as u64;
        let child = (fnv(call_id) % n) as usize;
        self.children[child].try_send(w).map_err(|e| {
            if matches!(e, flume::TrySendError::Full(_)) {
                warn!(child, "router thread queue full, dropping a message");
            } else {
                debug!(child, "router thread stopped, dropping a message");
            }
            e.into_inner()
        })
    }
}

/// A running SIP host. Stop it with [`SipHost::shutdown`].
pub struct SipHost {
    shared: Arc<Shared>,
    addrs: Vec<(Transport, SocketAddr)>,
    tasks: Vec<JoinHandle<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// The host's operations, callable from any thread (router threads, event
/// socket workers, tests): none of them waits on a socket.
#[derive(Clone)]
pub struct SipHandle {
    shared: Arc<Shared>,
}

impl From<Arc<Shared>> for SipHandle {
    fn from(shared: Arc<Shared>) -> Self {
        SipHandle { shared }
    }
}

impl std::fmt::Debug for SipHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipHandle").finish_non_exhaustive()
    }
}

impl SipHost {
    /// Bind every `listen` socket, start the router threads, the socket
    /// tasks (on the current tokio runtime) and the timer task.
    pub async fn start(config: HostConfig, router: Arc<dyn Router>) -> Result<SipHost, StartError> {
        config.validate()?;
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut addrs = Vec::new();
        for entry in &config.listen {
            let (t, a) = parse_listen(entry)?;
            let bind_err = |reason| StartError::Bind {
                entry: entry.clone(),
                reason,
            };
            match t {
                Transport::Udp => {
                    let s = bind_udp(a, config.udp_recv_buffer).map_err(bind_err)?;
                    let la = s.local_addr().map_err(bind_err)?;
                    addrs.push((t, la));
                    udp.push((la, Arc::new(s)));
                }
                Transport::Tcp => {
                    let l = TcpListener::bind(a).await.map_err(bind_err)?;
                    let la = l.local_addr().map_err(bind_err)?;
                    addrs.push((t, la));
                    tcp.push((la, l));
                }
            }
        }
        let tm = Tm::new(TableConfig {
            t1: config.t1_ms,
            t2: config.t2_ms,
            fr: config.fr_timer_ms,
            fr_inv: config.fr_inv_timer_ms,
            wait: config.wait_timer_ms,
            max: config.max_transactions,
            listeners: addrs.clone(),
        });
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..config.children {
            let (s, r) = flume::bounded(config.queue_size.max(1));
            senders.push(s);
            receivers.push(r);
        }
        let (slow_tx, slow_rx) = mpsc::unbounded_channel::<(usize, SocketAddr, Bytes)>();
        let epoch = Instant::now();
        let shared = Arc::new(Shared {
            tm: Mutex::new(tm),
            epoch,
            timer_wake: Notify::new(),
            router,
            children: senders,
            udp,
            udp_slow: slow_tx,
            conns: Mutex::new(Conns::default()),
            next_conn: AtomicU64::new(1),
            rt: tokio::runtime::Handle::current(),
            cancel: CancellationToken::new(),
            max_message_size: config.max_message_size,
            tcp_idle: Duration::from_millis(config.tcp_idle_timeout_ms.max(1)),
            max_tcp: config.max_tcp_connections,
            wildcard: addrs.iter().any(|(_, a)| a.ip().is_unspecified()),
            sl_tag: format!(
                "{:08x}.sl",
                fnv(format!("{epoch:?}{:p}", &config).as_bytes()) as u32
            ),
        });
        let mut threads = Vec::new();
        for (n, rx) in receivers.into_iter().enumerate() {
            let h = SipHandle::from(Arc::clone(&shared));
            let t = std::thread::Builder::new()
                .name(format!("sip-child-{n}"))
                .spawn(move || child_loop(n, h, rx))
                .map_err(StartError::Thread)?;
            threads.push(t);
        }
        let mut tasks = Vec::new();
        for (local, sock) in &shared.udp {
            tasks.push(spawn_udp_reader(
                Arc::clone(&shared),
                Arc::clone(sock),
                *local,
            ));
        }
        tasks.push(spawn_udp_slow_sender(Arc::clone(&shared), slow_rx));
        for (local, listener) in tcp {
            tasks.push(spawn_tcp_acceptor(Arc::clone(&shared), listener, local));
        }
        {
            let sh = Arc::clone(&shared);
            tasks.push(tokio::spawn(timer_task(sh)));
        }
        info!(?addrs, children = config.children, "SIP host started");
        Ok(SipHost {
            shared,
            addrs,
            tasks,
            threads,
        })
    }

    /// The bound sockets (ports resolved when 0 was asked for).
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        self.addrs.clone()
    }

    /// A handle for acting on transactions from any thread.
    pub fn handle(&self) -> SipHandle {
        SipHandle::from(Arc::clone(&self.shared))
    }

    /// Stop: answer every transaction still without a final reply with
    /// 503, stop reading sockets, stop the router threads (waiting up to
    /// 5 s for one busy in the router).
    pub async fn shutdown(mut self) {
        self.shared.tm_op(|tm, now, out| tm.shutdown(now, out));
        for s in &self.shared.children {
            let _ = s.send(Work::Stop);
        }
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        if tokio::time::timeout(Duration::from_secs(5), joined)
            .await
            .is_err()
        {
            warn!("a router thread did not stop within 5 s");
        }
        // Let queued TCP replies go out: closing the queues ends each
        // writer after it wrote what it had.
        {
            let mut c = lock(&self.shared.conns);
            c.by_id.clear();
            c.by_remote.clear();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.shared.cancel.cancel();
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
        }
        info!("SIP host stopped");
    }
}

impl Drop for SipHost {
    fn drop(&mut self) {
        // Dropped without shutdown: at least stop the tasks and threads.
        self.shared.cancel.cancel();
        if !self.threads.is_empty() {
            for s in &self.shared.children {
                let _ = s.try_send(Work::Stop);
            }
        }
    }
}

async fn timer_task(sh: Arc<Shared>) {
    loop {
        let next = lock(&sh.tm).next_deadline();
        let sleep = async {
            match next {
                Some(t) => {
                    tokio::time::sleep_until((sh.epoch + Duration::from_millis(t)).into()).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sh.cancel.cancelled() => break,
            _ = sh.timer_wake.notified() => {}
            _ = sleep => sh.tm_op(|tm, now, out| tm.on_timer(now, out)),
        }
    }
}

fn child_loop(n: usize, h: SipHandle, rx: flume::Receiver<Work>) {
    let sh = Arc::clone(&h.shared);
    let router = Arc::clone(&sh.router);
    let guarded = |what: &str, f: &mut dyn FnMut()| {
        if std::panic::catch_unwind(AssertUnwindSafe(f)).is_err() {
            warn!(child = n, "router panicked in {what}; message dropped");
        }
    };
    guarded("thread_started", &mut || router.thread_started(n));
    while let Ok(w) = rx.recv() {
        match w {
            Work::Stop => break,
            Work::Request(mut req) => {
                let inc = sh.tm_op(|tm, now, out| tm.on_request(&req, now, out));
                if inc == Incoming::Route {
                    guarded("request", &mut || router.request(&h, &mut req));
                }
            }
            Work::Reply(b) => {
                let (msg, src) = *b;
                if lock(&sh.tm).match_reply(&msg).is_none() {
                    debug!(peer = %src.remote, code = msg.status(), "dropping reply matching no branch");
                    continue;
                }
                let mut pass = true;
                guarded("reply", &mut || pass = router.reply(&h, &msg, &src));
                if pass {
                    sh.tm_op(|tm, now, out| tm.on_reply(&msg, now, out));
                }
            }
            Work::Failure { id, mut req, route } => {
                guarded("failure", &mut || router.failure(&h, &mut req, &route));
                sh.tm_op(|tm, now, out| tm.failure_done(id, now, out));
            }
        }
    }
}

impl SipHandle {
    /// Reply statelessly (Kamailio's `sl_send_reply`): no transaction is
    /// created, retransmissions of the request reach the router again.
    pub fn sl_reply(&self, req: &Request, code: u16, reason: &str) -> Result<(), TmError> {
        let tag = (code > 100).then_some(self.shared.sl_tag.as_bytes());
        let data = req
            .build_reply(code, reason, tag)
            .map_err(TmError::BadRequest)?;
        self.shared.send(&Tm::reply_dest(req), data, None);
        Ok(())
    }

    /// Create the request's transaction (idempotent; an INVITE's sends 100
    /// Trying). Sets [`Request::tx`].
    pub fn t_newtran(&self, req: &mut Request) -> Result<TxRef, TmError> {
        self.shared.tm_op(|tm, now, out| tm.newtran(req, now, out))
    }

    /// Whether a transaction exists for the request (for a CANCEL: for it
    /// or for the INVITE it cancels).
    pub fn t_check_trans(&self, req: &Request) -> bool {
        lock(&self.shared.tm).exists(req)
    }

    /// Reply on the request's transaction, creating it if needed. A
    /// provisional can be followed by more replies; a final one ends a
    /// suspension and a pending branch.
    pub fn t_reply(&self, req: &mut Request, code: u16, reason: &str) -> Result<(), TmError> {
        self.shared
            .tm_op(|tm, now, out| tm.reply(req, code, reason, now, out))
    }

    /// Relay statefully to the destination URI if set, else the
    /// Request-URI, creating the transaction if needed (an ACK is relayed
    /// statelessly). With Max-Forwards 0, replies 483 and fails.
    pub fn t_relay(&self, req: &mut Request) -> Result<(), TmError> {
        let hop = resolve_hop(&req.next_hop())?;
        // A wildcard listener has no address to advertise: ask the routing
        // table which local address reaches the next hop.
        let via_ip = if self.shared.wildcard {
            route_ip(hop.1)
        } else {
            None
        };
        self.shared
            .tm_op(|tm, now, out| tm.relay(req, hop, via_ip, now, out))
    }

    /// Suspend the request's transaction (created if needed) and return
    /// the pair that names it. Retransmissions are absorbed meanwhile; with
    /// no continue it ends with 408 at fr_timer / fr_inv_timer.
    pub fn t_suspend(&self, req: &mut Request) -> Result<TxRef, TmError> {
        self.shared.tm_op(|tm, now, out| tm.suspend(req, now, out))
    }

    /// Take a suspended request back by its index and label, with the edits
    /// made before it was suspended; its transaction is no longer
    /// suspended, and the caller goes on with it (t_reply, t_relay...). A
    /// wrong, cancelled, timed-out or already continued pair fails and
    /// changes nothing.
    pub fn t_continue(&self, index: u32, label: u32) -> Result<Request, TmError> {
        lock(&self.shared.tm).resume(index, label)
    }

    /// Whether the request's INVITE transaction was cancelled (Kamailio's
    /// `t_is_canceled`, e.g. in a failure route).
    pub fn t_is_canceled(&self, req: &Request) -> bool {
        lock(&self.shared.tm).is_canceled(req)
    }

    /// Counters of the transaction table.
    pub fn stats(&self) -> TmStats {
        lock(&self.shared.tm).stats()
    }

    /// The bound sockets.
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        lock(&self.shared.tm).listeners()
    }
}
