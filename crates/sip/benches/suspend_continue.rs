//! Requests/s through the host with a Rust router: each request is
//! suspended, handed to a "worker" thread (as an event socket worker
//! would), continued by index and label, and answered 200.
//!
//! A load generator thread keeps a window of requests in flight over
//! loopback UDP and counts the final replies. Run with:
//!
//!     cargo bench -p sip --bench suspend_continue
//!
//! Env: BENCH_REQUESTS (default 100000), BENCH_WINDOW (default 256),
//! BENCH_CHILDREN (default 2).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sip::{
    HostConfig, Method, Request, Router, SipConfig, SipHandle, SipHost, SipMessage, Transport,
    TxRef,
};

struct SuspendRouter {
    to_worker: Mutex<mpsc::Sender<TxRef>>,
}

impl Router for SuspendRouter {
    fn request(&self, host: &SipHandle, req: &mut Request) {
        if req.msg().method() == Some(&Method::Ack) {
            return;
        }
        if let Ok(t) = host.t_suspend(req) {
            let _ = self.to_worker.lock().unwrap().send(t);
        }
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn request(method: &str, local: SocketAddr, n: usize, to_tag: Option<&str>) -> Vec<u8> {
    let tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "{method} sip:bench@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKb{n}{ack}\r\nMax-Forwards: 70\r\nFrom: <sip:gen@127.0.0.1>;tag=g{n}\r\nTo: <sip:bench@127.0.0.1>{tag}\r\nCall-ID: bench-{n}@gen\r\nCSeq: 1 {method}\r\nContact: <sip:gen@{local}>\r\nContent-Length: 0\r\n\r\n",
        ack = if method == "ACK" { "a" } else { "" },
    )
    .into_bytes()
}

/// Send `total` requests keeping `window` in flight; returns (answered,
/// lost, elapsed).
fn generate(
    host: &SipHandle,
    target: SocketAddr,
    method: &str,
    total: usize,
    window: usize,
) -> (usize, usize, Duration) {
    // A large receive buffer: replies come in bursts of a window, and a
    // small datagram costs the buffer 1–2 KiB of kernel overhead, so the
    // default (208 KiB) drops replies while this thread is descheduled.
    let sock = {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        let _ = s.set_recv_buffer_size(4 << 20);
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        UdpSocket::from(s)
    };
    let local = sock.local_addr().unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut sent = 0;
    let mut answered = 0;
    let mut lost = 0;
    let mut in_flight = 0;
    let mut buf = vec![0u8; 65_536];
    let start = Instant::now();
    // Bounded: each turn either receives or times out; a timeout writes
    // the window off as lost.
    while answered + lost < total {
        while in_flight < window && sent < total {
            sock.send_to(&request(method, local, sent, None), target)
                .unwrap();
            sent += 1;
            in_flight += 1;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let Ok(m) = SipMessage::parse(Bytes::copy_from_slice(&buf[..n])) else {
                    continue;
                };
                if m.status().is_some_and(|c| c >= 200) {
                    answered += 1;
                    in_flight -= 1;
                    if method == "INVITE" {
                        // ACK the 2xx so it is not retransmitted.
                        let cid =
                            String::from_utf8_lossy(m.call_id().unwrap_or_default()).into_owned();
                        let k: usize = cid
                            .trim_start_matches("bench-")
                            .trim_end_matches("@gen")
                            .parse()
                            .unwrap_or(0);
                        let tag = m
                            .to()
                            .ok()
                            .and_then(|t| t.tag)
                            .map(|t| String::from_utf8_lossy(t).into_owned());
                        let ack = request("ACK", local, k, tag.as_deref());
                        sock.send_to(&ack, target).unwrap();
                    }
                }
            }
            Err(_) => {
                if std::env::var_os("BENCH_VERBOSE").is_some() {
                    eprintln!(
                        "timeout: {in_flight} in flight, {sent} sent, {answered} answered, at {:?}; host {:?}",
                        start.elapsed(),
                        host.stats()
                    );
                }
                lost += in_flight;
                in_flight = 0;
            }
        }
    }
    (answered, lost, start.elapsed())
}

fn main() {
    let total = env("BENCH_REQUESTS", 100_000);
    let window = env("BENCH_WINDOW", 256);
    let children = env("BENCH_CHILDREN", 2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for method in ["MESSAGE", "INVITE"] {
        let (tx, rx) = mpsc::channel::<TxRef>();
        let router = Arc::new(SuspendRouter {
            to_worker: Mutex::new(tx),
        });
        let cfg = HostConfig {
            sip: SipConfig {
                listen: vec!["udp:127.0.0.1:0".into()],
                children,
                max_transactions: 2_000_000,
                ..SipConfig::default()
            },
            ..HostConfig::default()
        };
        let host = rt.block_on(SipHost::start(cfg, router)).unwrap();
        let addr = host
            .local_addrs()
            .into_iter()
            .find(|(t, _)| *t == Transport::Udp)
            .unwrap()
            .1;
        let handle = host.handle();
        // The worker: continue and answer, as an evapi worker would on a
        // client's message. Ends when the router is gone.
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let worker = std::thread::spawn(move || {
            // Bounded by the stop flag, checked at least every 100 ms.
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(t) = rx.recv_timeout(Duration::from_millis(100)) {
                    if let Ok(mut req) = handle.t_continue(t.index, t.label) {
                        let _ = handle.t_reply(&mut req, 200, "OK");
                    }
                }
            }
        });
        // Warm up, then measure.
        generate(&host.handle(), addr, method, 2_000.min(total), window);
        let (answered, lost, elapsed) = generate(&host.handle(), addr, method, total, window);
        let stats = host.handle().stats();
        stop.store(true, Ordering::Relaxed);
        let _ = worker.join();
        rt.block_on(host.shutdown());
        let rate = answered as f64 / elapsed.as_secs_f64();
        println!(
            "{method:8} requests {total}, window {window}, children {children}: {answered} answered, {lost} lost, {:.2} s, {rate:.0} req/s (suspended now {}, resumed {})",
            elapsed.as_secs_f64(),
            stats.suspended,
            stats.resumed,
        );
    }
}
