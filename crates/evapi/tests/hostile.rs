//! Hostile and heavy input at the event socket: bursts, storms, clients that
//! are closed from every event. Every loop is bounded in count and time.

mod common;

use common::*;
use evapi::codec::NetstringCodec;
use evapi::{CloseReason, Config, Event};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Thousands of frames in one write, with sizes chosen so that frame
/// boundaries fall at every offset of the 1 KiB read buffer (and of the
/// larger buffers it grows into): every message arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_with_boundaries_at_every_offset() {
    let rec = Arc::new(Recorder::new());
    let socket = start_dispatcher_only(rec.clone()).await;
    let mut c = TestClient::connect(socket.local_addr()).await;
    rec.wait_for(Event::ConnectionNew, 1).await;
    // Sizes 1..=1300 cover every remainder modulo 1024 (and 2048, 4096
    // with the prefixes and commas shifting them); 3 rounds = 3900 frames.
    let mut wire = Vec::new();
    let mut expect = Vec::new();
    for round in 0..3 {
        for size in 1..=1300usize {
            let mut msg = format!("{round}/{size}:").into_bytes();
            msg.resize(size.max(msg.len()), b'a' + (size % 26) as u8);
            wire.extend_from_slice(&NetstringCodec::frame(&msg));
            expect.push(msg);
        }
    }
    c.stream.write_all(&wire).await.unwrap();
    rec.wait_for(Event::MessageReceived, expect.len()).await;
    let got = rec.messages();
    assert_eq!(got.len(), expect.len());
    for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
        assert_eq!(&g[..], &e[..], "message {i} differs");
    }
    socket.shutdown().await;
}

/// Clients closed by the handler from connection-new and from
/// message-received, many times over, with slots reused lowest first:
/// nothing stalls, connection-closed runs exactly once per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_from_every_event_then_slot_reuse() {
    const ROUNDS: usize = 300;
    let rec = Arc::new(
        Recorder::new()
            .on_new(|ctx| {
                // Every third connection is refused in connection-new.
                if ctx.connection_id() % 3 == 0 {
                    ctx.close();
                }
            })
            .on_msg(|ctx| {
                if &ctx.message().unwrap()[..] == b"close me" {
                    ctx.close();
                }
            }),
    );
    let socket = start(
        Config {
            max_clients: 4,
            ..config()
        },
        rec.clone(),
    )
    .await;
    let addr = socket.local_addr();
    let mut ended = 0;
    for i in 0..ROUNDS {
        let mut c = TestClient::connect(addr).await;
        if (i + 1) % 3 == 0 {
            // Refused in connection-new.
            c.expect_closed().await;
        } else {
            c.send(b"close me").await;
            c.expect_closed().await;
        }
        ended += 1;
        rec.wait_for(Event::ConnectionClosed, ended).await;
    }
    let events = rec.events();
    let mut closed: Vec<u64> = events
        .iter()
        .filter(|s| s.event == Event::ConnectionClosed)
        .map(|s| s.connection_id)
        .collect();
    let news = events
        .iter()
        .filter(|s| s.event == Event::ConnectionNew)
        .count();
    assert_eq!(news, ROUNDS);
    assert_eq!(closed.len(), ROUNDS);
    closed.sort();
    closed.dedup();
    assert_eq!(
        closed.len(),
        ROUNDS,
        "connection-closed exactly once per connection"
    );
    assert!(events
        .iter()
        .filter(|s| s.event == Event::ConnectionClosed)
        .all(|s| s.reason == Some(CloseReason::Closed)));
    // Every connection got index 0 again: the slot was always freed.
    assert!(events.iter().all(|s| s.conidx == 0));
    // Still serving.
    let mut last = TestClient::connect(addr).await;
    rec.wait_for(Event::ConnectionNew, ROUNDS + 1).await;
    if rec.events().last().unwrap().connection_id % 3 != 0 {
        socket.handle().relay(b"alive").unwrap();
        assert_eq!(last.recv().await.unwrap(), "alive");
    }
    socket.shutdown().await;
}

/// A connection storm: thousands of connects and disconnects, many beyond
/// max_clients at once. The server stays responsive, refuses the excess,
/// and ends with an empty table; a healthy client is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_storm() {
    const WAVES: usize = 20;
    const PER_WAVE: usize = 200;
    let rec = Arc::new(Recorder::new());
    let socket = start(
        Config {
            max_clients: 64,
            ..config()
        },
        rec.clone(),
    )
    .await;
    let addr = socket.local_addr();
    let h = socket.handle();
    let mut healthy = TestClient::connect(addr).await;
    rec.wait_for(Event::ConnectionNew, 1).await;
    let connected = Arc::new(AtomicUsize::new(0));
    for wave in 0..WAVES {
        let tasks: Vec<_> = (0..PER_WAVE)
            .map(|_| {
                let connected = connected.clone();
                tokio::spawn(async move {
                    // Some connect and leave at once, some send a frame first.
                    if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                        connected.fetch_add(1, Ordering::Relaxed);
                        let _ = s.write_all(b"4:ping,").await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // The healthy client is served between waves.
        h.relay(format!("wave {wave}").as_bytes()).unwrap();
        assert_eq!(healthy.recv().await.unwrap(), format!("wave {wave}"));
    }
    assert_eq!(connected.load(Ordering::Relaxed), WAVES * PER_WAVE);
    // A connect completes in the kernel's accept queue: the last ones can
    // still wait there, unaccepted, once the table is down to one client
    // (CI once saw 16 of 4,001 not yet counted). Wait for both.
    let all = (WAVES * PER_WAVE + 1) as u64;
    eventually("storm drained", || {
        let s = h.stats();
        h.client_count() == 1 && s.accepted + s.refused >= all
    })
    .await;
    let stats = h.stats();
    assert_eq!(
        stats.accepted + stats.refused,
        (WAVES * PER_WAVE + 1) as u64,
        "every connection accepted or refused: {stats:?}"
    );
    assert!(stats.refused > 0, "some were beyond max_clients: {stats:?}");
    // connection-closed ran for every accepted storm connection.
    rec.wait_for(Event::ConnectionClosed, stats.accepted as usize - 1)
        .await;
    assert_eq!(rec.count(Event::ConnectionNew), stats.accepted as usize);
    assert!(healthy.stream.peer_addr().is_ok());
    socket.shutdown().await;
}
