//! A small blocking SIP agent for tests (feature `test-agent`): plays a
//! UAC or a UAS over loopback UDP or TCP against a running host, so other
//! crates' tests can drive SIP traffic without an external tool.
//!
//! Every receive takes a timeout, so a test that waits for a message that
//! never comes fails instead of hanging.
//!
//! Tests that check the wire text of what a program sends (the program's
//! own integration tests, for one) use the text forms: [`Agent::invite`],
//! [`Agent::recv_text`], [`Agent::recv_status`], [`Agent::ack_for`], and
//! the [`status`] and [`header`] readers of a message's text.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::message::{frame_length, Method, SipMessage};
use crate::request::Transport;

enum Sock {
    Udp(UdpSocket),
    Tcp(TcpStream, BytesMut),
    /// Listening; the first accepted connection becomes the stream.
    TcpListen(TcpListener, Option<(TcpStream, BytesMut)>),
}

/// One SIP endpoint on a socket of its own.
pub struct Agent {
    sock: Sock,
    local: SocketAddr,
    queue: VecDeque<(SipMessage, SocketAddr)>,
}

/// A fresh branch with the magic cookie, unique in the process.
pub fn branch() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    format!("z9hG4bKt{}", N.fetch_add(1, Ordering::Relaxed))
}

impl Agent {
    /// A UDP agent bound to `bind` (e.g. `127.0.0.1:0`).
    pub fn udp(bind: &str) -> io::Result<Agent> {
        let s = UdpSocket::bind(bind)?;
        let local = s.local_addr()?;
        Ok(Agent {
            sock: Sock::Udp(s),
            local,
            queue: VecDeque::new(),
        })
    }

    /// A UDP agent bound to `bind` whose socket asks for a receive buffer
    /// of `bytes` (the kernel caps it at `net.core.rmem_max`): for tests
    /// whose replies come in bursts the agent must not lose.
    pub fn udp_with_buffer(bind: &str, bytes: usize) -> io::Result<Agent> {
        let agent = Agent::udp(bind)?;
        if let Sock::Udp(s) = &agent.sock {
            socket2::SockRef::from(s).set_recv_buffer_size(bytes)?;
        }
        Ok(agent)
    }

    /// A TCP agent connected to `server` (a UAC talking to the host).
    pub fn tcp(server: SocketAddr) -> io::Result<Agent> {
        let s = TcpStream::connect(server)?;
        s.set_nodelay(true)?;
        let local = s.local_addr()?;
        Ok(Agent {
            sock: Sock::Tcp(s, BytesMut::new()),
            local,
            queue: VecDeque::new(),
        })
    }

    /// A TCP agent listening on `bind` (a UAS the host connects to).
    pub fn tcp_listen(bind: &str) -> io::Result<Agent> {
        let l = TcpListener::bind(bind)?;
        let local = l.local_addr()?;
        Ok(Agent {
            sock: Sock::TcpListen(l, None),
            local,
            queue: VecDeque::new(),
        })
    }

    /// The agent's address (what its Via says).
    pub fn addr(&self) -> SocketAddr {
        self.local
    }

    /// The transport it uses.
    pub fn transport(&self) -> Transport {
        match self.sock {
            Sock::Udp(_) => Transport::Udp,
            _ => Transport::Tcp,
        }
    }

