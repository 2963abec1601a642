//! Slow clients, queue limits, raw mode, IPv6, shutdown, many clients.

mod common;

use common::*;
use evapi::{CloseReason, Config, Event, SendError};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

async fn connect_n(socket: &evapi::EventSocket, rec: &Recorder, n: usize) -> Vec<TestClient> {
    let before = rec.count(Event::ConnectionNew);
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(TestClient::connect(socket.local_addr()).await);
    }
    rec.wait_for(Event::ConnectionNew, before + n).await;
    clients
}

/// A client that never reads is cut once its queue passes the limit; the
/// reading client gets every frame, in order, and relays never fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_is_cut_and_others_get_everything() {
    let rec = Arc::new(Recorder::new());
    let cfg = Config {
        client_queue_limit: 1024 * 1024,
        ..config()
    };
    let socket = start(cfg, rec.clone()).await;
    let mut clients = connect_n(&socket, &rec, 2).await;
    let healthy = clients.remove(1);
    let _stalled = clients.remove(0); // conidx 0: connected, never reads
    let h = socket.handle();
    const N: usize = 50_000;
    let reader = tokio::spawn(async move {
        let mut healthy = healthy;
        for i in 0..N {
            let f = healthy
                .recv()
                .await
                .expect("healthy client stays connected");
            assert!(
                f.starts_with(format!("{i:08}").as_bytes()),
                "frame {i} out of order"
            );
        }
        healthy
    });
    let payload = vec![b'x'; 190];
    let mut queued_to_stalled = 0;
    for i in 0..N {
        let mut frame = format!("{i:08}").into_bytes();
        frame.extend_from_slice(&payload);
        // Relays never fail and never wait for the stalled client.
        let sent = h.relay(&frame).unwrap();
        if sent == 2 {
            queued_to_stalled += 1;
        }
        // Keep within what the healthy reader (on this same small runtime)
        // can take, so only the stalled client passes the limit.
        if i % 256 == 0 {
            while h
                .clients()
                .iter()
                .any(|c| c.conidx == 1 && c.queued_bytes > 64 * 1024)
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    let mut healthy = reader.await.unwrap();
    rec.wait_for(Event::ConnectionClosed, 1).await;
    let closed = rec
        .events()
        .into_iter()
        .find(|s| s.event == Event::ConnectionClosed)
        .unwrap();
    assert_eq!(closed.conidx, 0);
    assert_eq!(closed.reason, Some(CloseReason::QueueLimit(1024 * 1024)));
    assert!(
        queued_to_stalled < N,
        "the stalled client was cut before the end"
    );
    let stats = h.stats();
    assert_eq!(stats.slow_cut, 1);
    assert_eq!(stats.relays, N as u64);
    assert_eq!(stats.frames_queued, (N + queued_to_stalled) as u64);
    // The healthy client is still served after the cut.
    assert_eq!(h.relay(b"after").unwrap(), 1);
    assert_eq!(healthy.recv().await.unwrap(), "after");
    socket.shutdown().await;
}

/// With send_data_timeout, a client whose socket stays full is cut even if
/// its queue limit is far away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_data_timeout_cuts_a_client_that_does_not_read() {
    let rec = Arc::new(Recorder::new());
    let cfg = Config {
        send_data_timeout: 200_000,
        client_queue_limit: 1 << 30,
        ..config()
    };
    let socket = start(cfg, rec.clone()).await;
    let mut stalled = connect_n(&socket, &rec, 1).await.remove(0);
    let h = socket.handle();
    let chunk = vec![b'y'; 64 * 1024];
    // 64 MiB: far more than loopback socket buffers hold.
    for _ in 0..1024 {
        if h.relay(&chunk).unwrap() == 0 {
            break;
        }
    }
    rec.wait_for(Event::ConnectionClosed, 1).await;
    let closed = rec
        .events()
        .into_iter()
        .find(|s| s.event == Event::ConnectionClosed)
        .unwrap();
    assert_eq!(
        closed.reason,
        Some(CloseReason::SendTimeout(Duration::from_millis(200)))
    );
    assert_eq!(h.stats().slow_cut, 1);
    // What reached the client is whole frames, then at most the start of
    // one more, then the end: never a partial frame followed by another.
    let mut wire = Vec::new();
    tokio::time::timeout(WAIT, stalled.stream.read_to_end(&mut wire))
        .await
        .unwrap()
        .unwrap();
    let framed = evapi::codec::NetstringCodec::frame(&chunk);
    let whole = wire.len() / framed.len();
    assert!(whole > 0);
    for i in 0..whole {
        assert_eq!(
            &wire[i * framed.len()..(i + 1) * framed.len()],
            &framed[..],
            "frame {i}"
        );
    }
    let tail = &wire[whole * framed.len()..];
    assert_eq!(
        tail,
        &framed[..tail.len()],
        "the tail is the start of the next frame"
    );
    socket.shutdown().await;
}

