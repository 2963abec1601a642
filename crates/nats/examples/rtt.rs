//! The node side of the NATS round trip alone, without SIP or a script:
//! a plain thread (as a script thread would) sends `--count` watched
//! relays at `--rate` per second through this crate, a worker (run
//! `bench_worker` beside it) answers each on its reply subject, and the
//! answer's arrival on a `nats-worker` thread ([`nats::NatsHandler::reply`])
//! ends the round trip. Prints the round trip's percentiles in µs.
//!
//! ```text
//! nats-server -a 127.0.0.1 -p 14222 &
//! target/release/examples/bench_worker --url nats://127.0.0.1:14222 &
//! cargo run --release -p nats --example rtt -- --url nats://127.0.0.1:14222 \
//!     [--count 20000] [--rate 2000]
//! ```
//!
//! Each event is `{"tindex":<n>,"tlabel":<ns since start>}`; the worker
//! echoes both, so the answer says when its event left.

use bytes::Bytes;
use nats::{NatsHandler, NatsSection, SendKind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Clock {
    start: Instant,
    rtts: Mutex<Vec<u64>>,
}

impl NatsHandler for Clock {
    fn reply(&self, payload: &Bytes) {
        let now = self.start.elapsed().as_nanos() as u64;
        let v: serde_json::Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(_) => return,
        };
        if let Some(sent) = v["tlabel"].as_u64() {
            self.rtts.lock().unwrap().push(now.saturating_sub(sent));
        }
    }
}

fn main() {
    let mut url = "nats://127.0.0.1:4222".to_string();
    let (mut count, mut rate) = (20_000u64, 2_000.0f64);
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().expect("a value");
        match k.as_str() {
            "--url" => url = v,
            "--count" => count = v.parse().expect("--count: a number"),
            "--rate" => rate = v.parse().expect("--rate: a number"),
            _ => panic!("unknown option {k}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let clock = Arc::new(Clock {
        start: Instant::now(),
        rtts: Mutex::new(Vec::with_capacity(count as usize)),
    });
    let section = NatsSection {
        servers: vec![url],
        node: "rtt".into(),
        ..Default::default()
    };
    let nats = rt.block_on(async {
        let bound = nats::connect(&section).await.expect("connect");
        bound.start(clock.clone(), 1).await.expect("start")
    });
    let handle = nats.handle();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !handle.connected() {
        assert!(Instant::now() < deadline, "not connected");
        std::thread::sleep(Duration::from_millis(10));
    }
    let gap = Duration::from_secs_f64(1.0 / rate);
    let t0 = Instant::now();
    let mut refused = 0;
    for n in 0..count {
        let due = t0 + gap * n as u32;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let sent = clock.start.elapsed().as_nanos() as u64;
        let ev = format!(r#"{{"tindex":{n},"tlabel":{sent}}}"#);
        if handle
            .send(SendKind::Relay, ev.as_bytes(), b"", true)
            .is_err()
        {
            refused += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while (clock.rtts.lock().unwrap().len() as u64) < count - refused && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut r = clock.rtts.lock().unwrap().clone();
    r.sort_unstable();
    let q = |p: f64| {
        r.get(((r.len() as f64 * p) as usize).min(r.len().saturating_sub(1)))
            .map_or(0.0, |v| *v as f64 / 1000.0)
    };
    println!(
        "sent={count} refused={refused} answered={} p50_us={:.0} p90_us={:.0} p99_us={:.0} max_us={:.0}",
        r.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        r.last().map_or(0.0, |v| *v as f64 / 1000.0)
    );
    rt.block_on(nats.shutdown());
}
