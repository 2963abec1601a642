//! What one counter increment costs, for each kind the metrics added:
//! no criterion, a timing loop per kind, ns per operation printed. Run:
//!
//!     cargo bench -p sip --bench counters
//!
//! The kinds, as the code does them:
//! - a relaxed `fetch_add` on a per-method slot (`sip::method_slot`),
//!   on the socket threads (requests received; the event socket's
//!   counters are the same operation), alone and with a second thread
//!   bumping the same array at once (the worst case: one cache line);
//! - a plain `+= 1` on a class slot, under the table lock already held
//!   (replies, finals);
//! - one observation in the suspend-to-continue histogram (under the
//!   same lock).
//!
//! Env: BENCH_OPS (default 50_000_000 per kind).

use sip::{class_slot, method_slot, Method, WaitHistogram};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn ops() -> u64 {
    std::env::var("BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000_000)
}

fn report(what: &str, n: u64, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    println!("{what:<58} {ns:>6.2} ns/op");
    ns
}

fn main() {
    let n = ops();
    let methods = [
        Method::Invite,
        Method::Ack,
        Method::Bye,
        Method::Options,
        Method::Register,
        Method::Cancel,
        Method::Message,
        Method::Info,
    ];
    let slots: [AtomicU64; 15] = Default::default();
    let base = report("loop only (method choice, black_box)", n, || {
        for i in 0..n {
            black_box(&methods[(i & 7) as usize]);
        }
    });
    let one = report("relaxed fetch_add by method slot, 1 thread", n, || {
        for i in 0..n {
            let m = black_box(&methods[(i & 7) as usize]);
            slots[method_slot(m)].fetch_add(1, Ordering::Relaxed);
        }
    });
    let shared: Arc<[AtomicU64; 15]> = Arc::new(Default::default());
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (shared, stop) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 20 * n {
                shared[(i % 15) as usize].fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    let two = report(
        "relaxed fetch_add by method slot, 2nd thread on same array",
        n,
        || {
            for i in 0..n {
                let m = black_box(&methods[(i & 7) as usize]);
                shared[method_slot(m)].fetch_add(1, Ordering::Relaxed);
            }
        },
    );
    stop.store(true, Ordering::Relaxed);
    other.join().unwrap();
    let codes = [100u16, 180, 200, 486, 503, 603, 302, 408];
    let mut plain = [0u64; 6];
    let under_lock = report("plain += on a class slot (under the table lock)", n, || {
        for i in 0..n {
            let c = black_box(codes[(i & 7) as usize]);
            plain[class_slot(c)] += 1;
        }
        black_box(&plain);
    });
    let mut h = WaitHistogram::default();
    let hist = report("suspend-wait histogram observation", n, || {
        for i in 0..n {
            h.observe(black_box(i & 0xffff));
        }
        black_box(&h);
    });
    assert_eq!(h.count, n);
    println!(
        "net of the loop: fetch_add {:.2} ns, contended {:.2} ns, plain {:.2} ns, histogram {:.2} ns",
        one - base,
        two - base,
        under_lock - base,
        hist - base
    );
}
