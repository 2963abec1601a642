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

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::HostConfig;
use crate::error::ParseError;
use crate::message::{frame_length, Method, SipMessage};
use crate::request::{ConnId, Request, Source, Transport, TxRef};
use crate::router::Router;
use crate::tm::{Action, Dest, Incoming, Tm, TmConfig, TmError, TmStats};
use crate::uri::{Scheme, Uri};

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
    #[error("cannot listen on {entry:?}: {source}")]
    Bind {
        /// The entry as given.
        entry: String,
        /// The system's error.
        source: io::Error,
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
enum Work {
    Request(Box<Request>),
    Reply(Box<(SipMessage, Source)>),
    Failure {
        id: u64,
        req: Box<Request>,
        route: String,
    },
    Stop,
}

struct Conn {
    tx: mpsc::UnboundedSender<Bytes>,
    remote: SocketAddr,
}

#[derive(Default)]
struct Conns {
    by_id: HashMap<ConnId, Conn>,
    by_remote: HashMap<SocketAddr, ConnId>,
}

struct Shared {
    tm: Mutex<Tm>,
    epoch: Instant,
    timer_wake: Notify,
    router: Arc<dyn Router>,
    children: Vec<flume::Sender<Work>>,
    udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    /// Datagrams a non-blocking send could not take at once, for a task
    /// that awaits the socket.
    udp_slow: mpsc::UnboundedSender<(usize, SocketAddr, Bytes)>,
    conns: Mutex<Conns>,
    next_conn: AtomicU64,
    rt: tokio::runtime::Handle,
    cancel: CancellationToken,
    max_message_size: usize,
    /// For stateless To tags.
    sl_tag: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A router panic is caught on its thread; a poisoned lock still holds
    // consistent data (every table operation completes or returns early).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// FNV-1a: the same Call-ID must pick the same thread from any thread.
fn fnv(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &c in b {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

impl Shared {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Run a table operation, then do the sends it asked for (outside the
    /// lock) and wake the timer task if it armed an earlier timer.
    fn tm_op<R>(self: &Arc<Self>, f: impl FnOnce(&mut Tm, u64, &mut Vec<Action>) -> R) -> R {
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

    fn execute(self: &Arc<Self>, out: Vec<Action>) {
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

    fn dispatch(&self, call_id: &[u8], w: Work) -> Result<(), Work> {
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

    fn send(self: &Arc<Self>, dest: &Dest, data: Bytes, branch: Option<(u64, u32)>) {
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
            warn!(to = %dest.addr, "no UDP socket for the address family");
            return self.report_failure(branch);
        };
        match self.udp[i].1.try_send_to(&data, dest.addr) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let _ = self.udp_slow.send((i, dest.addr, data));
            }
            Err(e) => {
                warn!(to = %dest.addr, error = %e, "UDP send failed");
                self.report_failure(branch);
            }
        }
    }

    fn report_failure(self: &Arc<Self>, branch: Option<(u64, u32)>) {
        if let Some((id, no)) = branch {
            self.tm_op(|tm, now, out| tm.send_failed(id, no, now, out));
        }
    }

    fn send_tcp(self: &Arc<Self>, dest: &Dest, data: Bytes, branch: Option<(u64, u32)>) {
        let mut data = Some(data);
        {
            let conns = lock(&self.conns);
            let id = dest
                .conn
                .filter(|c| conns.by_id.contains_key(c))
                .or_else(|| conns.by_remote.get(&dest.addr).copied());
            if let Some(c) = id.and_then(|i| conns.by_id.get(&i)) {
                match c.tx.send(data.take().unwrap_or_default()) {
                    Ok(()) => return,
                    Err(e) => data = Some(e.0),
                }
            }
        }
        // No open connection: open one (RFC 3261 §18.2.2 for replies, and
        // every new destination of a relay).
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(data.unwrap_or_default());
        {
            let mut conns = lock(&self.conns);
            conns.by_remote.insert(dest.addr, id);
            conns.by_id.insert(
                id,
                Conn {
                    tx,
                    remote: dest.addr,
                },
            );
        }
        let shared = Arc::clone(self);
        let addr = dest.addr;
        self.rt.spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await;
            match r {
                Ok(Ok(s)) => {
                    let local = s.local_addr().unwrap_or(addr);
                    debug!(conn = id, peer = %addr, "TCP connection opened");
                    run_conn(shared, id, s, rx, addr, local).await;
                }
                Ok(Err(e)) => {
                    warn!(conn = id, peer = %addr, error = %e, "TCP connect failed");
                    shared.forget_conn(id);
                    shared.report_failure(branch);
                }
                Err(_) => {
                    warn!(conn = id, peer = %addr, "TCP connect timed out");
                    shared.forget_conn(id);
                    shared.report_failure(branch);
                }
            }
        });
    }

    fn forget_conn(&self, id: ConnId) {
        let mut conns = lock(&self.conns);
        if let Some(c) = conns.by_id.remove(&id) {
            if conns.by_remote.get(&c.remote) == Some(&id) {
                conns.by_remote.remove(&c.remote);
            }
        }
    }

    /// A message off the wire: parse, check, fix the Via, queue to its
    /// router thread. Bad requests get 400 when a reply can be routed.
    fn incoming(self: &Arc<Self>, data: Bytes, src: Source) {
        let msg = match SipMessage::parse(data) {
            Ok(m) => m,
            Err(e) => {
                warn!(peer = %src.remote, transport = %src.transport, error = %e, "dropping unparseable message");
                return;
            }
        };
        if !msg.is_request() {
            let Ok(cid) = msg.call_id().map(<[u8]>::to_vec) else {
                warn!(peer = %src.remote, "dropping reply without Call-ID");
                return;
            };
            if msg.top_via().is_err() {
                warn!(peer = %src.remote, "dropping reply with a bad Via");
                return;
            }
            let _ = self.dispatch(&cid, Work::Reply(Box::new((msg, src))));
            return;
        }
        let msg = match fix_via(msg, &src) {
            Ok(m) => m,
            Err(e) => {
                warn!(peer = %src.remote, error = %e, "dropping request with a bad top Via");
                return;
            }
        };
        let req = Request::new(msg, src);
        if let Err((code, reason, e)) = check_request(req.msg()) {
            warn!(peer = %req.source().remote, error = %e, code, "refusing malformed request");
            if req.msg().method() != Some(&Method::Ack) {
                let _ = SipHandle::from(Arc::clone(self)).sl_reply(&req, code, reason);
            }
            return;
        }
        let cid = req.msg().call_id().unwrap_or_default().to_vec();
        let _ = self.dispatch(&cid, Work::Request(Box::new(req)));
    }
}

/// What a request must have before the router sees it: replies copy these
/// (RFC 3261 §8.2.6).
fn check_request(m: &SipMessage) -> Result<(), (u16, &'static str, ParseError)> {
    let bad = |e| (400, "Bad Request", e);
    m.call_id().map_err(bad)?;
    m.from().map_err(bad)?;
    m.to().map_err(bad)?;
    let cseq = m.cseq().map_err(bad)?;
    m.max_forwards().map_err(bad)?;
    m.request_uri().map_err(bad)?;
    if Some(&cseq.method) != m.method() {
        return Err(bad(ParseError::WrongKind(
            "CSeq method differs from the request method",
        )));
    }
    if !m.version().eq_ignore_ascii_case(b"SIP/2.0") {
        return Err((
            505,
            "Version Not Supported",
            ParseError::WrongKind("not SIP/2.0"),
        ));
    }
    Ok(())
}

/// Add `received` and fill `rport` in the top Via of a request (RFC 3261
/// §18.2.1, RFC 3581), so replies built from it, and replies coming back
/// through us, reach the real sender. The buffer is rewritten only when a
/// parameter is needed.
fn fix_via(msg: SipMessage, src: &Source) -> Result<SipMessage, ParseError> {
    let via = msg.top_via()?;
    let want_rport = via.rport == Some(None) && src.transport == Transport::Udp;
    let host = via
        .host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(via.host);
    let host_ip = std::str::from_utf8(host)
        .ok()
        .and_then(|h| h.parse::<IpAddr>().ok());
    let want_received = want_rport || host_ip != Some(src.remote.ip());
    if !want_rport && !want_received {
        return Ok(msg);
    }
    let raw = via.raw;
    let params = via.params();
    let plist = params.as_bytes();
    let head_len = if plist.is_empty() && !raw.ends_with(b";") {
        raw.len()
    } else {
        (plist.as_ptr() as usize).saturating_sub(raw.as_ptr() as usize + 1)
    };
    let mut v = Vec::with_capacity(raw.len() + 48);
    v.extend_from_slice(raw.get(..head_len).unwrap_or(raw));
    for p in params {
        let (name, value) = p?;
        if name.eq_ignore_ascii_case(b"received") || name.eq_ignore_ascii_case(b"rport") {
            continue;
        }
        v.push(b';');
        v.extend_from_slice(name);
        if let Some(val) = value {
            v.push(b'=');
            v.extend_from_slice(val);
        }
    }
    v.extend_from_slice(format!(";received={}", src.remote.ip()).as_bytes());
    if want_rport {
        v.extend_from_slice(format!(";rport={}", src.remote.port()).as_bytes());
    }
    let buf = msg.buffer();
    let off = (raw.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    let (Some(before), Some(after)) = (buf.get(..off), buf.get(off + raw.len()..)) else {
        return Ok(msg);
    };
    let mut nb = Vec::with_capacity(buf.len() + 48);
    nb.extend_from_slice(before);
    nb.extend_from_slice(&v);
    nb.extend_from_slice(after);
    SipMessage::parse(Bytes::from(nb))
}

async fn run_conn(
    shared: Arc<Shared>,
    id: ConnId,
    stream: TcpStream,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    remote: SocketAddr,
    local: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            // Batch what is queued into one write.
            let mut buf = BytesMut::from(&first[..]);
            while buf.len() < 64 * 1024 {
                match rx.try_recv() {
                    Ok(b) => buf.extend_from_slice(&b),
                    Err(_) => break,
                }
            }
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let src = Source {
        transport: Transport::Tcp,
        remote,
        local,
        conn: Some(id),
    };
    let max = shared.max_message_size;
    let mut buf = BytesMut::with_capacity(8192);
    'conn: loop {
        loop {
            match frame_length(&buf, max) {
                Ok(Some(n)) => {
                    let frame = buf.split_to(n).freeze();
                    if frame.iter().all(|&c| c == b'\r' || c == b'\n') {
                        // RFC 5626 keep-alive: a double CRLF ping gets a
                        // single CRLF pong.
                        if frame.len() >= 4 {
                            let conns = lock(&shared.conns);
                            if let Some(c) = conns.by_id.get(&id) {
                                let _ = c.tx.send(Bytes::from_static(b"\r\n"));
                            }
                        }
                        continue;
                    }
                    shared.incoming(frame, src.clone());
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(conn = id, peer = %remote, error = %e, "closing TCP connection: cannot frame its stream");
                    break 'conn;
                }
            }
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => break,
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    debug!(conn = id, peer = %remote, error = %e, "TCP read error");
                    break;
                }
            },
        }
    }
    shared.forget_conn(id);
    writer.abort();
    debug!(conn = id, peer = %remote, "TCP connection closed");
}

/// Parse one `listen` entry: `udp:127.0.0.1:5060`, `tcp:[::1]:0`.
fn parse_listen(entry: &str) -> Result<(Transport, SocketAddr), StartError> {
    let bad = |reason: &str| StartError::BadListen {
        entry: entry.to_owned(),
        reason: reason.to_owned(),
    };
    let (proto, addr) = entry
        .split_once(':')
        .ok_or_else(|| bad("expected proto:address:port"))?;
    let t = match proto.to_ascii_lowercase().as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        _ => return Err(bad("the protocol must be udp or tcp")),
    };
    let a = addr
        .parse::<SocketAddr>()
        .map_err(|_| bad("expected an IP address and port, IPv6 in brackets"))?;
    Ok((t, a))
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
        if config.listen.is_empty() {
            return Err(StartError::NoListeners);
        }
        if config.children == 0 || config.children > 1024 {
            return Err(StartError::BadConfig(format!(
                "children = {}: must be 1 to 1024",
                config.children
            )));
        }
        if config.t1_ms == 0 || config.t2_ms < config.t1_ms {
            return Err(StartError::BadConfig(format!(
                "t1_ms = {}, t2_ms = {}: need 0 < t1 <= t2",
                config.t1_ms, config.t2_ms
            )));
        }
        if config.max_message_size < 512 {
            return Err(StartError::BadConfig(format!(
                "max_message_size = {}: at least 512",
                config.max_message_size
            )));
        }
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut addrs = Vec::new();
        for entry in &config.listen {
            let (t, a) = parse_listen(entry)?;
            let bind_err = |source| StartError::Bind {
                entry: entry.clone(),
                source,
            };
            match t {
                Transport::Udp => {
                    let s = UdpSocket::bind(a).await.map_err(bind_err)?;
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
        let tm = Tm::new(TmConfig {
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
        let (slow_tx, mut slow_rx) = mpsc::unbounded_channel::<(usize, SocketAddr, Bytes)>();
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
        for (i, (local, sock)) in shared.udp.iter().enumerate() {
            let (sh, sock, local) = (Arc::clone(&shared), Arc::clone(sock), *local);
            let _ = i;
            tasks.push(tokio::spawn(async move {
                let max = sh.max_message_size;
                let mut buf = vec![0u8; max + 1];
                loop {
                    tokio::select! {
                        _ = sh.cancel.cancelled() => break,
                        r = sock.recv_from(&mut buf) => match r {
                            Ok((n, from)) if n > max => {
                                warn!(peer = %from, len = n, max, "dropping oversized datagram");
                            }
                            Ok((n, from)) => {
                                let src = Source { transport: Transport::Udp, remote: from, local, conn: None };
                                sh.incoming(Bytes::copy_from_slice(&buf[..n]), src);
                            }
                            Err(e) => debug!(local = %local, error = %e, "UDP receive error"),
                        },
                    }
                }
            }));
        }
        {
            let sh = Arc::clone(&shared);
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = sh.cancel.cancelled() => break,
                        m = slow_rx.recv() => match m {
                            Some((i, to, data)) => {
                                if let Some((_, s)) = sh.udp.get(i) {
                                    if let Err(e) = s.send_to(&data, to).await {
                                        warn!(to = %to, error = %e, "UDP send failed");
                                    }
                                }
                            }
                            None => break,
                        },
                    }
                }
            }));
        }
        for (local, listener) in tcp {
            let sh = Arc::clone(&shared);
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = sh.cancel.cancelled() => break,
                        r = listener.accept() => match r {
                            Ok((s, remote)) => {
                                let id = sh.next_conn.fetch_add(1, Ordering::Relaxed);
                                let (tx, rx) = mpsc::unbounded_channel();
                                {
                                    let mut c = lock(&sh.conns);
                                    c.by_remote.insert(remote, id);
                                    c.by_id.insert(id, Conn { tx, remote });
                                }
                                debug!(conn = id, peer = %remote, "TCP connection accepted");
                                tokio::spawn(run_conn(Arc::clone(&sh), id, s, rx, remote, local));
                            }
                            Err(e) => {
                                warn!(local = %local, error = %e, "TCP accept failed");
                                // Out of descriptors: do not spin.
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        },
                    }
                }
            }));
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

