//! Fan-out benchmark: frames per second delivered by the event socket to 1,
//! 8 and 64 netstring clients, and the memory an idle client costs.
//!
//! `cargo bench -p evapi --bench fanout` (add `-- --quick` for a short run,
//! `-- --memory` for the memory part alone, `-- --clients 64` for one
//! fan-out case alone).
//!
//! One thread relays 200-byte frames as fast as it can; each client is a
//! thread with a blocking socket that decodes every netstring it receives
//! (in place, with the crate's own rules) and checks its length and
//! sequence number, so a lost, duplicated or reordered frame fails the run;
//! a frame counts as delivered only once a client has checked it. All of it
//! shares the machine's cores with the server, as a real deployment's
//! clients would not: the figures are a floor.
//!
//! The relaying thread keeps each client's queue under a few megabytes (when
//! the slowest client has more than 4 MB queued, it sleeps until every queue
//! is under 2 MB), so the figure is the sustained rate, not the rate of
//! filling memory.
//!
//! Besides the rates, each case prints the CPU time of the whole process
//! (server, relaying thread, clients) per frame delivered, how many cores
//! that kept busy on average, and heap allocations per relay (on the
//! relaying thread, which does the server's per-relay work, and in the
//! whole process), counted by a counting global allocator.

use evapi::codec::NetstringCodec;
use evapi::{Config, EventSocket, NoHandler};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FRAME_BYTES: usize = 200;

/// Counts heap allocations (of every thread: relaying, server, clients),
/// to report allocations per relay.
struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Allocations made by this thread (read on the relaying thread: its
    /// share is the server's per-relay work plus the loop around it).
    static MINE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count_allocation() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    let _ = MINE.try_with(|n| n.set(n.get() + 1));
}

unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_allocation();
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--idle-child") {
        idle_child(&args[pos + 1], args[pos + 2].parse().unwrap());
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    if args.iter().any(|a| a == "--memory") {
        idle_memory(if quick { 1000 } else { 10_000 });
        return;
    }
    let seconds = if quick { 1.0 } else { 5.0 };
    // `--clients N` runs that case alone (for profiling one case).
    let cases: Vec<usize> = match args.iter().position(|a| a == "--clients") {
        Some(pos) => vec![args[pos + 1].parse().expect("--clients N")],
        None => vec![1, 8, 64],
    };
    println!(
        "evapi fan-out: {FRAME_BYTES}-byte frames, {seconds} s per case, {} cores",
        cores()
    );
    println!("| clients | frames relayed/s | frames delivered/s (total) | per client/s | MB/s delivered | CPU ns per frame delivered | cores busy | allocations per relay: relaying thread / all |");
    println!("|---|---|---|---|---|---|---|---|");
    for &clients in &cases {
        fanout(clients, Duration::from_secs_f64(seconds));
    }
    if cases.len() > 1 {
        idle_memory(if quick { 1000 } else { 10_000 });
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn fanout(clients: usize, run_for: Duration) {
    // The clients' check counts in ASCII what the relaying loop writes.
    for n in [0, 9, 199, 9_999_999_999] {
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        write_seq(&mut a, n);
        increment_digits(&mut a);
        write_seq(&mut b, n + 1);
        assert_eq!(a, b);
    }
    let rt = runtime();
    let config = Config {
        bind_addr: "127.0.0.1:0".into(),
        max_clients: clients + 1,
        client_queue_limit: 64 << 20,
        ..Config::default()
    };
    let socket = rt
        .block_on(EventSocket::bind(config, Arc::new(NoHandler)))
        .unwrap();
    let addr = socket.local_addr();
    let handle = socket.handle();

    let received = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..clients)
        .map(|_| {
            let stream = TcpStream::connect(addr).unwrap();
            let received = received.clone();
            std::thread::Builder::new()
                .name("client".into())
                .spawn(move || read_frames(stream, &received))
                .unwrap()
        })
        .collect();
    while handle.client_count() < clients {
        std::thread::sleep(Duration::from_millis(1));
    }

    let high: usize = 4 << 20;
    let mut frame = vec![b'x'; FRAME_BYTES];
    let cpu_before = cpu_seconds();
    let allocs_before = ALLOCATIONS.load(Ordering::Relaxed);
    let mine_before = MINE.with(|n| n.get());
    let start = Instant::now();
    let mut seq: u64 = 0;
    while start.elapsed() < run_for {
        for _ in 0..256 {
            write_seq(&mut frame[..16], seq);
            let sent = handle.relay(&frame).unwrap();
            assert_eq!(sent, clients, "a client was lost");
            seq += 1;
        }
        // Pace on the slowest reader: when anyone has more than 4 MB
        // queued, sleep until everyone is under 2 MB, so the relaying
        // thread leaves the cores to the writers and readers meanwhile.
        if handle.max_queued_bytes() > high {
            while handle.max_queued_bytes() > high / 2 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
    let relay_time = start.elapsed();
    let expected = seq * clients as u64;
    while received.load(Ordering::Relaxed) < expected {
        std::thread::sleep(Duration::from_micros(200));
        assert!(start.elapsed() < run_for * 10, "frames lost");
    }
    let total = start.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    let allocs = ALLOCATIONS.load(Ordering::Relaxed) - allocs_before;
    let mine = MINE.with(|n| n.get()) - mine_before;
    let stats = handle.stats();
    assert_eq!(stats.slow_cut, 0);
    rt.block_on(socket.shutdown());
    for r in readers {
        assert_eq!(r.join().unwrap(), seq, "every client got every frame");
    }
    let delivered_per_s = expected as f64 / total.as_secs_f64();
    println!(
        "| {clients} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.2} | {:.3} / {:.3} |",
        seq as f64 / relay_time.as_secs_f64(),
        delivered_per_s,
        delivered_per_s / clients as f64,
        delivered_per_s * (FRAME_BYTES + 5) as f64 / 1e6,
        cpu * 1e9 / expected as f64,
        cpu / total.as_secs_f64(),
        mine as f64 / seq as f64,
        allocs as f64 / seq as f64,
    );
}

/// The 16 decimal digits of `seq` (zero-padded), as `{seq:016}` would
/// write them, without formatting machinery in the relaying loop.
fn write_seq(out: &mut [u8], mut seq: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (seq % 10) as u8;
        seq /= 10;
    }
}

/// Add one to a zero-padded decimal number written in ASCII digits.
fn increment_digits(digits: &mut [u8]) {
    for d in digits.iter_mut().rev() {
        if *d == b'9' {
            *d = b'0';
        } else {
            *d += 1;
            return;
        }
    }
}

/// CPU time (user + system) of this process so far: server, relaying
/// thread and clients together.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and
    // stime are the 12th and 13th, in clock ticks of 1/100 s.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

/// Decode netstrings until the server closes; check each one's length and
/// sequence number; return the count.
///
/// Reads go straight into one large buffer and frames are decoded in place
/// (`NetstringCodec::decode_slice`, the same rules as the server's decoder),
/// so a client costs one `read` per many frames and no copy or allocation
/// per frame, as a client built for throughput would.
fn read_frames(mut stream: TcpStream, received: &AtomicU64) -> u64 {
    const BUF: usize = 512 * 1024;
    let codec = NetstringCodec::new(1 << 16);
    let mut buf = vec![0u8; BUF];
    // Undecoded bytes are buf[start..end].
    let (mut start, mut end) = (0, 0);
    let mut next: u64 = 0;
    // The sequence number expected next, as the 16 digits a frame starts
    // with: compared whole, then counted up in place.
    let mut expect = [b'0'; 16];
    loop {
        if BUF - end < BUF / 4 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        let n = match stream.read(&mut buf[end..]) {
            Ok(0) | Err(_) => {
                assert_eq!(start, end, "connection closed inside a frame");
                return next;
            }
            Ok(n) => n,
        };
        end += n;
        let mut got = 0;
        while let Some((frame, used)) = codec
            .decode_slice(&buf[start..end])
            .expect("valid netstrings")
        {
            assert_eq!(frame.len(), FRAME_BYTES, "frame length");
            if frame[..16] != expect {
                panic!(
                    "frames in order, none lost: expected {next}, got {:?}",
                    String::from_utf8_lossy(&frame[..16])
                );
            }
            increment_digits(&mut expect);
            next += 1;
            got += 1;
            start += used;
        }
        if start == end {
            (start, end) = (0, 0);
        }
        received.fetch_add(got, Ordering::Relaxed);
    }
}

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Memory of the server per idle client: the clients live in a child
/// process (this binary again), so only the server's side is counted.
fn idle_memory(n: usize) {
    let rt = runtime();
    let config = Config {
        bind_addr: "127.0.0.1:0".into(),
        max_clients: n,
        ..Config::default()
    };
    let socket = rt
        .block_on(EventSocket::bind(config, Arc::new(NoHandler)))
        .unwrap();
    let handle = socket.handle();
    // Warm up the allocator and the runtime with a first, small wave.
    let warm = spawn_idle(socket.local_addr(), 100);
    wait_for(&handle, 100);
    drop(warm);
    wait_for(&handle, 0);
    let before = rss_kb();
    let child = spawn_idle(socket.local_addr(), n);
    wait_for(&handle, n);
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_kb();
    drop(child);
    wait_for(&handle, 0);
    // A second wave the same size: memory freed by the first is reused, so
    // the peak does not grow wave after wave (the allocator keeps freed
    // pages for reuse rather than returning them all to the system).
    let child = spawn_idle(socket.local_addr(), n);
    wait_for(&handle, n);
    std::thread::sleep(Duration::from_millis(200));
    let second = rss_kb();
    drop(child);
    wait_for(&handle, 0);
    std::thread::sleep(Duration::from_millis(200));
    let gone = rss_kb();
    rt.block_on(socket.shutdown());
    println!();
    println!(
        "idle clients: {n}; server RSS {before} kB before, {after} kB with them: {:.2} kB per idle client",
        (after.saturating_sub(before)) as f64 / n as f64
    );
    println!("after they left: {gone} kB; a second wave of {n}: {second} kB at its peak");
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_idle(addr: SocketAddr, n: usize) -> Child {
    Child(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--idle-child", &addr.to_string(), &n.to_string()])
            .spawn()
            .unwrap(),
    )
}

fn wait_for(handle: &evapi::EvapiHandle, n: usize) {
    let start = Instant::now();
    while handle.client_count() != n {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "clients did not connect"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn idle_child(addr: &str, n: usize) {
    let addr: SocketAddr = addr.parse().unwrap();
    let clients: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Stay connected until the parent kills us.
    std::thread::sleep(Duration::from_secs(600));
    drop(clients);
}
