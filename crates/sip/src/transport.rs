//! Sockets: UDP readers, TCP acceptors and connections (framed by
//! Content-Length), sending without blocking from any thread, and the
//! checks and Via fix-up every incoming request gets before routing.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::error::ParseError;
use crate::host::{lock, Shared, SipHandle, StartError, Work};
use crate::message::{frame_length, Method, SipMessage};
use crate::request::{ConnId, Request, Source, Transport};
use crate::tm::{Dest, TmError};
use crate::uri::{Scheme, Uri};

pub(crate) struct Conn {
    pub(crate) tx: mpsc::UnboundedSender<Bytes>,
    pub(crate) remote: SocketAddr,
}

#[derive(Default)]
pub(crate) struct Conns {
    pub(crate) by_id: HashMap<ConnId, Conn>,
    pub(crate) by_remote: HashMap<SocketAddr, ConnId>,
}

impl Shared {
    pub(crate) fn send(self: &Arc<Self>, dest: &Dest, data: Bytes, branch: Option<(u64, u32)>) {
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

    pub(crate) fn report_failure(self: &Arc<Self>, branch: Option<(u64, u32)>) {
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

    pub(crate) fn forget_conn(&self, id: ConnId) {
        let mut conns = lock(&self.conns);
        if let Some(c) = conns.by_id.remove(&id) {
            if conns.by_remote.get(&c.remote) == Some(&id) {
                conns.by_remote.remove(&c.remote);
            }
        }
    }

    /// A message off the wire: parse, check, fix the Via, queue to its
    /// router thread. Bad requests get 400 when a reply can be routed.
    pub(crate) fn incoming(self: &Arc<Self>, data: Bytes, src: Source) {
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
pub(crate) fn check_request(m: &SipMessage) -> Result<(), (u16, &'static str, ParseError)> {
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
pub(crate) fn fix_via(msg: SipMessage, src: &Source) -> Result<SipMessage, ParseError> {
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

pub(crate) async fn run_conn(
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
            _ = tokio::time::sleep(shared.tcp_idle) => {
                debug!(conn = id, peer = %remote, "closing idle TCP connection");
                break;
            }
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
pub(crate) fn parse_listen(entry: &str) -> Result<(Transport, SocketAddr), StartError> {
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

/// Bind a UDP socket with the receive buffer asked for (best effort: the
/// system may give less).
pub(crate) fn bind_udp(addr: SocketAddr, recv_buffer: usize) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Listen on IPv6 only, so a v4 socket on the same port can coexist.
        s.set_only_v6(true)?;
    }
    if recv_buffer > 0 {
        if let Err(e) = s.set_recv_buffer_size(recv_buffer) {
            warn!(local = %addr, error = %e, "cannot set the UDP receive buffer");
        }
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// The local address the system would send from to reach `to` (a UDP
/// "connect" sends nothing; it only looks the route up).
pub(crate) fn route_ip(to: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(to).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// Read datagrams off one UDP socket until the host stops.
pub(crate) fn spawn_udp_reader(
    sh: Arc<Shared>,
    sock: Arc<UdpSocket>,
    local: SocketAddr,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let max = sh.max_message_size;
        // One byte more than allowed, to tell an oversized datagram from
        // one of exactly the maximum size.
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
    })
}

/// Send the datagrams a non-blocking send could not take at once.
pub(crate) fn spawn_udp_slow_sender(
    sh: Arc<Shared>,
    mut slow_rx: mpsc::UnboundedReceiver<(usize, SocketAddr, Bytes)>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
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
    })
}

/// Accept TCP connections until the host stops, up to the configured
/// number open at once.
pub(crate) fn spawn_tcp_acceptor(
    sh: Arc<Shared>,
    listener: TcpListener,
    local: SocketAddr,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = sh.cancel.cancelled() => break,
                r = listener.accept() => match r {
                    Ok((s, remote)) => {
                        if lock(&sh.conns).by_id.len() >= sh.max_tcp {
                            warn!(peer = %remote, max = sh.max_tcp, "refusing TCP connection: too many open");
                            drop(s);
                            continue;
                        }
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
    })
}

/// Where a relay goes, from a SIP URI: IP literals as they are, names
/// through the system resolver (blocking the calling thread).
pub(crate) fn resolve_hop(uri: &[u8]) -> Result<(Transport, SocketAddr), TmError> {
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

    /// RFC 4475 through the host's checks and the transaction table: the
    /// valid requests are accepted and get a transaction and a reply, the
    /// invalid ones are refused (400 / 505) or left to the application as
    /// the README of the torture files says; nothing panics.
    #[test]
    fn torture_messages_through_checks_and_table() {
        use crate::tm::{TableConfig, Tm};
        let valid = [
            "wsinv",
            "intmeth",
            "esc01",
            "escnull",
            "esc02",
            "lwsdisp",
            "longreq",
            "dblreq",
            "semiuri",
            "transports",
            "badbranch",
            "zeromf",
            "inv2543",
        ];
        // Invalid, but for the application (registrar, UA) to refuse.
        let app = ["escruri", "baddate", "regbadct"];
        let mut tm = Tm::new(TableConfig {
            t1: 500,
            t2: 4000,
            fr: 30_000,
            fr_inv: 120_000,
            wait: 5000,
            max: 1000,
            listeners: vec![(Transport::Udp, "127.0.0.1:5060".parse().unwrap())],
        });
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torture");
        let src = Source {
            transport: Transport::Udp,
            remote: "192.0.2.99:5060".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        };
        let mut checked = 0;
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let path = e.path();
            let Some(name) = path.file_stem().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if path.extension().and_then(|x| x.to_str()) != Some("sip") {
                continue;
            }
            let data = Bytes::from(std::fs::read(&path).unwrap());
            let accepted = SipMessage::parse(data)
                .ok()
                .filter(SipMessage::is_request)
                .and_then(|m| fix_via(m, &src).ok())
                .map(|m| (check_request(&m).map_err(|(c, _, _)| c), m));
            let mut out = Vec::new();
            match accepted {
                Some((Ok(()), m)) => {
                    assert!(
                        valid.contains(&name.as_str()) || app.contains(&name.as_str()),
                        "{name}: invalid but accepted"
                    );
                    let mut req = Request::new(m, src.clone());
                    if req.msg().method() != Some(&Method::Ack) {
                        tm.newtran(&mut req, 0, &mut out)
                            .unwrap_or_else(|e| panic!("{name}: {e}"));
                        tm.reply(&mut req, 404, "Not Found", 0, &mut out).unwrap();
                    }
                    checked += 1;
                }
                Some((Err(code), _)) => {
                    assert!(
                        !valid.contains(&name.as_str()),
                        "{name}: valid but refused {code}"
                    );
                    match name.as_str() {
                        "badvers" => assert_eq!(code, 505),
                        _ => assert_eq!(code, 400, "{name}"),
                    }
                }
                None => assert!(
                    !valid.contains(&name.as_str()),
                    "{name}: valid but unparsed"
                ),
            }
        }
        assert!(checked >= valid.len(), "{checked}");
        let mut out = Vec::new();
        tm.on_timer(10_000_000, &mut out);
        tm.on_timer(20_000_000, &mut out);
        assert_eq!(tm.stats().live, 0);
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
