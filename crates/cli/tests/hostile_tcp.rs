//! Hostile SIP/TCP peers against the real binary, each beside a healthy
//! caller whose requests must keep being answered: a peer that never reads
//! its replies, slow-byte senders, many connections from one address, a
//! peer that half-closes, a huge message sent one byte per segment.

mod common;

use common::*;
use socket2::{Domain, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// OPTIONS is answered 200 (the reply copies every Via of the request),
/// anything else 404.
const OPTIONS_SCRIPT: &str = r#"
function ksr_request_route()
    if KSR.is_OPTIONS() then
        KSR.sl.send_reply(200, "OK")
        return
    end
    KSR.sl.send_reply(404, "Not Found")
end
function ksr_evapi_event(evname) end
"#;

/// The harness's config with `sip` keys added to `[sip]`, logging at
/// `level`.
fn sip_config(sip: &str, level: &str) -> String {
    config("")
        .replace("children = 2", &format!("children = 2\n{sip}"))
        .replace("level = \"debug\"", &format!("level = \"{level}\""))
}

/// An OPTIONS from `me` with `vias` Via headers (the first one ours), each
/// padded to `pad` bytes of branch, and `extra` more header lines.
fn options(to: SocketAddr, me: SocketAddr, n: usize, vias: usize, extra: &str) -> String {
    let mut m = format!("OPTIONS sip:ping@{to} SIP/2.0\r\n");
    for v in 0..vias {
        let t = if v == 0 { "TCP" } else { "UDP" };
        m += &format!(
            "Via: SIP/2.0/{t} {me};branch=z9hG4bKh{n}x{v}{}\r\n",
            "p".repeat(170)
        );
    }
    m += &format!(
        "From: <sip:a@{me}>;tag=h{n}\r\nTo: <sip:ping@{to}>\r\nCall-ID: hostile-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    m
}

/// The healthy caller: one OPTIONS over UDP, answered 200.
fn healthy_call(uac: &mut Agent, ev: &Evapi, n: usize) {
    let req = options(ev.udp, uac.addr(), 1_000_000 + n, 1, "").replace("TCP", "UDP");
    uac.send(ev.udp, req).unwrap();
    let got = uac.recv_status(&[], WAIT).map(|(c, _)| c);
    assert_eq!(got, Some(200), "healthy call {n} beside the attack");
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A TCP connection to `to` from `from` (any port), with a receive buffer
/// of `rcvbuf` bytes when given (set before connecting, so the window the
/// peer sees stays small).
fn connect_from(from: &str, to: SocketAddr, rcvbuf: Option<usize>) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    if let Some(n) = rcvbuf {
        s.set_recv_buffer_size(n)?;
    }
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    s.bind(&local.into())?;
    s.connect(&to.into())?;
    let s: TcpStream = s.into();
    s.set_nodelay(true)?;
    Ok(s)
}

/// Whether the server closed `s` (end of stream or reset), without
/// waiting; bytes it sent are read and dropped.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    s.set_nonblocking(false).unwrap();
    closed
}

/// Read SIP messages off `s` until `count` have come or the stream ends.
fn read_replies(s: &mut TcpStream, count: usize) -> Vec<String> {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    let mut chunk = [0u8; 65536];
    while out.len() < count {
        while let Ok(Some(n)) = sip::frame_length(&buf, 1 << 20) {
            let frame: Vec<u8> = buf.drain(..n).collect();
            if !frame.iter().all(|&c| c == b'\r' || c == b'\n') {
                out.push(String::from_utf8_lossy(&frame).into_owned());
            }
        }
        if out.len() >= count {
            break;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    out
}

/// A peer with a 4 KB receive buffer that never reads, sending 64 kB
/// requests with 280 Vias, each answered by a 64 kB reply: the server's
/// queue for it stops at `tcp_send_queue_limit` (cut, logged once), its
/// memory stays within 64 MB of where it started (the old release took
/// 3 GB in 6 s), and the healthy caller is answered throughout.
#[test]
fn a_peer_that_never_reads_is_cut_and_memory_stays_bounded() {
    const REQUESTS: usize = 2_000; // 128 MB of replies if nothing cut it
    let ev = Evapi::start(&sip_config("", "info"), OPTIONS_SCRIPT);
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    healthy_call(&mut uac, &ev, 0);
    let before = rss_kb(ev.pid());
    let mut s = connect_from("127.0.0.1", ev.tcp, Some(4096)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    let me = s.local_addr().unwrap();
    let mut sent = 0;
    let mut peak = before;
    for n in 0..REQUESTS {
        let req = options(ev.tcp, me, n, 280, "");
        assert!(req.len() < 65_535 && req.len() > 60_000, "{}", req.len());
        if s.write_all(req.as_bytes()).is_err() {
            break; // cut
        }
        sent += 1;
        if n % 50 == 0 {
            healthy_call(&mut uac, &ev, n + 1);
            peak = peak.max(rss_kb(ev.pid()));
        }
    }
    let cut = ev.wait_log("cutting TCP connection");
    assert!(
        cut.contains("tcp_send_queue_limit") && cut.contains(&me.to_string()),
        "{cut}"
    );
    assert!(sent < REQUESTS, "all {sent} requests taken: never cut");
    healthy_call(&mut uac, &ev, REQUESTS + 1);
    peak = peak.max(rss_kb(ev.pid()));
    eprintln!("RSS {before} kB before, peak {peak} kB; {sent} requests sent before the cut");
    assert!(
        peak < before + 64 * 1024,
        "RSS went from {before} kB to {peak} kB"
    );
    assert_eq!(ev.log_count("cutting TCP connection"), 1, "logged once");
}

/// Slow-byte senders (one byte every 100 ms, never a whole message) are
/// closed at the message deadline although each byte restarts the idle
/// timer; a healthy TCP caller is served meanwhile.
#[test]
fn slow_byte_senders_are_cut_at_the_message_deadline() {
    const SLOW: usize = 20;
    let ev = Evapi::start(
        &sip_config("tcp_message_timeout_ms = 1000", "info"),
        OPTIONS_SCRIPT,
    );
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| TcpStream::connect(ev.tcp).unwrap())
        .collect();
    let mut healthy = Agent::tcp(ev.tcp).unwrap();
    let text =
        b"OPTIONS sip:slow@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKslow\r\n";
    let mut open = SLOW;
    // At most 8 s of bytes (the idle timeout is 120 s, so only the
    // message deadline can close them).
    for (round, byte) in text.iter().cycle().take(80).enumerate() {
        open = 0;
        for s in slow.iter_mut() {
            if !closed_by_server(s) && s.write_all(&[*byte]).is_ok() {
                open += 1;
            }
        }
        if round % 10 == 0 {
            let req = options(ev.tcp, healthy.addr(), round, 1, "");
            healthy.send(ev.tcp, req).unwrap();
            assert_eq!(healthy.recv_status(&[], WAIT).map(|(c, _)| c), Some(200));
        }
        if open == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(open, 0, "slow senders still connected");
    let line = ev.wait_log("did not arrive whole");
    assert!(line.contains("timeout_ms=1000"), "{line}");
    let req = options(ev.tcp, healthy.addr(), 999, 1, "");
    healthy.send(ev.tcp, req).unwrap();
    assert_eq!(healthy.recv_status(&[], WAIT).map(|(c, _)| c), Some(200));
}

/// 150 connections from 127.0.0.1 against `max_tcp_connections = 100` and
/// `max_tcp_connections_per_ip = 50`: 50 stay, the rest are refused at
/// accept (logged), and a caller from 127.0.0.2 still gets a slot and an
/// answer, as does a healthy UDP caller.
#[test]
fn one_address_cannot_take_every_slot() {
    let ev = Evapi::start(
        &sip_config(
            "max_tcp_connections = 100\nmax_tcp_connections_per_ip = 50",
            "info",
        ),
        OPTIONS_SCRIPT,
    );
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    let mut flood: Vec<TcpStream> = (0..150)
        .map(|_| TcpStream::connect(ev.tcp).unwrap())
        .collect();
    // Wait (bounded) until the server has refused the 100 past the cap.
    let start = Instant::now();
    let mut closed = vec![false; flood.len()];
    while closed.iter().filter(|&&c| c).count() < 100 && start.elapsed() < WAIT {
        for (s, c) in flood.iter_mut().zip(closed.iter_mut()) {
            *c = *c || closed_by_server(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    healthy_call(&mut uac, &ev, 0);
    for (s, c) in flood.iter_mut().zip(closed.iter_mut()) {
        *c = *c || closed_by_server(s);
    }
    assert_eq!(
        closed.iter().filter(|&&c| !c).count(),
        50,
        "open from 127.0.0.1"
    );
    let line = ev.wait_log("max_tcp_connections_per_ip");
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    // Another address still gets in and is served.
    let mut other = connect_from("127.0.0.2", ev.tcp, None).expect("127.0.0.2 connects");
    let me = other.local_addr().unwrap();
    other
        .write_all(options(ev.tcp, me, 1, 1, "").as_bytes())
        .unwrap();
    let replies = read_replies(&mut other, 1);
    assert_eq!(
        replies.first().and_then(|r| status(r)),
        Some(200),
        "{replies:?}"
    );
    healthy_call(&mut uac, &ev, 1);
    drop(flood);
}

/// Five INVITEs, then the peer shuts down its sending side; the calls are
/// answered afterwards by an event client (the default script suspends
/// them): every 100 and every final reply arrives on the same connection,
/// which is then closed.
#[test]
fn a_half_closed_peer_gets_every_reply_on_its_connection() {
    let ev = Evapi::start(
        &sip_config("", "debug"),
        include_str!("../../../examples/default/router.lua"),
    );
    let mut answering = EventClient::connect(ev.events);
    ev.wait_log("event client 0 connected");
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    let mut s = TcpStream::connect(ev.tcp).unwrap();
    let me = s.local_addr().unwrap();
    for n in 0..5 {
        let invite = format!(
            "INVITE sip:bob@{to} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bKhalf{n}\r\nFrom: <sip:alice@{me}>;tag=half{n}\r\nTo: <sip:bob@{to}>\r\nCall-ID: half-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{me}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            to = ev.tcp
        );
        s.write_all(invite.as_bytes()).unwrap();
    }
    s.shutdown(Shutdown::Write).unwrap();
    // Answer after the half-close: the finals are produced later.
    for _ in 0..5 {
        let event = recv_json(&mut answering);
        answering.send(&format!(
            r#"{{"tindex":{},"tlabel":{},"code":486,"reason":"Busy Here"}}"#,
            event["tindex"], event["tlabel"]
        ));
    }
    let replies = read_replies(&mut s, 10);
    let codes: Vec<Option<u16>> = replies.iter().map(|r| status(r)).collect();
    assert_eq!(
        codes.iter().filter(|c| **c == Some(486)).count(),
        5,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == Some(100)).count(),
        5,
        "{codes:?}"
    );
    // Then the server closes its side.
    assert!(
        read_replies(&mut s, 1).is_empty(),
        "end of stream after the replies"
    );
    ev.wait_log("TCP connection closed after its replies");
    // A healthy caller beside it (the default script answers what is not
    // an INVITE at once).
    uac.send(
        ev.udp,
        options(ev.udp, uac.addr(), 7, 1, "").replace("TCP", "UDP"),
    )
    .unwrap();
    assert!(
        uac.recv_status(&[], WAIT).is_some(),
        "the UDP caller is answered"
    );
}

/// One request with 10,000 header lines sent one byte per write: answered,
/// while a healthy caller is served between the bytes.
#[test]
fn a_huge_message_one_byte_per_segment_is_answered() {
    let ev = Evapi::start(
        &sip_config("max_message_size = 262144", "info"),
        OPTIONS_SCRIPT,
    );
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    let mut s = TcpStream::connect(ev.tcp).unwrap();
    s.set_nodelay(true).unwrap();
    let me = s.local_addr().unwrap();
    let extra: String = (0..10_000).map(|i| format!("X-{i}: v\r\n")).collect();
    let req = options(ev.tcp, me, 1, 1, &extra);
    for (i, b) in req.as_bytes().iter().enumerate() {
        s.write_all(&[*b]).unwrap();
        if i % 20_000 == 0 {
            healthy_call(&mut uac, &ev, i);
        }
    }
    let replies = read_replies(&mut s, 1);
    assert_eq!(
        replies.first().and_then(|r| status(r)),
        Some(200),
        "{replies:?}"
    );
    healthy_call(&mut uac, &ev, 1);
}

/// A flood of input that each triggers a warning (5,000 unparseable
/// datagrams, 200 TCP connections of garbage): a few lines per second per
/// kind and a summary with the count held back, not a line per message;
/// the healthy caller is answered.
#[test]
fn floods_of_bad_input_are_summarised_in_the_log() {
    const JUNK: usize = 5_000;
    let ev = Evapi::start(&sip_config("", "info"), OPTIONS_SCRIPT);
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    let junk = Agent::udp("127.0.0.1:0").unwrap();
    for n in 0..JUNK {
        junk.send(ev.udp, format!("\x01\x02 not SIP {n}")).unwrap();
        if n % 1000 == 0 {
            healthy_call(&mut uac, &ev, n);
        }
    }
    for _ in 0..200 {
        let mut s = TcpStream::connect(ev.tcp).unwrap();
        let _ = s.write_all(b"this is not SIP at all\r\n\r\n");
    }
    healthy_call(&mut uac, &ev, JUNK);
    let summary = ev.wait_log("more lines held back");
    assert!(summary.contains("sip::"), "{summary}");
    let udp = ev.log_count("dropping unparseable message");
    assert!((1..100).contains(&udp), "{udp} lines for {JUNK} datagrams");
    let tcp = ev.log_count("cannot frame its stream");
    assert!((1..100).contains(&tcp), "{tcp} lines for 200 connections");
}
