//! The host's share of a request, with a Rust router (no Lua): heap
//! allocations and wall time per request, for three paths over loopback
//! UDP:
//!
//! - `stateless`: OPTIONS answered with `sl_reply` 200;
//! - `stateful`: INVITE answered with `t_reply` 404, then its ACK;
//! - `relay`: INVITE relayed to a UAS thread that answers 200 (which the
//!   host forwards back), then the ACK for the 2xx routed to the UAS.
//!
//! A counting global allocator counts the allocations of every thread but
//! the load generator's and the UAS's (marked not to count) while the
//! requests run: what is left is the host's (router threads, runtime).
//! Run with:
//!
//!     cargo bench -p sip --bench request_path
//!
//! Env: BENCH_REQUESTS (default 50000), BENCH_WINDOW (default 64),
//! BENCH_CHILDREN (default 2), BENCH_PATH (one of stateless, stateful,
//! relay; default all three).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sip::{HostConfig, Method, Request, Router, SipConfig, SipHandle, SipHost, Transport};

/// Counts allocations (not frees: a request's cost is how often it asks).
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the generator's and the UAS's threads: not the host's.
    static SKIP: Cell<bool> = const { Cell::new(false) };
}

fn count(bytes: usize) {
    if !SKIP.try_with(Cell::get).unwrap_or(true) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size());
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count(n);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Stateless,
    Stateful,
    Relay,
}

struct Bench {
    path: Path,
    uas: SocketAddr,
}

impl Router for Bench {
    fn request(&self, host: &SipHandle, req: &mut Request) {
        match (self.path, req.msg().method()) {
            (_, Some(Method::Ack)) if self.path != Path::Relay => {}
            (Path::Stateless, _) => {
                let _ = host.sl_reply(req, 200, "OK");
            }
            (Path::Stateful, _) => {
                let _ = host.t_reply(req, 404, "Not Found");
            }
            (Path::Relay, _) => {
                let _ = req.set_dst_uri(Some(&format!("sip:{}", self.uas)));
                let _ = host.t_relay(req);
            }
        }
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn request(method: &str, local: SocketAddr, n: usize) -> Vec<u8> {
    format!(
        "{method} sip:bench@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKr{n}\r\nMax-Forwards: 70\r\nFrom: <sip:gen@127.0.0.1>;tag=g{n}\r\nTo: <sip:bench@127.0.0.1>\r\nCall-ID: path-{n}@gen\r\nCSeq: 1 {method}\r\nContact: <sip:gen@{local}>\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The ACK for a final reply: to its To tag, on a new branch for a 2xx.
fn ack(reply: &[u8], local: SocketAddr, n: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(reply);
    let to = text
        .lines()
        .find(|l| l.starts_with("To:"))
        .unwrap_or("To: <sip:bench@127.0.0.1>")
        .to_owned();
    format!(
        "ACK sip:bench@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKa{n}\r\nMax-Forwards: 70\r\nFrom: <sip:gen@127.0.0.1>;tag=g{n}\r\n{to}\r\nCall-ID: path-{n}@gen\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A UAS that answers every INVITE relayed to it with 200 (echoing the
/// Via rows, so the reply finds its way back) and swallows ACKs.
fn uas(sock: UdpSocket) {
    SKIP.with(|s| s.set(true));
    let mut buf = vec![0u8; 65536];
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("INVITE") {
            continue;
        }
        let mut out = String::from("SIP/2.0 200 OK\r\n");
        for l in text.lines() {
            if ["Via:", "From:", "Call-ID:", "CSeq:"]
                .iter()
                .any(|h| l.starts_with(h))
            {
                out.push_str(l);
                out.push_str("\r\n");
            } else if l.starts_with("To:") {
                out.push_str(l);
                out.push_str(";tag=uas\r\n");
            }
        }
        out.push_str("Contact: <sip:uas@127.0.0.1>\r\nContent-Length: 0\r\n\r\n");
        let _ = sock.send_to(out.as_bytes(), from);
    }
}

/// Send `total` requests keeping `window` in flight; each final reply is
/// counted (and ACKed for INVITEs). Returns (answered, elapsed).
fn generate(target: SocketAddr, method: &str, total: usize, window: usize) -> (usize, Duration) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let local = sock.local_addr().unwrap();
    let mut buf = vec![0u8; 65536];
    let (mut sent, mut answered) = (0, 0);
    let start = Instant::now();
    while answered < total {
        while sent < total && sent - answered < window {
            sock.send_to(&request(method, local, sent), target).unwrap();
            sent += 1;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let code = &buf[8..11];
                if code[0] == b'1' {
                    continue;
                }
                if method == "INVITE" {
                    let cid = String::from_utf8_lossy(&buf[..n]);
                    let k = cid
                        .split("Call-ID: path-")
                        .nth(1)
                        .and_then(|r| r.split('@').next())
                        .and_then(|d| d.parse().ok())
                        .unwrap_or(0);
                    sock.send_to(&ack(&buf[..n], local, k), target).unwrap();
                }
                answered += 1;
            }
            // A lost datagram: stop counting rather than hang.
            Err(_) => break,
        }
    }
    (answered, start.elapsed())
}

fn run(path: Path, total: usize, window: usize, children: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let uas_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uas_addr = uas_sock.local_addr().unwrap();
    std::thread::spawn(move || uas(uas_sock));
    let cfg = HostConfig {
        sip: SipConfig {
            listen: vec!["udp:127.0.0.1:0".into()],
            children,
            ..SipConfig::default()
        },
        ..HostConfig::default()
    };
    let router = Arc::new(Bench {
        path,
        uas: uas_addr,
    });
    let host = rt.block_on(SipHost::start(cfg, router)).unwrap();
    let target = host
        .local_addrs()
        .into_iter()
        .find(|(t, _)| *t == Transport::Udp)
        .unwrap()
        .1;
    let method = if path == Path::Stateless {
        "OPTIONS"
    } else {
        "INVITE"
    };
    // Warm up (tables, buffers, lazily built state), then measure.
    generate(target, method, 2000, window);
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    let (answered, took) = generate(target, method, total, window);
    let (a1, b1) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    let n = answered.max(1) as f64;
    let name = match path {
        Path::Stateless => "stateless OPTIONS -> 200",
        Path::Stateful => "INVITE -> t_reply 404, ACK",
        Path::Relay => "INVITE relayed -> 200 back, ACK relayed",
    };
    println!(
        "| {name} | {answered}/{total} | {:.1} | {:.1} | {:.0} |",
        (a1 - a0) as f64 / n,
        (b1 - b0) as f64 / n,
        took.as_nanos() as f64 / n,
    );
    rt.block_on(host.shutdown());
}

fn main() {
    let total = env("BENCH_REQUESTS", 50_000);
    let window = env("BENCH_WINDOW", 64);
    let children = env("BENCH_CHILDREN", 2);
    // The generator runs on this thread: its allocations are not the host's.
    SKIP.with(|s| s.set(true));
    println!(
        "host request path, {total} requests, window {window}, {children} router threads \
         (allocations and bytes of the host's threads per request)"
    );
    println!("| path | answered | allocations per request | bytes allocated per request | wall ns per request |");
    println!("|---|---|---|---|---|");
    let only = std::env::var("BENCH_PATH").unwrap_or_default();
    for (name, p) in [
        ("stateless", Path::Stateless),
        ("stateful", Path::Stateful),
        ("relay", Path::Relay),
    ] {
        if only.is_empty() || only == name {
            run(p, total, window, children);
        }
    }
}
