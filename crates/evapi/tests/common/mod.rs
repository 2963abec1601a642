//! Test harness: a recording event handler and netstring test clients over
//! real loopback sockets. Every wait is bounded, so a broken server fails a
//! test instead of hanging it.

#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use evapi::codec::NetstringCodec;
use evapi::{CloseReason, Config, Event, EventContext, EventHandler, EventSocket};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

/// Longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(20);

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

/// A netstring client.
pub struct TestClient {
    pub stream: TcpStream,
    buf: BytesMut,
    codec: NetstringCodec,
}

impl TestClient {
    pub async fn connect(addr: SocketAddr) -> TestClient {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        TestClient {
            stream,
            buf: BytesMut::new(),
            codec: NetstringCodec::new(usize::MAX >> 1),
        }
    }

    pub async fn send(&mut self, msg: &[u8]) {
        self.stream
            .write_all(&NetstringCodec::frame(msg))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send raw");
    }

    /// The next frame, or None when the server closed the connection.
    pub async fn recv(&mut self) -> Option<Bytes> {
        tokio::time::timeout(WAIT, self.recv_inner())
            .await
            .expect("a frame or a close in time")
    }

    async fn recv_inner(&mut self) -> Option<Bytes> {
        loop {
            if let Some(f) = self
                .codec
                .decode(&mut self.buf)
                .expect("server sends valid netstrings")
            {
                return Some(f);
            }
            let n = match self.stream.read_buf(&mut self.buf).await {
                Ok(n) => n,
                Err(_) => return None,
            };
            if n == 0 {
                assert!(self.buf.is_empty(), "connection closed inside a frame");
                return None;
            }
        }
    }

    /// Expect the server to close this connection (with no more frames).
    pub async fn expect_closed(&mut self) {
        if let Some(f) = self.recv().await {
            panic!("expected close, got frame {f:?}");
        }
    }

    /// Read raw bytes (for netstring_format = 0) until `n` bytes arrived.
    pub async fn recv_raw_exact(&mut self, n: usize) -> Bytes {
        tokio::time::timeout(WAIT, async {
            while self.buf.len() < n {
                let got = self.stream.read_buf(&mut self.buf).await.expect("read");
                assert!(got > 0, "closed after {} of {n} bytes", self.buf.len());
            }
            self.buf.split_to(n).freeze()
        })
        .await
        .expect("raw bytes in time")
    }
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
