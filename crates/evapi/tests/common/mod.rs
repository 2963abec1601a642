//! Test harness: a recording event handler and netstring test clients over
//! real loopback sockets. Every wait is bounded, so a broken server fails a
//! test instead of hanging it.

#![allow(dead_code)]

use bytes::Bytes;
use evapi::{CloseReason, Config, Event, EventContext, EventHandler, EventSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use evapi::testing::{TestClient, WAIT};

/// One event as the handler saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub event: Event,
    pub conidx: usize,
    pub connection_id: u64,
    pub msg: Option<Bytes>,
    pub reason: Option<CloseReason>,
    pub thread: String,
}

type Hook = Box<dyn Fn(&EventContext<'_>) + Send + Sync>;

/// Records every event; optional hooks act on them.
#[derive(Default)]
pub struct Recorder {
    pub seen: Mutex<Vec<Seen>>,
    /// Events by kind, kept beside `seen` so waiting is O(1) per wake-up.
    counts: Mutex<std::collections::HashMap<Event, usize>>,
    pub changed: tokio::sync::Notify,
    pub on_new: Option<Hook>,
    pub on_msg: Option<Hook>,
}

impl Recorder {
    pub fn new() -> Self {
        Recorder::default()
    }

    pub fn on_new(mut self, f: impl Fn(&EventContext<'_>) + Send + Sync + 'static) -> Self {
        self.on_new = Some(Box::new(f));
        self
    }

    pub fn on_msg(mut self, f: impl Fn(&EventContext<'_>) + Send + Sync + 'static) -> Self {
        self.on_msg = Some(Box::new(f));
        self
    }

    fn record(&self, ctx: &EventContext<'_>) {
        self.seen.lock().unwrap().push(Seen {
            event: ctx.event(),
            conidx: ctx.conidx(),
            connection_id: ctx.connection_id(),
            msg: ctx.message().cloned(),
            reason: ctx.close_reason().cloned(),
            thread: std::thread::current().name().unwrap_or("").to_string(),
        });
        *self.counts.lock().unwrap().entry(ctx.event()).or_default() += 1;
        self.changed.notify_waiters();
    }

    pub fn events(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self, event: Event) -> usize {
        self.counts
            .lock()
            .unwrap()
            .get(&event)
            .copied()
            .unwrap_or(0)
    }

    /// Wait until at least `n` events of this kind were recorded.
    pub async fn wait_for(&self, event: Event, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.changed.notified();
            if self.count(event) >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out waiting for {n} x {event}; saw {}",
                    self.count(event)
                );
            }
        }
    }

    pub fn messages(&self) -> Vec<Bytes> {
        self.events()
            .into_iter()
            .filter(|s| s.event == Event::MessageReceived)
            .filter_map(|s| s.msg)
            .collect()
    }
}

impl EventHandler for Recorder {
    fn connection_new(&self, ctx: &EventContext<'_>) {
        if let Some(f) = &self.on_new {
            f(ctx);
        }
        self.record(ctx);
    }
    fn message_received(&self, ctx: &EventContext<'_>) {
        if let Some(f) = &self.on_msg {
            f(ctx);
        }
        self.record(ctx);
    }
    fn connection_closed(&self, ctx: &EventContext<'_>) {
        self.record(ctx);
    }
}

/// A config on an ephemeral loopback port.
pub fn config() -> Config {
    Config {
        bind_addr: "127.0.0.1:0".into(),
        ..Config::default()
    }
}

pub async fn start(config: Config, rec: Arc<Recorder>) -> EventSocket {
    // Logs show with RUST_LOG=evapi=debug (and --nocapture).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    EventSocket::bind(config, rec)
        .await
        .expect("event socket starts")
}

/// A socket with `workers = 0`: the dispatcher thread reads the clients
/// and runs every event itself, one at a time, in arrival order.
pub async fn start_dispatcher_only(rec: Arc<Recorder>) -> EventSocket {
    start(
        Config {
            workers: 0,
            ..config()
        },
        rec,
    )
    .await
}

/// Wait until `cond` holds, checking after each short pause.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