    /// Send raw bytes (`to` is ignored on a TCP stream).
    pub fn send(&self, to: SocketAddr, data: impl AsRef<[u8]>) -> io::Result<()> {
        let data = data.as_ref();
        match &self.sock {
            Sock::Udp(s) => s.send_to(data, to).map(|_| ()),
            Sock::Tcp(s, _) => (&*s).write_all(data),
            Sock::TcpListen(_, Some((s, _))) => (&*s).write_all(data),
            Sock::TcpListen(_, None) => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "no connection accepted yet",
            )),
        }
    }

    /// The next message, or `None` when `timeout` passes first (or a TCP
    /// peer closed).
    pub fn recv(&mut self, timeout: Duration) -> Option<(SipMessage, SocketAddr)> {
        if let Some(m) = self.queue.pop_front() {
            return Some(m);
        }
        let deadline = Instant::now() + timeout;
        // Bounded by the deadline: every wait below is capped by it.
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let left = left.max(Duration::from_millis(1));
            match &mut self.sock {
                Sock::Udp(s) => {
                    s.set_read_timeout(Some(left)).ok()?;
                    let mut buf = vec![0u8; 65_536];
                    match s.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            buf.truncate(n);
                            if let Ok(m) = SipMessage::parse(Bytes::from(buf)) {
                                return Some((m, from));
                            }
                        }
                        Err(_) => return None,
                    }
                }
                Sock::TcpListen(l, conn) => {
                    if conn.is_none() {
                        l.set_nonblocking(true).ok()?;
                        match l.accept() {
                            Ok((s, _)) => {
                                s.set_nonblocking(false).ok()?;
                                *conn = Some((s, BytesMut::new()));
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(5).min(left)),
                        }
                        continue;
                    }
                    let (s, buf) = conn.as_mut()?;
                    match read_frame(s, buf, left) {
                        Frame::Msg(m) => {
                            let peer = s.peer_addr().ok()?;
                            return Some((*m, peer));
                        }
                        Frame::Again => {}
                        Frame::Closed => return None,
                    }
                }
                Sock::Tcp(s, buf) => match read_frame(s, buf, left) {
                    Frame::Msg(m) => {
                        let peer = s.peer_addr().ok()?;
                        return Some((*m, peer));
                    }
                    Frame::Again => {}
                    Frame::Closed => return None,
                },
            }
        }
    }

    /// Wait for a message `pred` accepts; others are kept for later
    /// `recv`s. `None` on timeout.
    pub fn expect(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&SipMessage) -> bool,
    ) -> Option<(SipMessage, SocketAddr)> {
        if let Some(i) = self.queue.iter().position(|(m, _)| pred(m)) {
            return self.queue.remove(i);
        }
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        let found = loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break None;
            };
            let Some(m) = self.recv_fresh(left) else {
                break None;
            };
            if pred(&m.0) {
                break Some(m);
            }
            skipped.push(m);
        };
        self.queue.extend(skipped);
        found
    }

    fn recv_fresh(&mut self, timeout: Duration) -> Option<(SipMessage, SocketAddr)> {
        let saved = std::mem::take(&mut self.queue);
        let r = self.recv(timeout);
        self.queue = saved;
        r
    }

    /// Wait for a reply with this status code (and CSeq method, if given).
    pub fn expect_status(
        &mut self,
        code: u16,
        method: Option<Method>,
        timeout: Duration,
    ) -> Option<SipMessage> {
        self.expect(timeout, |m| {
            m.status() == Some(code)
                && method
                    .as_ref()
                    .is_none_or(|me| m.cseq().is_ok_and(|c| &c.method == me))
        })
        .map(|(m, _)| m)
    }

    /// Wait for a request of this method; returns it and its sender.
    pub fn expect_request(
        &mut self,
        method: Method,
        timeout: Duration,
    ) -> Option<(SipMessage, SocketAddr)> {
        self.expect(timeout, |m| m.method() == Some(&method))
    }

    /// Send an INVITE from this agent (`sip:alice@<agent>`, with `rport`)
    /// to `sip:bob@<to>`, with Call-ID `call_id` and branch
    /// `z9hG4bK<branch>`; returns its text, for [`Agent::ack_for`] and for
    /// assertions.
    pub fn invite(&self, to: SocketAddr, call_id: &str, branch: &str) -> io::Result<String> {
        let msg = format!(
            "INVITE sip:bob@{to} SIP/2.0\r\n\
             Via: SIP/2.0/{t} {me};branch=z9hG4bK{branch};rport\r\n\
             From: \"Alice\" <sip:alice@{me}>;tag=from-{call_id}\r\n\
             To: <sip:bob@{to}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:alice@{me}>\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n",
            t = self.transport().via_name(),
            me = self.local
        );
        self.send(to, &msg)?;
        Ok(msg)
    }

    /// The next message as text (lossy UTF-8) with its sender, or `None`
    /// when `timeout` passes first.
    pub fn recv_text(&mut self, timeout: Duration) -> Option<(String, SocketAddr)> {
        self.recv(timeout).map(|(m, from)| (text(&m), from))
    }

    /// The next reply whose code is not in `skip` (e.g. `&[100]` to pass
    /// over 100 Trying), as (code, text). Replies with a skipped code are
    /// dropped; requests that arrive meanwhile are kept for later
    /// receives. `None` when `timeout` passes first.
    pub fn recv_status(&mut self, skip: &[u16], timeout: Duration) -> Option<(u16, String)> {
        let deadline = Instant::now() + timeout;
        let mut requests = Vec::new();
        let found = loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break None;
            };
            let Some((m, from)) = self.recv(left) else {
                break None;
            };
            match m.status() {
                Some(c) if skip.contains(&c) => {}
                Some(c) => break Some((c, text(&m))),
                None => requests.push((m, from)),
            }
        };
        self.queue.extend(requests);
        found
    }

    /// Send the ACK of a non-2xx final `reply` to `invite` (both as text,
    /// as [`Agent::invite`] and [`Agent::recv_status`] give them): the
    /// INVITE's Via (same branch, RFC 3261 §17.1.1.3), From, Call-ID and
    /// CSeq number, the reply's To (with its tag). Returns its text.
    pub fn ack_for(&self, to: SocketAddr, invite: &str, reply: &str) -> io::Result<String> {
        let missing = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no {what} to build the ACK from"),
            )
        };
        let get = |msg: &str, name: &str| header(msg, name).ok_or_else(|| missing(name));
        let via = get(invite, "Via")?;
        let from = get(invite, "From")?;
        let call_id = get(invite, "Call-ID")?;
        let cseq = get(invite, "CSeq")?;
        let number = cseq.split_whitespace().next().unwrap_or("1");
        let to_hdr = get(reply, "To")?;
        let ruri = invite
            .split(' ')
            .nth(1)
            .ok_or_else(|| missing("Request-URI"))?;
        let ack = format!(
            "ACK {ruri} SIP/2.0\r\nVia: {via}\r\nFrom: {from}\r\nTo: {to_hdr}\r\nCall-ID: {call_id}\r\nCSeq: {number} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        self.send(to, &ack)?;
        Ok(ack)
    }

    /// Drop whatever is queued or arrives within `for_`.
    pub fn drain(&mut self, for_: Duration) -> usize {
        let mut n = self.queue.len();
        self.queue.clear();
        let deadline = Instant::now() + for_;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if self.recv(left).is_none() {
                break;
            }
            n += 1;
        }
        n
    }
}