/// context_mlimit bounds relays pending; send_task_timeout makes a relay
/// wait for room, then fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_mlimit_and_send_task_timeout() {
    let rec = Arc::new(Recorder::new());
    let big = vec![b'z'; 32 * 1024 * 1024];
    for (task_timeout, expect_timeout) in [(0u64, false), (50_000u64, true)] {
        let cfg = Config {
            context_mlimit: 1,
            send_task_timeout: task_timeout,
            client_queue_limit: 1 << 30,
            ..config()
        };
        let socket = start(cfg, rec.clone()).await;
        let mut stalled = connect_n(&socket, &rec, 1).await.remove(0);
        let h = socket.handle();
        // A 32 MiB frame cannot all fit in the socket buffers of a client
        // that does not read, so it stays pending.
        assert_eq!(h.relay(&big).unwrap(), 1);
        assert_eq!(h.pending_relays(), 1);
        assert_eq!(h.stats().pending_relays, 1);
        // The 32 MiB the kernel did not take are queued for the client.
        eventually("queue seen", || h.stats().max_queued_bytes > 0).await;
        assert!(h.stats().max_queued_bytes <= big.len() as u64 + 10);
        let err = tokio::task::spawn_blocking({
            let h = h.clone();
            move || h.relay(b"second")
        })
        .await
        .unwrap()
        .unwrap_err();
        if expect_timeout {
            assert_eq!(
                err,
                SendError::TaskTimeout {
                    limit: 1,
                    waited: Duration::from_millis(50)
                }
            );
        } else {
            assert_eq!(err, SendError::QueueFull { limit: 1 });
        }
        let s = h.stats();
        assert_eq!((s.mlimit_refused, s.relays_failed, s.relays), (1, 1, 1));
        // Once the client reads the big frame, room is made again.
        let mut got = 0;
        let mut buf = vec![0u8; 1 << 16];
        while got < big.len() + 10 {
            let n = tokio::time::timeout(WAIT, stalled.stream.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0);
            got += n;
        }
        eventually("pending relay released", || h.pending_relays() == 0).await;
        assert_eq!(h.relay(b"third").unwrap(), 1);
        assert_eq!(stalled.recv().await.unwrap(), "third");
        // The client may read before the writer has counted its write.
        eventually("counted", || h.stats().frames_written == 2).await;
        let s = h.stats();
        assert_eq!(s.bytes_written, big.len() as u64 + 10 + 8);
        assert_eq!(s.max_queued_bytes, 0);
        socket.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_mode_sends_and_receives_bare_bytes() {
    let rec = Arc::new(Recorder::new().on_msg(|ctx| {
        let mut reply = b"got ".to_vec();
        reply.extend_from_slice(ctx.message().unwrap());
        ctx.handle().relay(&reply).unwrap();
    }));
    let socket = start(
        Config {
            netstring_format: 0,
            ..config()
        },
        rec.clone(),
    )
    .await;
    let mut c = connect_n(&socket, &rec, 1).await.remove(0);
    c.send_raw(br#"{"raw":true}"#).await;
    assert_eq!(c.recv_raw_exact(16).await, r#"got {"raw":true}"#);
    rec.wait_for(Event::MessageReceived, 1).await;
    assert_eq!(
        rec.messages(),
        vec![bytes::Bytes::from_static(br#"{"raw":true}"#)]
    );
    socket.handle().relay(b"abc").unwrap();
    assert_eq!(c.recv_raw_exact(3).await, "abc");
    socket.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listener() {
    let rec = Arc::new(Recorder::new().on_new(|ctx| {
        assert!(ctx.srcaddr().is_ipv6());
        assert_eq!(ctx.peer().port(), ctx.srcport());
    }));
    let cfg = Config {
        bind_addr: "[::1]:0".into(),
        ..Config::default()
    };
    let socket = start(cfg, rec.clone()).await;
    assert!(socket.local_addr().is_ipv6());
    let mut c = connect_n(&socket, &rec, 1).await.remove(0);
    socket.handle().relay(b"over v6").unwrap();
    assert_eq!(c.recv().await.unwrap(), "over v6");
    assert_eq!(
        socket.handle().clients()[0].peer,
        c.stream.local_addr().unwrap()
    );
    socket.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bind_addr_and_port_in_use_are_clear_errors() {
    let rec = Arc::new(Recorder::new());
    let err = evapi::EventSocket::bind(
        Config {
            bind_addr: "127.0.0.1:99999".into(),
            ..Config::default()
        },
        rec.clone(),
    )
    .await
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("bind_addr = \"127.0.0.1:99999\""),
        "{err}"
    );
    let first = start(config(), rec.clone()).await;
    let taken = first.local_addr().to_string();
    let err = evapi::EventSocket::bind(
        Config {
            bind_addr: taken.clone(),
            ..Config::default()
        },
        rec,
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains(&taken), "{err}");
    first.shutdown().await;
}

/// Shutdown writes what was queued, closes every client, and runs
/// connection-closed for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_and_closes_everyone() {
    let rec = Arc::new(Recorder::new());
    let socket = start(config(), rec.clone()).await;
    let mut clients = connect_n(&socket, &rec, 5).await;
    let h = socket.handle();
    for i in 0..1000 {
        h.relay(format!("last words {i}").as_bytes()).unwrap();
    }
    socket.shutdown().await;
    assert_eq!(rec.count(Event::ConnectionClosed), 5);
    assert!(rec
        .events()
        .iter()
        .filter(|s| s.event == Event::ConnectionClosed)
        .all(|s| s.reason == Some(CloseReason::Shutdown)));
    for c in &mut clients {
        for i in 0..1000 {
            assert_eq!(c.recv().await.unwrap(), format!("last words {i}"));
        }
        c.expect_closed().await;
    }
    assert_eq!(h.client_count(), 0);
    // The port is free again.
    let again = tokio::net::TcpListener::bind("127.0.0.1:0").await;
    assert!(again.is_ok());
}

/// Clients that close their side: connection-closed once each, the table
/// empties, indexes are reused lowest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_close_and_index_reuse() {
    let rec = Arc::new(Recorder::new());
    let socket = start(config(), rec.clone()).await;
    let mut clients = connect_n(&socket, &rec, 4).await;
    drop(clients.remove(2));
    drop(clients.remove(1));
    rec.wait_for(Event::ConnectionClosed, 2).await;
    let _more = connect_n(&socket, &rec, 3).await;
    let mut new_idx: Vec<usize> = rec
        .events()
        .iter()
        .filter(|s| s.event == Event::ConnectionNew)
        .skip(4)
        .map(|s| s.conidx)
        .collect();
    // connection-new of concurrent clients may run in any order.
    new_idx.sort();
    assert_eq!(new_idx, vec![1, 2, 4]);
    let reasons: Vec<_> = rec
        .events()
        .into_iter()
        .filter(|s| s.event == Event::ConnectionClosed)
        .map(|s| (s.conidx, s.reason.unwrap()))
        .collect();
    assert_eq!(reasons.len(), 2);
    assert!(reasons.iter().all(|(_, r)| *r == CloseReason::PeerClosed));
    assert_eq!(socket.handle().client_count(), 5);
    socket.shutdown().await;
}

/// 10,000 clients at once. Both ends of 10,000 connections need 20,000
/// sockets, more than one process may open here, so the clients run in a
/// child process: this same test binary, running `swarm_child`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_clients() {
    const N: usize = 10_000;
    let rec = Arc::new(Recorder::new().on_new(|ctx| {
        // Every 100th client joins the tag "hundred".
        if ctx.conidx() % 100 == 0 {
            ctx.set_tag(b"hundred").unwrap();
        }
    }));
    let socket = start(
        Config {
            max_clients: N,
            ..config()
        },
        rec.clone(),
    )
    .await;
    let addr = socket.local_addr();
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "swarm_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("EVAPI_SWARM", format!("{addr} {N}"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    rec.wait_for(Event::ConnectionNew, N).await;
    let h = socket.handle();
    assert_eq!(h.client_count(), N);
    assert_eq!(h.tag_count(b"hundred"), N / 100);
    // One more is refused.
    let mut extra = TestClient::connect(addr).await;
    extra.expect_closed().await;
    assert_eq!(h.stats().refused, 1);
    // A multicast reaches exactly the tagged hundred, a relay everyone.
    assert_eq!(h.multicast(b"to the hundred", b"hundred").unwrap(), N / 100);
    assert_eq!(h.relay(b"to all").unwrap(), N);
    let out = tokio::time::timeout(Duration::from_secs(120), async {
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        (child.wait().await.unwrap(), out)
    })
    .await
    .expect("swarm finishes");
    assert!(out.0.success(), "swarm failed: {}", out.1);
    assert!(
        out.1
            .contains(&format!("swarm: {N} clients, 100 tagged, {N} got to-all")),
        "{}",
        out.1
    );
    rec.wait_for(Event::ConnectionClosed, N).await;
    eventually("table empty", || h.client_count() == 0).await;
    socket.shutdown().await;
}

/// The client side of `ten_thousand_clients` (does nothing unless run by it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by ten_thousand_clients in a child process"]
async fn swarm_child() {
    let Ok(spec) = std::env::var("EVAPI_SWARM") else {
        return;
    };
    let (addr, n) = spec.split_once(' ').unwrap();
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let n: usize = n.parse().unwrap();
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n / 500 {
        let batch: Vec<_> = (0..500)
            .map(|_| tokio::spawn(TestClient::connect(addr)))
            .collect();
        for c in batch {
            clients.push(c.await.unwrap());
        }
    }
    let (mut tagged, mut to_all) = (0, 0);
    for c in clients.iter_mut() {
        let mut f = c.recv().await.unwrap();
        if f == "to the hundred" {
            tagged += 1;
            f = c.recv().await.unwrap();
        }
        if f == "to all" {
            to_all += 1;
        }
    }
    println!("swarm: {n} clients, {tagged} tagged, {to_all} got to-all");
}
