//! Fuzz the evapi message path end to end: `cargo fuzz run evapi_message`.
//!
//! Each input is written to a real loopback connection to an event socket
//! whose handler is the default Lua routing script (netstring framing,
//! dispatch to a worker, `$evapi(msg)`, `cjson.decode`, `t_continue` with
//! whatever the input holds). Checked after every input: the connection
//! ended and connection-closed ran exactly once for it, so no input can
//! panic a connection task, a handler or the script engine.
#![no_main]

use evapi::{Config, EventContext, EventHandler, EventSocket};
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Counting {
    inner: Arc<dyn EventHandler>,
    opened: AtomicU64,
    closed: AtomicU64,
}

impl EventHandler for Counting {
    fn connection_new(&self, ctx: &EventContext<'_>) {
        self.opened.fetch_add(1, Ordering::SeqCst);
        self.inner.connection_new(ctx);
    }
    fn message_received(&self, ctx: &EventContext<'_>) {
        self.inner.message_received(ctx);
    }
    fn connection_closed(&self, ctx: &EventContext<'_>) {
        self.inner.connection_closed(ctx);
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
    fn thread_started(&self, worker: Option<usize>) {
        self.inner.thread_started(worker);
    }
}

struct Target {
    rt: tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    counting: Arc<Counting>,
    _socket: EventSocket,
    _sip: sip::BoundHost,
}

fn target() -> &'static Target {
    static T: OnceLock<Target> = OnceLock::new();
    T.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let config = Config {
            bind_addr: "127.0.0.1:0".into(),
            max_frame_size: 64 * 1024,
            ..Config::default()
        };
        let bound = rt.block_on(EventSocket::listen(config)).unwrap();
        // A SIP host bound on loopback and never started: the script's
        // t_continue finds no transaction, as for a stale answer.
        let sip = rt
            .block_on(sip::SipHost::bind(sip::HostConfig {
                sip: sip::SipConfig {
                    listen: vec!["udp:127.0.0.1:0".into()],
                    children: 1,
                    ..sip::SipConfig::default()
                },
                ..sip::HostConfig::default()
            }))
            .unwrap();
        let engine = script::Engine::new(
            &script::ScriptConfig {
                file: "router.lua".into(),
                source: Some(include_str!("../../examples/default/router.lua").to_string()),
                event_callback: "ksr_evapi_event".into(),
                limits: Default::default(),
                htable: Default::default(),
                pike: Default::default(),
            },
            Arc::new(bound.handle()),
            Arc::new(sip.handle()),
        )
        .unwrap();
        let counting = Arc::new(Counting {
            inner: engine.evapi_handler(),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        });
        let socket = bound.start(counting.clone()).unwrap();
        Target {
            addr: socket.local_addr(),
            rt,
            counting,
            _socket: socket,
            _sip: sip,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let t = target();
    let before = t.counting.closed.load(Ordering::SeqCst);
    t.rt.block_on(async {
        let mut s = tokio::net::TcpStream::connect(t.addr).await.unwrap();
        let _ = s.write_all(data).await;
        let _ = s.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.counting.closed.load(Ordering::SeqCst) != before + 1 {
        assert!(Instant::now() < deadline, "connection-closed did not run for this input");
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(
        t.counting.opened.load(Ordering::SeqCst),
        t.counting.closed.load(Ordering::SeqCst),
        "every connection-new has its connection-closed"
    );
});