/// Where a relay goes, from a SIP URI: IP literals as they are, names
/// through the system resolver (blocking the calling thread).
fn resolve_hop(uri: &[u8]) -> Result<(Transport, SocketAddr), TmError> {
    let text = String::from_utf8_lossy(uri).into_owned();
    let bad = |reason: &str| TmError::BadDestination {
        uri: text.clone(),
        reason: reason.to_owned(),
    };
    let u = Uri::parse(uri).map_err(|e| bad(&e.to_string()))?;
    let (default_port, mut transport) = match u.scheme {
        Scheme::Sip => (5060, Transport::Udp),
        // No TLS yet: sips is refused rather than sent in clear.
        Scheme::Sips => return Err(bad("sips (TLS) is not supported")),
        _ => return Err(bad("not a sip: URI")),
    };
    if let Some(t) = u.transport() {
        transport = if t.eq_ignore_ascii_case(b"udp") {
            Transport::Udp
        } else if t.eq_ignore_ascii_case(b"tcp") {
            Transport::Tcp
        } else {
            return Err(bad("unsupported transport parameter"));
        };
    }
    let port = u.port.unwrap_or(default_port);
    let host = u
        .host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(u.host);
    let host = std::str::from_utf8(host).map_err(|_| bad("host is not text"))?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((transport, SocketAddr::new(ip, port)));
    }
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve host: {e}")))?
        .next()
        .ok_or_else(|| bad("host resolves to no address"))?;
    Ok((transport, addr))
}