enum Frame {
    Msg(Box<SipMessage>),
    Again,
    Closed,
}

fn read_frame(s: &mut TcpStream, buf: &mut BytesMut, left: Duration) -> Frame {
    loop {
        match frame_length(buf, 1 << 20) {
            Ok(Some(n)) => {
                let f = buf.split_to(n).freeze();
                if f.iter().all(|&c| c == b'\r' || c == b'\n') {
                    continue;
                }
                return match SipMessage::parse(f) {
                    Ok(m) => Frame::Msg(Box::new(m)),
                    Err(_) => Frame::Again,
                };
            }
            Ok(None) => break,
            Err(_) => return Frame::Closed,
        }
    }
    if s.set_read_timeout(Some(left)).is_err() {
        return Frame::Closed;
    }
    let mut tmp = [0u8; 16_384];
    match s.read(&mut tmp) {
        Ok(0) => Frame::Closed,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            Frame::Again
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Frame::Closed
        }
        Err(_) => Frame::Closed,
    }
}

/// The dialog-forming fields of a test call, to build its requests.
#[derive(Debug, Clone)]
pub struct Call {
    /// Call-ID.
    pub call_id: String,
    /// From tag.
    pub from_tag: String,
    /// Request-URI.
    pub ruri: String,
    /// The caller's address, for its Via.
    pub local: SocketAddr,
    /// The caller's transport, for its Via.
    pub transport: Transport,
}

