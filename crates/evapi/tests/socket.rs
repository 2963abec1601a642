//! The event socket over real loopback TCP clients.

mod common;

use bytes::Bytes;
use common::*;
use evapi::{CloseReason, Config, Event, EventSocket, SendError, TagError};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Connect `n` clients and wait until connection-new has run for each.
async fn connect_n(socket: &EventSocket, rec: &Recorder, n: usize) -> Vec<TestClient> {
    let before = rec.count(Event::ConnectionNew);
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(TestClient::connect(socket.local_addr()).await);
    }
    rec.wait_for(Event::ConnectionNew, before + n).await;
    clients
}

/// A handler that tags a client with the text of any message starting with
/// "tag:", and closes it on "bye".
fn tagging_recorder() -> Recorder {
    Recorder::new().on_msg(|ctx| {
        let msg = ctx.message().unwrap();
        if let Some(tag) = msg.strip_prefix(b"tag:") {
            ctx.set_tag(tag).unwrap();
        } else if &msg[..] == b"bye" {
            ctx.close();
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_reaches_every_client_once() {
    let rec = Arc::new(Recorder::new());
    let socket = start(config(), rec.clone()).await;
    let mut clients = connect_n(&socket, &rec, 3).await;
    let h = socket.handle();
    assert_eq!(h.client_count(), 3);
    assert_eq!(h.relay(br#"{"event":"one"}"#).unwrap(), 3);
    assert_eq!(h.relay(b"two, with a comma").unwrap(), 3);
    for c in &mut clients {
        assert_eq!(c.recv().await.unwrap(), &br#"{"event":"one"}"#[..]);
        assert_eq!(c.recv().await.unwrap(), &b"two, with a comma"[..]);
    }
    // connection-new of clients connecting back to back may run in any
    // order; the indexes themselves are the three lowest.
    let mut conidx: Vec<usize> = rec.events().iter().map(|s| s.conidx).collect();
    conidx.sort();
    assert_eq!(conidx, vec![0, 1, 2]);
    socket.shutdown().await;
}

/// Events from several relaying threads, some alone after a pause (the
/// relaying thread writes those to the socket itself), some in bursts
/// (queued for the writer) and some larger than the socket takes at once
/// (written in part at once, the rest by the writer): the client gets
/// every event once, whole, and each thread's events in the order relayed.
/// One client: only a relay to one client is written at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_alone_in_bursts_and_oversized_arrive_whole_and_in_order() {
    const THREADS: usize = 3;
    const ROUNDS: usize = 40;
    const BURST: usize = 20;
    let rec = Arc::new(Recorder::new());
    let cfg = evapi::Config {
        client_queue_limit: 64 << 20,
        ..config()
    };
    let socket = start(cfg, rec.clone()).await;
    let mut clients = connect_n(&socket, &rec, 1).await;
    let relays: Vec<_> = (0..THREADS)
        .map(|t| {
            let h = socket.handle();
            std::thread::spawn(move || {
                let mut seq = 0;
                let mut send = |pad: usize| {
                    let ev = format!("{t} {seq} {}", "x".repeat(pad));
                    assert_eq!(h.relay(ev.as_bytes()).unwrap(), 1);
                    seq += 1;
                };
                for round in 0..ROUNDS {
                    std::thread::sleep(std::time::Duration::from_micros(500));
                    send(10);
                    if round % 10 == 3 {
                        std::thread::sleep(std::time::Duration::from_micros(500));
                        send(3 << 20);
                    }
                    for _ in 0..BURST {
                        send(200);
                    }
                }
                seq
            })
        })
        .collect();
    let sent: Vec<usize> = relays.into_iter().map(|r| r.join().unwrap()).collect();
    let total: usize = sent.iter().sum();
    for c in &mut clients {
        let mut next = vec![0usize; THREADS];
        for _ in 0..total {
            let ev = c.recv().await.expect("every event");
            let text = std::str::from_utf8(&ev).unwrap();
            let mut parts = text.splitn(3, ' ');
            let t: usize = parts.next().unwrap().parse().unwrap();
            let seq: usize = parts.next().unwrap().parse().unwrap();
            let pad = parts.next().unwrap();
            assert_eq!(seq, next[t], "thread {t}'s events in order");
            assert!(pad.bytes().all(|b| b == b'x'), "whole");
            next[t] += 1;
        }
        assert_eq!(next, sent);
        assert!(c.quiet_for(std::time::Duration::from_millis(100)).await);
    }
    socket.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_with_no_client_and_bad_arguments() {
    let rec = Arc::new(Recorder::new());
    let socket = start(config(), rec.clone()).await;
    let h = socket.handle();
    assert_eq!(h.relay(b"nobody listens").unwrap(), 0);
    assert_eq!(h.relay(b""), Err(SendError::EmptyData));
    assert_eq!(
        h.multicast(b"x", b""),
        Err(SendError::BadTag(TagError::Empty))
    );
    assert_eq!(
        h.unicast(b"x", &[b'a'; 64]),
        Err(SendError::BadTag(TagError::TooLong(64)))
    );
    assert_eq!(h.multicast(b"x", &[b'a'; 63]).unwrap(), 0);
    let stats = h.stats();
    assert_eq!(stats.relays, 2);
    assert_eq!(stats.relays_failed, 3);
    socket.shutdown().await;
    assert_eq!(h.relay(b"late"), Err(SendError::Shutdown));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multicast_and_unicast_by_tags_set_in_message_received() {
    let rec = Arc::new(tagging_recorder());
    let socket = start(config(), rec.clone()).await;
    let mut c = connect_n(&socket, &rec, 4).await;
    // conidx 0,1,2,3; tags: 0 "b", 1 "a", 2 none, 3 "a"
    c[0].send(b"tag:b").await;
    c[1].send(b"tag:a").await;
    c[3].send(b"tag:a").await;
    rec.wait_for(Event::MessageReceived, 3).await;
    let h = socket.handle();
    assert_eq!(h.tag_count(b"a"), 2);
    assert_eq!(h.tag_count(b"b"), 1);
    assert_eq!(h.tag_count(b"A"), 0);

    assert_eq!(h.multicast(b"to a", b"a").unwrap(), 2);
    assert_eq!(h.unicast(b"first a", b"a").unwrap(), 1);
    assert_eq!(h.multicast(b"to b", b"b").unwrap(), 1);
    assert_eq!(h.unicast(b"to A", b"A").unwrap(), 0);
    h.relay(b"end").unwrap();
    let s = h.stats();
    assert_eq!(s.relays_by_kind, [1, 2, 2], "relay, multicast, unicast");
    assert_eq!(s.relays, 5);
    assert_eq!(s.frames_queued, 2 + 1 + 1 + 4);

    assert_eq!(c[0].recv().await.unwrap(), "to b");
    assert_eq!(c[0].recv().await.unwrap(), "end");
    assert_eq!(c[1].recv().await.unwrap(), "to a");
    assert_eq!(c[1].recv().await.unwrap(), "first a");
    assert_eq!(c[1].recv().await.unwrap(), "end");
    assert_eq!(c[2].recv().await.unwrap(), "end");
    assert_eq!(c[3].recv().await.unwrap(), "to a");
    assert_eq!(c[3].recv().await.unwrap(), "end");

    // Retagging replaces the tag.
    c[1].send(b"tag:b").await;
    rec.wait_for(Event::MessageReceived, 4).await;
    assert_eq!(h.tag_count(b"a"), 1);
    assert_eq!(h.unicast(b"first a now 3", b"a").unwrap(), 1);
    assert_eq!(c[3].recv().await.unwrap(), "first a now 3");
    socket.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicast_goes_to_lowest_index_and_round_robin_spreads() {
    let rec = Arc::new(Recorder::new().on_new(|ctx| ctx.set_tag(b"pool").unwrap()));
    let socket = start(config(), rec.clone()).await;
    let mut c = connect_n(&socket, &rec, 3).await;
    let h = socket.handle();
    assert_eq!(h.tag_count(b"pool"), 3);
    for i in 0..3 {
        h.unicast(format!("u{i}").as_bytes(), b"pool").unwrap();
    }
    for i in 0..6 {
        h.unicast_round_robin(format!("r{i}").as_bytes(), b"pool")
            .unwrap();
    }
    h.relay(b"end").unwrap();
    let mut got = Vec::new();
    for client in &mut c {
        let mut mine = Vec::new();
        loop {
            let f = client.recv().await.unwrap();
            if f == "end" {
                break;
            }
            mine.push(String::from_utf8(f.to_vec()).unwrap());
        }
        got.push(mine);
    }
    // Every plain unicast went to conidx 0; round robin gave each two.
    assert_eq!(&got[0][..3], &["u0", "u1", "u2"]);
    let rr: Vec<usize> = got
        .iter()
        .map(|m| m.iter().filter(|s| s.starts_with('r')).count())
        .collect();
    assert_eq!(rr, vec![2, 2, 2]);
    // Round robin counts as unicast; each client got its frames whole.
    assert_eq!(h.stats().relays_by_kind, [1, 0, 9]);
    eventually("written", || h.stats().frames_written == 12).await;
    socket.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_set_in_connection_new_is_there_before_messages() {
    let rec = Arc::new(Recorder::new().on_new(|ctx| {
        assert_eq!(ctx.set_tag(&[b'x'; 64]), Err(TagError::TooLong(64)));
        assert_eq!(ctx.set_tag(b""), Err(TagError::Empty));
        ctx.set_tag(format!("conn-{}", ctx.conidx()).as_bytes())
            .unwrap();
        assert_eq!(ctx.tag().unwrap(), format!("conn-{}", ctx.conidx()));
    }));
    let socket = start(config(), rec.clone()).await;
    let mut c = connect_n(&socket, &rec, 2).await;
    let h = socket.handle();
    assert_eq!(h.multicast(b"hello 1", b"conn-1").unwrap(), 1);
    assert_eq!(c[1].recv().await.unwrap(), "hello 1");
    let clients = h.clients();
    assert_eq!(clients.len(), 2);
    assert_eq!(clients[0].tag.as_deref(), Some(&b"conn-0"[..]));
    assert_eq!(clients[1].peer, c[1].stream.local_addr().unwrap());
    drop(c);
    socket.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_clients_refuses_the_next_one() {
    let rec = Arc::new(Recorder::new());
    let socket = start(
        Config {
            max_clients: 2,
            ..config()
        },
        rec.clone(),
    )
    .await;
    let mut c = connect_n(&socket, &rec, 2).await;
    let mut extra = TestClient::connect(socket.local_addr()).await;
    extra.expect_closed().await;
    let h = socket.handle();
    eventually("refusal counted", || h.stats().refused == 1).await;
    assert_eq!(rec.count(Event::ConnectionNew), 2);
    // Once one leaves, a new client gets its place (and its index).
    drop(c.remove(0));
    rec.wait_for(Event::ConnectionClosed, 1).await;
    let _again = connect_n(&socket, &rec, 1).await;
    let last = rec.events().last().unwrap().clone();
    assert_eq!((last.event, last.conidx), (Event::ConnectionNew, 0));
    assert_eq!(h.client_count(), 2);
    socket.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_in_connection_new_refuses_and_still_runs_closed_once() {
    // The first connection ever is refused by the handler.
    let rec = Arc::new(Recorder::new().on_new(|ctx| {
        if ctx.connection_id() == 1 {
            ctx.close();
        }
    }));
    let socket = start(config(), rec.clone()).await;
    let mut first = TestClient::connect(socket.local_addr()).await;
    first.send(b"never handled").await;
    first.expect_closed().await;
    rec.wait_for(Event::ConnectionClosed, 1).await;
    let ev = rec.events();
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(ev[1].reason, Some(CloseReason::Closed));
    assert_eq!(rec.count(Event::MessageReceived), 0);
    // The index is free again, and the next client there is served.
    let mut second = connect_n(&socket, &rec, 1).await.remove(0);
    assert_eq!(rec.events()[2].conidx, 0);
    second.send(b"handled").await;
    rec.wait_for(Event::MessageReceived, 1).await;
    assert_eq!(socket.handle().relay(b"still works").unwrap(), 1);
    assert_eq!(second.recv().await.unwrap(), "still works");
    socket.shutdown().await;
    second.expect_closed().await;
    let closed: Vec<u64> = rec
        .events()
        .iter()
        .filter(|s| s.event == Event::ConnectionClosed)
        .map(|s| s.connection_id)
        .collect();
    assert_eq!(closed, vec![1, 2], "connection-closed once per connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_in_message_received_ends_that_client_only() {
    let rec = Arc::new(tagging_recorder());
    let socket = start(config(), rec.clone()).await;
    let mut c = connect_n(&socket, &rec, 2).await;
    c[0].send(b"bye").await;
    c[0].expect_closed().await;
    rec.wait_for(Event::ConnectionClosed, 1).await;
    let closed = rec
        .events()
        .into_iter()
        .find(|s| s.event == Event::ConnectionClosed)
        .unwrap();
    assert_eq!(
        (closed.conidx, closed.reason),
        (0, Some(CloseReason::Closed))
    );
    assert_eq!(socket.handle().relay(b"for the other").unwrap(), 1);
    assert_eq!(c[1].recv().await.unwrap(), "for the other");
    socket.shutdown().await;
    assert_eq!(rec.count(Event::ConnectionClosed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_split_and_merged_arrive_whole_and_in_order() {
    // workers = 0: the dispatcher handles messages one at a time in order.
    let rec = Arc::new(Recorder::new());
    let socket = start_dispatcher_only(rec.clone()).await;
    let mut c = connect_n(&socket, &rec, 1).await.remove(0);
    let mut wire = Vec::new();
    for i in 0..500 {
        wire.extend_from_slice(&evapi::codec::NetstringCodec::frame(
            format!("m{i},{{\"n\":{i}}}").as_bytes(),
        ));
        if i % 7 == 0 {
            wire.extend_from_slice(b"\r\n");
        }
        if i % 11 == 0 {
            wire.extend_from_slice(b"0:,"); // keep-alive: no event
        }
    }
    // First half one byte per write, the rest in a single write.
    let half = wire.len() / 2;
    for b in &wire[..half] {
        c.stream.write_all(&[*b]).await.unwrap();
    }
    c.stream.write_all(&wire[half..]).await.unwrap();
    rec.wait_for(Event::MessageReceived, 500).await;
    let msgs = rec.messages();
    assert_eq!(msgs.len(), 500);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m, &format!("m{i},{{\"n\":{i}}}"));
    }
    assert!(rec
        .events()
        .iter()
        .skip(1)
        .all(|s| s.thread == "evapi-dispatcher"));
    socket.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_run_on_worker_threads() {
    let rec = Arc::new(Recorder::new());
    let socket = start(
        Config {
            workers: 3,
            ..config()
        },
        rec.clone(),
    )
    .await;
    let mut c = connect_n(&socket, &rec, 1).await.remove(0);
    for i in 0..60 {
        c.send(format!("{i}").as_bytes()).await;
    }
    rec.wait_for(Event::MessageReceived, 60).await;
    let ev = rec.events();
    assert_eq!(ev[0].thread, "evapi-dispatcher");
    let mut msgs: Vec<usize> = rec
        .messages()
        .iter()
        .map(|m| std::str::from_utf8(m).unwrap().parse().unwrap())
        .collect();
    msgs.sort();
    assert_eq!(msgs, (0..60).collect::<Vec<_>>());
    assert!(ev
        .iter()
        .filter(|s| s.event == Event::MessageReceived)
        .all(|s| s.thread.starts_with("evapi-worker-")));
    assert_eq!(socket.handle().stats().messages_received, 60);
    socket.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_closes_only_that_client() {
    let cases: &[(&[u8], &str)] = &[
        (b"hello", "starts with byte 0x68"),
        (b"5:hello;", "not closed by ','"),
        (b"2147483640:A", "over the limit"),
        (b"12345678901234567890:", "over the limit"),
        (b"05:hello,", "leading zero"),
        (b"3x:abc,", "contains byte"),
        (b"5:hel", "closed inside a netstring"),
    ];
    let rec = Arc::new(Recorder::new());
    let socket = start(config(), rec.clone()).await;
    let mut healthy = connect_n(&socket, &rec, 1).await.remove(0);
    let h = socket.handle();
    for (i, (input, why)) in cases.iter().enumerate() {
        let mut bad = connect_n(&socket, &rec, 1).await.remove(0);
        bad.send(b"fine first").await;
        bad.send_raw(input).await;
        if why.starts_with("closed inside") {
            bad.stream.shutdown().await.unwrap();
        }
        bad.expect_closed().await;
        rec.wait_for(Event::ConnectionClosed, i + 1).await;
        let closed = rec
            .events()
            .into_iter()
            .rfind(|s| s.event == Event::ConnectionClosed)
            .unwrap();
        match closed.reason {
            Some(CloseReason::Protocol(text)) => assert!(text.contains(why), "{text} lacks {why}"),
            other => panic!("{input:?}: {other:?}"),
        }
        h.relay(format!("still here {i}").as_bytes()).unwrap();
        assert_eq!(healthy.recv().await.unwrap(), format!("still here {i}"));
    }
    assert_eq!(h.stats().protocol_errors, cases.len() as u64);
    assert_eq!(
        rec.messages().len(),
        cases.len(),
        "each 'fine first' was handled"
    );
    socket.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_size_limit_applies_to_input() {
    let rec = Arc::new(Recorder::new());
    let socket = start(
        Config {
            max_frame_size: 16,
            ..config()
        },
        rec.clone(),
    )
    .await;
    let mut c = connect_n(&socket, &rec, 1).await.remove(0);
    c.send(&[b'a'; 16]).await;
    c.send(&[b'b'; 17]).await;
    c.expect_closed().await;
    rec.wait_for(Event::ConnectionClosed, 1).await;
    assert_eq!(rec.messages(), vec![Bytes::from(vec![b'a'; 16])]);
    socket.shutdown().await;
}

/// Small frames are copied into each client's buffer and large ones
/// shared: mixed, across many buffers, every client still gets every
/// frame whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_large_frames_mixed_arrive_in_order() {
    let rec = Arc::new(Recorder::new());
    let socket = start(config(), rec.clone()).await;
    let mut clients = connect_n(&socket, &rec, 3).await;
    let h = socket.handle();
    // 1018 bytes frame to 1024 ("1018:" + data + ","), the most that is
    // copied; 1019 to 1025, shared. 600 frames of ~100 bytes fill several
    // 16 KB buffers.
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for i in 0..600usize {
        let len = match i % 7 {
            0 => 1018,
            1 => 1019,
            2 => 5000,
            _ => 90 + i % 13,
        };
        let data: Vec<u8> = (0..len).map(|k| b'a' + ((i + k) % 26) as u8).collect();
        assert_eq!(h.relay(&data).unwrap(), 3);
        sent.push(data);
    }
    for c in &mut clients {
        for (i, want) in sent.iter().enumerate() {
            assert_eq!(c.recv().await.unwrap(), &want[..], "frame {i}");
        }
    }
    let total: usize = sent.iter().map(|d| d.len()).sum();
    eventually("all written", || h.stats().frames_written == 3 * 600).await;
    let s = h.stats();
    assert!(s.bytes_written > 3 * total as u64);
    assert_eq!(s.max_queued_bytes, 0);
    socket.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_frame_within_limit_arrives_whole() {
    // 4 MiB in, 4 MiB out: far past the 32 KB the original could buffer.
    let big: Vec<u8> = (0..4 * 1024 * 1024)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let rec = Arc::new(Recorder::new().on_msg(|ctx| {
        ctx.handle().relay(ctx.message().unwrap()).unwrap();
    }));
    let socket = start(
        Config {
            max_frame_size: 8 << 20,
            ..config()
        },
        rec.clone(),
    )
    .await;
    let mut c = connect_n(&socket, &rec, 1).await.remove(0);
    c.send(&big).await;
    assert_eq!(c.recv().await.unwrap(), &big[..]);
    rec.wait_for(Event::MessageReceived, 1).await;
    assert_eq!(rec.messages()[0], &big[..]);
    socket.shutdown().await;
}

/// The two-phase start: the handle exists before any thread runs (so a
/// script engine can be built with it), the socket accepts only after
/// `start`, and the handle does not keep the handler alive after shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_before_start_and_no_handler_cycle() {
    let bound = EventSocket::listen(config()).await.expect("binds");
    let addr = bound.local_addr();
    let early = bound.handle();
    assert_eq!(early.client_count(), 0);
    assert_eq!(early.relay(b"too early").unwrap(), 0, "no client yet");
    let rec = Arc::new(Recorder::new().on_msg(|ctx| {
        ctx.handle().relay(ctx.message().unwrap()).unwrap();
    }));
    let watch = Arc::downgrade(&rec);
    let socket = bound.start(rec.clone()).expect("starts");
    assert_eq!(socket.local_addr(), addr);
    let mut c = TestClient::connect(addr).await;
    rec.wait_for(Event::ConnectionNew, 1).await;
    // The handle taken before start reaches clients of the running socket.
    assert_eq!(early.relay(b"hello").unwrap(), 1);
    assert_eq!(c.recv().await.unwrap(), Bytes::from_static(b"hello"));
    c.send(b"echo").await;
    assert_eq!(c.recv().await.unwrap(), Bytes::from_static(b"echo"));
    drop(rec);
    socket.shutdown().await;
    assert!(
        watch.upgrade().is_none(),
        "the handler is dropped at shutdown while a handle is still held"
    );
    assert_eq!(early.client_count(), 0);
}

/// A bad parameter is refused by the first phase, before any thread runs.
#[tokio::test]
async fn listen_refuses_bad_config() {
    let err = EventSocket::listen(Config {
        workers: 0,
        max_clients: 0,
        ..config()
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("max_clients"), "{err}");
}

/// `workers = 0`: the dispatcher thread serves the connections on a runtime
/// of its own and runs every event inline there, as Kamailio's dispatcher
/// does (no queue, no second thread to wake per message). Shown three ways:
/// every event runs on `evapi-dispatcher`; message-received runs inside a
/// tokio runtime (the dispatcher's: before, the dispatcher was a plain
/// thread fed by a queue); and a handler blocked there does not hold back
/// the caller's runtime (this test's only thread, which must run to let
/// the handler go on).
#[tokio::test]
async fn workers_zero_runs_events_inline_on_the_dispatchers_own_runtime() {
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let entered_tx = std::sync::Mutex::new(entered_tx);
    let go_rx = std::sync::Mutex::new(go_rx);
    let outcome = Arc::new(std::sync::Mutex::new(None::<(bool, bool)>));
    let out = outcome.clone();
    let rec = Arc::new(Recorder::new().on_msg(move |ctx| {
        if ctx.message().is_some_and(|m| &m[..] == b"wait") {
            let in_runtime = tokio::runtime::Handle::try_current().is_ok();
            let _ = entered_tx.lock().unwrap().send(());
            let released = go_rx.lock().unwrap().recv_timeout(WAIT).is_ok();
            *out.lock().unwrap() = Some((in_runtime, released));
        }
    }));
    let socket = start_dispatcher_only(rec.clone()).await;
    let mut c = connect_n(&socket, &rec, 1).await.remove(0);
    c.send(b"wait").await;
    // Only this runtime can see the handler enter and let it go on.
    eventually("the handler to enter", || entered_rx.try_recv().is_ok()).await;
    go_tx.send(()).unwrap();
    rec.wait_for(Event::MessageReceived, 1).await;
    assert_eq!(
        *outcome.lock().unwrap(),
        Some((true, true)),
        "(ran inside the dispatcher's runtime, was let go by the caller's)"
    );
    drop(c);
    rec.wait_for(Event::ConnectionClosed, 1).await;
    let threads: Vec<(Event, String)> = rec
        .events()
        .into_iter()
        .map(|s| (s.event, s.thread))
        .collect();
    assert_eq!(
        threads,
        [
            (Event::ConnectionNew, "evapi-dispatcher".to_string()),
            (Event::MessageReceived, "evapi-dispatcher".to_string()),
            (Event::ConnectionClosed, "evapi-dispatcher".to_string()),
        ]
    );
    socket.shutdown().await;
}

/// Relays to every client (appended once to the log all writers read),
/// to a tag (queued per client) and to one client (perhaps written at
/// once by the relaying thread), small and large, interleaved: each
/// client gets exactly the frames meant for it, in the order relayed. A
/// client that joins midway gets the relays from then on; one that leaves
/// midway gets those before it left. Every frame received is counted as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_to_all_and_to_some_keep_each_clients_order() {
    let rec = Arc::new(tagging_recorder());
    let socket = start(config(), rec.clone()).await;
    let mut c = connect_n(&socket, &rec, 3).await;
    c[0].send(b"tag:a").await;
    c[1].send(b"tag:b").await;
    rec.wait_for(Event::MessageReceived, 2).await;
    let h = socket.handle();
    let mut want: Vec<Vec<String>> = vec![Vec::new(); 4];
    let large = "L".repeat(2000);
    const N: usize = 2000;
    for i in 0..N {
        if i == 700 {
            c.push(TestClient::connect(socket.local_addr()).await);
            rec.wait_for(Event::ConnectionNew, 4).await;
        }
        if i == 1300 {
            c[2].send(b"bye").await;
            rec.wait_for(Event::ConnectionClosed, 1).await;
        }
        let all = if i % 7 == 3 {
            format!("all {i} {large}")
        } else {
            format!("all {i}")
        };
        let sent = h.relay(all.as_bytes()).unwrap();
        let now: Vec<usize> = if i < 700 {
            vec![0, 1, 2]
        } else if i < 1300 {
            vec![0, 1, 2, 3]
        } else {
            vec![0, 1, 3]
        };
        assert_eq!(sent, now.len(), "relay {i}");
        for &k in &now {
            want[k].push(all.clone());
        }
        if i % 3 == 0 {
            let one = format!("a {i}");
            assert_eq!(h.unicast(one.as_bytes(), b"a").unwrap(), 1);
            want[0].push(one);
        }
        if i % 5 == 0 {
            let some = if i % 10 == 0 {
                format!("b {i} {large}")
            } else {
                format!("b {i}")
            };
            assert_eq!(h.multicast(some.as_bytes(), b"b").unwrap(), 1);
            want[1].push(some);
        }
        if i % 100 == 0 {
            // Let the writers catch up now and then, so relays alone meet
            // idle clients too.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
    let mut received = 0;
    for (k, client) in c.iter_mut().enumerate() {
        for (n, w) in want[k].iter().enumerate() {
            let got = client.recv().await;
            assert_eq!(got.as_deref(), Some(w.as_bytes()), "client {k}, frame {n}");
            received += 1;
        }
    }
    // The client that left got everything relayed before, then the close.
    assert_eq!(want[2].len(), 1300);
    assert_eq!(c[2].recv().await, None);
    eventually("every frame received counted as written", || {
        h.stats().frames_written == received
    })
    .await;
    socket.shutdown().await;
}
