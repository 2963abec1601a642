//! The NATS side against a real nats-server on loopback: answers come back
//! to the node, nobody listening is reported, sends fail at once while
//! disconnected and work again after the server is back, configured
//! subscriptions are delivered.

use bytes::Bytes;
use futures_util::StreamExt;
use nats::testing::NatsServer;
use nats::{NatsHandler, NatsSection, SendError, SendKind, Subscribe};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq, Eq)]
enum Got {
    Reply(String),
    NoResponders(String),
    Message(String, String),
}

struct Recorder(Mutex<mpsc::Sender<Got>>);

impl NatsHandler for Recorder {
    fn reply(&self, p: &Bytes) {
        let _ = self.0.lock().unwrap().send(Got::Reply(text(p)));
    }
    fn no_responders(&self, d: &Bytes) {
        let _ = self.0.lock().unwrap().send(Got::NoResponders(text(d)));
    }
    fn message(&self, s: &str, p: &Bytes) {
        let _ = self.0.lock().unwrap().send(Got::Message(s.into(), text(p)));
    }
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn section(server: &NatsServer) -> NatsSection {
    NatsSection {
        servers: vec![server.url()],
        node: "n1".into(),
        subscribe: vec![Subscribe {
            subject: "control.>".into(),
            queue: String::new(),
        }],
        ..Default::default()
    }
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A worker: answers every event on `evapi.unicast.<tag>` (queue group
/// `workers`) with `ans:<event>`.
async fn worker(url: &str, tag: &str) -> async_nats::Client {
    let c = async_nats::connect(url).await.unwrap();
    let mut sub = c
        .queue_subscribe(format!("evapi.unicast.{tag}"), "workers".into())
        .await
        .unwrap();
    let c2 = c.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let reply = m.reply.expect("every event carries a reply subject");
            let mut ans = b"ans:".to_vec();
            ans.extend_from_slice(&m.payload);
            c2.publish(reply, ans.into()).await.unwrap();
        }
    });
    // `flush` only writes: a request nobody answers comes back after the
    // server has read everything before it, the subscription included.
    assert!(c.request("evapi-test.sync", Bytes::new()).await.is_err());
    c
}

fn recv(rx: &mpsc::Receiver<Got>) -> Got {
    rx.recv_timeout(WAIT).expect("an event from NATS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_no_responders_disconnects_and_subscriptions() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    let (tx, rx) = mpsc::channel();
    let bound = nats::connect(&section(&server)).await.unwrap();
    let handle = bound.handle();
    assert_eq!(handle.reply_subject(), "evapi.node.n1");
    let running = bound
        .start(Arc::new(Recorder(Mutex::new(tx))), 2)
        .await
        .unwrap();
    wait_until("connected", || handle.connected()).await;
    let w = worker(&server.url(), "w").await;

    // A worker's answer comes back to the node, watched or not.
    handle.send(SendKind::Unicast, b"e1", b"w", true).unwrap();
    assert_eq!(recv(&rx), Got::Reply("ans:e1".into()));
    handle.send(SendKind::Unicast, b"e2", b"w", false).unwrap();
    assert_eq!(recv(&rx), Got::Reply("ans:e2".into()));

    // Nobody on the subject: a watched send comes back as no-responders
    // with its data; an unwatched one is silent.
    handle
        .send(SendKind::Unicast, b"e3", b"nobody", false)
        .unwrap();
    handle
        .send(SendKind::Multicast, b"e4", b"nobody", true)
        .unwrap();
    assert_eq!(recv(&rx), Got::NoResponders("e4".into()));
    assert_eq!(handle.stats().no_responders, 1);

    // Bad tags and empty data are refused.
    assert!(matches!(
        handle.send(SendKind::Unicast, b"x", b"a b", true),
        Err(SendError::BadSubject(_))
    ));
    assert_eq!(
        handle.send(SendKind::Relay, b"", b"", false),
        Err(SendError::EmptyData)
    );
    assert!(matches!(
        handle.publish("a.>", b"x", None),
        Err(SendError::BadSubject(_))
    ));

    // KSR.nats.publish: any subject, with a reply subject if given.
    let mut raw = w.subscribe("app.raw").await.unwrap();
    w.flush().await.unwrap();
    handle
        .publish("app.raw", b"hello", Some("back.here"))
        .unwrap();
    let m = tokio::time::timeout(WAIT, raw.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (&m.payload[..], m.reply.as_deref()),
        (&b"hello"[..], Some("back.here"))
    );

    // Configured subscriptions: nats:<subject as configured>.
    w.publish("control.reload", "now".into()).await.unwrap();
    assert_eq!(recv(&rx), Got::Message("control.>".into(), "now".into()));

    // The server goes away: sends fail at once, counted.
    server.stop();
    wait_until("disconnected", || !handle.connected()).await;
    let before = handle.stats();
    let t0 = Instant::now();
    for _ in 0..100 {
        assert_eq!(
            handle.send(SendKind::Unicast, b"e5", b"w", true),
            Err(SendError::Disconnected)
        );
    }
    assert_eq!(
        handle.publish("app.raw", b"x", None),
        Err(SendError::Disconnected)
    );
    assert!(t0.elapsed() < WAIT);
    let after = handle.stats();
    assert_eq!(after.send_disconnected - before.send_disconnected, 101);
    assert!(!after.connected);

    // Back: the node reconnects by itself and resumes.
    server.restart();
    wait_until("reconnected", || handle.connected()).await;
    let _w2 = worker(&server.url(), "w").await;
    // The worker's subscription and the node's own are re-made on the new
    // server: retry until the answer comes (the node resubscribes on its
    // reconnection, asynchronously).
    let deadline = Instant::now() + WAIT;
    loop {
        handle.send(SendKind::Unicast, b"e6", b"w", true).unwrap();
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(Got::Reply(r)) => {
                assert_eq!(r, "ans:e6");
                break;
            }
            Ok(Got::NoResponders(_)) | Err(_) => {
                assert!(Instant::now() < deadline, "no answer after reconnection");
            }
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(handle.stats().connects >= 2);
    running.shutdown().await;
}
