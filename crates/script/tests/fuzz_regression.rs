//! Replays the inputs the `evapi_message` fuzz target found interesting
//! (fuzz/regression/evapi_message): each is written to a real loopback
//! connection to an event socket run by the default Lua script. Every
//! connection must end (whatever its bytes), and the server must still
//! serve a new client afterwards.

use evapi::Config;
use std::time::Duration;

mod common;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evapi_message_corpus() {
    let config = Config {
        max_frame_size: 64 * 1024,
        ..Config::default()
    };
    let (engine, bound, _sip) = common::engine(
        include_str!("../../../examples/default/router.lua"),
        "ksr_evapi_event",
        config,
    )
    .await
    .unwrap();
    let socket = bound.start(engine.evapi_handler()).unwrap();
    let h = socket.handle();
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/regression/evapi_message"
    );
    let mut n = 0u64;
    for entry in std::fs::read_dir(dir).expect("the regression corpus is in the repository") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let mut s = tokio::net::TcpStream::connect(socket.local_addr())
            .await
            .unwrap();
        let _ = s.write_all(&data).await;
        let _ = s.shutdown().await;
        let mut sink = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink))
            .await
            .expect("the server ends every connection")
            .ok();
        n += 1;
    }
    assert!(n >= 3, "corpus found ({n} inputs)");
    let start = tokio::time::Instant::now();
    while h.stats().closed < n {
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", h.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = h.stats();
    assert_eq!((stats.accepted, stats.closed), (n, n), "{stats:?}");
    // Still serving.
    let mut last = tokio::net::TcpStream::connect(socket.local_addr())
        .await
        .unwrap();
    while h.client_count() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.relay(b"alive").unwrap();
    let mut buf = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(10), last.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"5:alive,");
    socket.shutdown().await;
}
