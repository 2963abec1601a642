//! The benchmark's NATS worker (bench/nats.py): subscribes to a subject
//! (default `evapi.relay`) in a queue group (default `workers`) and answers
//! every event at once on its reply subject with
//! `{"tindex":..,"tlabel":..,"action":"reply"}`, the answer the bench
//! scripts' `async` mode expects (bench/evapi/async.lua), as
//! bench/common/responder.py does over TCP.
//!
//! ```text
//! cargo run --release -p nats --example bench_worker -- \
//!     --url nats://127.0.0.1:4222 [--subject evapi.relay] [--queue workers] \
//!     [--name w1] [--idle 3] [--max-seconds 120]
//! ```
//!
//! It prints `NAME subscribed` on stderr once its subscription is known to
//! the server, and at exit one line on stdout in responder.py's form:
//! `NAME events=N replies=N bad=N first_s=.. last_s=.. eof=0`. It exits
//! after `--idle` seconds without events (once one arrived), after
//! `--max-seconds`, or on SIGTERM / SIGINT.

use futures_util::StreamExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Args {
    url: String,
    subject: String,
    queue: String,
    name: String,
    idle: f64,
    max_seconds: f64,
}

fn args() -> Args {
    let mut a = Args {
        url: "nats://127.0.0.1:4222".into(),
        subject: "evapi.relay".into(),
        queue: "workers".into(),
        name: "worker".into(),
        idle: 3.0,
        max_seconds: 120.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it
            .next()
            .unwrap_or_else(|| fail(&format!("{k} needs a value")));
        let num = |v: &str| -> f64 {
            v.parse()
                .unwrap_or_else(|_| fail(&format!("{k} = {v:?}: not a number")))
        };
        match k.as_str() {
            "--url" => a.url = v,
            "--subject" => a.subject = v,
            "--queue" => a.queue = v,
            "--name" => a.name = v,
            "--idle" => a.idle = num(&v),
            "--max-seconds" => a.max_seconds = num(&v),
            _ => fail(&format!("unknown option {k}")),
        }
    }
    a
}

fn fail(msg: &str) -> ! {
    eprintln!("bench_worker: {msg}");
    std::process::exit(2)
}

fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The answer to one event, or `None` when it is not JSON with both ids.
fn answer(event: &[u8]) -> Option<String> {
    let ev: serde_json::Value = serde_json::from_slice(event).ok()?;
    let (ti, tl) = (ev.get("tindex")?, ev.get("tlabel")?);
    Some(format!(
        r#"{{"tindex":{ti},"tlabel":{tl},"action":"reply"}}"#
    ))
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let client = async_nats::ConnectOptions::new()
            .connect(a.url.as_str())
            .await
            .unwrap_or_else(|e| fail(&format!("connect {}: {e}", a.url)));
        let mut sub = client
            .queue_subscribe(a.subject.clone(), a.queue.clone())
            .await
            .unwrap_or_else(|e| fail(&format!("subscribe {}: {e}", a.subject)));
        client
            .flush()
            .await
            .unwrap_or_else(|e| fail(&format!("flush: {e}")));
        eprintln!("{} subscribed", a.name);
        // The signals and the tick are set up once: nothing per event but
        // the answer.
        let signal = |kind: tokio::signal::unix::SignalKind, what: &str| {
            tokio::signal::unix::signal(kind)
                .unwrap_or_else(|e| fail(&format!("{what} handler: {e}")))
        };
        let mut term = signal(tokio::signal::unix::SignalKind::terminate(), "SIGTERM");
        let mut int = signal(tokio::signal::unix::SignalKind::interrupt(), "SIGINT");
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut events, mut replies, mut bad) = (0u64, 0u64, 0u64);
        let (mut first, mut last) = (0.0f64, 0.0f64);
        let start = Instant::now();
        let mut last_seen = Instant::now();
        let max = Duration::from_secs_f64(a.max_seconds);
        let idle = Duration::from_secs_f64(a.idle);
        loop {
            tokio::select! {
                m = sub.next() => {
                    let Some(m) = m else { break };
                    events += 1;
                    last_seen = Instant::now();
                    match (answer(&m.payload), m.reply) {
                        (Some(text), Some(reply)) => {
                            if client.publish(reply, text.into()).await.is_ok() {
                                replies += 1;
                            }
                            let now = epoch();
                            if first == 0.0 {
                                first = now;
                            }
                            last = now;
                        }
                        _ => bad += 1,
                    }
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = tick.tick() => {
                    if start.elapsed() > max || (events > 0 && last_seen.elapsed() > idle) {
                        break;
                    }
                }
            }
        }
        let _ = client.flush().await;
        println!(
            "{} events={events} replies={replies} bad={bad} first_s={first:.6} last_s={last:.6} eof=0",
            a.name
        );
    });
}