impl Call {
    /// A call from an agent to `ruri`.
    pub fn new(agent: &Agent, call_id: &str, ruri: &str) -> Call {
        Call {
            call_id: call_id.to_owned(),
            from_tag: format!("ft-{call_id}"),
            ruri: ruri.to_owned(),
            local: agent.addr(),
            transport: agent.transport(),
        }
    }

    /// A request of this call: `extra` is header lines, each ending in
    /// CRLF; `to_tag` set for in-dialog requests and ACKs.
    pub fn request(
        &self,
        method: &str,
        branch: &str,
        cseq: u32,
        to_tag: Option<&str>,
        extra: &str,
    ) -> Vec<u8> {
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/{t} {local};branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag={ft}\r\nTo: <{ruri}>{to_tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: <sip:alice@{local}>\r\n{extra}Content-Length: 0\r\n\r\n",
            ruri = self.ruri,
            t = self.transport.via_name(),
            local = self.local,
            ft = self.from_tag,
            cid = self.call_id,
        )
        .into_bytes()
    }
}

/// A message's text, as it was on the wire (lossy UTF-8).
pub fn text(m: &SipMessage) -> String {
    String::from_utf8_lossy(m.buffer()).into_owned()
}

/// The status code of a reply's text (`None` for a request).
pub fn status(msg: &str) -> Option<u16> {
    let line = msg.lines().next()?;
    let rest = line.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

/// The first value of a header in a message's text, trimmed (the name
/// matched case-insensitively, full names only).
pub fn header(msg: &str, name: &str) -> Option<String> {
    msg.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// A reply to `req` (its Vias, From, To, Call-ID, CSeq copied), with a To
/// tag when given.
pub fn reply(req: &SipMessage, code: u16, reason: &str, to_tag: Option<&str>) -> Vec<u8> {
    req.response(code, reason.as_bytes(), to_tag.map(str::as_bytes), &[])
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

/// The ACK a UAC sends for a 2xx: a new transaction, with the To tag of
/// the reply.
pub fn ack_2xx(call: &Call, cseq: u32, ok: &SipMessage) -> Vec<u8> {
    let tag = ok
        .to()
        .ok()
        .and_then(|t| t.tag)
        .map(|t| String::from_utf8_lossy(t).into_owned());
    call.request("ACK", &branch(), cseq, tag.as_deref(), "")
}

/// Whether SIPp (Debian package `sip-tester`) is on PATH, for tests that
/// drive it. Without it: a skip note and `false`, unless the environment
/// sets `EVAPI_REQUIRE_SIPP=1` (as `.ci/run` does), in which case the test
/// fails, so CI cannot pass silently without SIPp.
pub fn sipp_available() -> bool {
    let found = std::process::Command::new("sipp")
        .arg("-v")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var("EVAPI_REQUIRE_SIPP").as_deref() == Ok("1") {
            panic!("sipp is not on PATH and EVAPI_REQUIRE_SIPP=1 (apt-get install sip-tester)");
        }
        eprintln!(
            "SKIPPED: sipp not on PATH (install the sip-tester package; set EVAPI_REQUIRE_SIPP=1 to make this fatal)"
        );
    }
    found
}

/// A port on 127.0.0.1 that is free for both UDP and TCP, for a program a
/// test starts on a fixed port (SIPp's `-p`, a listener in a config).
///
/// Binding port 0 and closing the socket is not enough: until the program
/// binds the port, any socket bound to port 0 on the machine (the program's
/// own, SIPp's, another test's) may be given the same port by the kernel,
/// and the program then fails to start (CI saw SIPp's "Unable to bind main
/// socket, errno = 98"). These ports come from below the kernel's ephemeral
/// range (`net.ipv4.ip_local_port_range`), which port-0 binds never take,
/// each handed out once per process, from an offset set by the process id
/// so two test processes seldom try the same ones; a port some program
/// holds is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    // 20,000 ports below the range, or what lies above it if that is
    // bigger (a range starting low).
    let below = (low.saturating_sub(20_000).max(1024), low);
    let above = (high + 1, 65536u32);
    let (start, end) = if below.1.saturating_sub(below.0) >= above.1.saturating_sub(above.0) {
        below
    } else {
        above
    };
    let size = end.saturating_sub(start).max(1);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % size,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..size {
        let port = (start + NEXT.fetch_add(1, Ordering::Relaxed) % size) as u16;
        let udp = UdpSocket::bind(("127.0.0.1", port));
        let tcp = TcpListener::bind(("127.0.0.1", port));
        if udp.is_ok() && tcp.is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {start}..{end}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent against itself over loopback: the text forms round-trip.
    #[test]
    fn invite_recv_status_and_ack_over_loopback() {
        let mut uas = Agent::udp("127.0.0.1:0").unwrap();
        let mut uac = Agent::udp("127.0.0.1:0").unwrap();
        let to = uas.addr();
        let invite = uac.invite(to, "agent-1", "a1").unwrap();
        let (got, from) = uas.recv_text(Duration::from_secs(5)).unwrap();
        assert_eq!(got, invite);
        assert_eq!(from, uac.addr());
        assert_eq!(header(&got, "call-id").as_deref(), Some("agent-1"));
        assert_eq!(status(&got), None);
        let inv = SipMessage::parse(Bytes::from(got.into_bytes())).unwrap();
        // A request in between is kept; 100 and 180 are skipped.
        for (code, tag) in [(100, None), (180, Some("t")), (486, Some("t"))] {
            uas.send(from, reply(&inv, code, "X", tag)).unwrap();
            if code == 180 {
                uas.send(from, b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKo\r\nCall-ID: o\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").unwrap();
            }
        }
        let (code, final_) = uac
            .recv_status(&[100, 180], Duration::from_secs(5))
            .unwrap();
        assert_eq!((code, status(&final_)), (486, Some(486)));
        let (kept, _) = uac.recv(Duration::from_secs(5)).unwrap();
        assert_eq!(kept.method(), Some(&Method::Options));
        let ack = uac.ack_for(to, &invite, &final_).unwrap();
        let (got, _) = uas.recv_text(Duration::from_secs(5)).unwrap();
        assert_eq!(got, ack);
        assert_eq!(header(&ack, "Via"), header(&invite, "Via"));
        assert!(header(&ack, "To").unwrap().ends_with(";tag=t"), "{ack}");
        assert_eq!(header(&ack, "CSeq").as_deref(), Some("1 ACK"));
        assert!(uac.recv_status(&[], Duration::from_millis(1)).is_none());
    }

    /// Ports handed out are distinct, outside the ephemeral range, and
    /// bindable for UDP and TCP when handed out.
    #[test]
    fn free_ports_are_distinct_and_below_the_ephemeral_range() {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap_or_else(|_| "32768 60999".into());
        let mut it = range.split_whitespace().map(|v| v.parse::<u16>().unwrap());
        let (low, high) = (it.next().unwrap(), it.next().unwrap());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let port = free_port();
            assert!(!(low..=high).contains(&port), "{port} in {low}..={high}");
            assert!(seen.insert(port), "{port} handed out twice");
            std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
            std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }
}