impl SipHandle {
    /// Reply statelessly (Kamailio's `sl_send_reply`): no transaction is
    /// created, retransmissions of the request reach the router again.
    pub fn sl_reply(&self, req: &Request, code: u16, reason: &str) -> Result<(), TmError> {
        let tag = (code > 100).then_some(self.shared.sl_tag.as_bytes());
        let data = req
            .msg()
            .response(code, reason.as_bytes(), tag, &[])
            .or_else(|_| req.msg().response(code, reason.as_bytes(), None, &[]))
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
        self.shared
            .tm_op(|tm, now, out| tm.relay(req, hop, now, out))
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

    /// Counters of the transaction table.
    pub fn stats(&self) -> TmStats {
        lock(&self.shared.tm).stats()
    }

    /// The bound sockets.
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        lock(&self.shared.tm).listeners()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_gets_received_and_rport() {
        let m = SipMessage::parse(Bytes::from_static(
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP pc.example.com:5070;rport;branch=z9hG4bK1, SIP/2.0/UDP x\r\nCall-ID: c\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        let src = Source {
            transport: Transport::Udp,
            remote: "192.0.2.7:40000".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        };
        let m = fix_via(m, &src).unwrap();
        let v = m.top_via().unwrap();
        assert_eq!(v.received, Some(&b"192.0.2.7"[..]));
        assert_eq!(v.rport, Some(Some(40000)));
        assert_eq!(v.branch, Some(&b"z9hG4bK1"[..]));
        assert_eq!(m.vias().count(), 2);
        // Already right: untouched.
        let m2 = SipMessage::parse(Bytes::from_static(
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7:40000;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        let before = m2.buffer().clone();
        assert_eq!(fix_via(m2, &src).unwrap().buffer(), &before);
    }

    #[test]
    fn listen_entries() {
        assert!(matches!(
            parse_listen("udp:127.0.0.1:0"),
            Ok((Transport::Udp, _))
        ));
        assert!(matches!(
            parse_listen("TCP:[::1]:5060"),
            Ok((Transport::Tcp, _))
        ));
        assert!(parse_listen("sctp:127.0.0.1:5060").is_err());
        assert!(parse_listen("udp:localhost").is_err());
    }

    #[test]
    fn hops() {
        assert_eq!(
            resolve_hop(b"sip:bob@127.0.0.1:5080;transport=tcp").unwrap(),
            (Transport::Tcp, "127.0.0.1:5080".parse().unwrap())
        );
        assert_eq!(
            resolve_hop(b"sip:[::1]").unwrap(),
            (Transport::Udp, "[::1]:5060".parse().unwrap())
        );
        assert!(resolve_hop(b"tel:+123").is_err());
    }
}
