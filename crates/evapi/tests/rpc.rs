//! `evapi.list` and `evapi.close` on a running event socket with real
//! loopback clients, called through the registry as the HTTP listener and
//! scripts call it.

mod common;

use common::*;
use evapi::{CloseReason, Event};
use rpc::Registry;
use serde_json::{json, Value};
use std::sync::Arc;

fn registry(socket: &evapi::EventSocket) -> Arc<Registry> {
    let r = Registry::new();
    evapi::rpc::register(&r, socket.handle());
    r
}

fn listed(r: &Registry) -> Vec<Value> {
    r.call("evapi.list", json!([]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_counts_traffic_and_close_closes_the_right_client() {
    let rec = Arc::new(Recorder::new().on_new(|ctx| {
        if ctx.conidx() == 1 {
            ctx.set_tag(b"billing").unwrap();
        }
    }));
    let socket = start(config(), rec.clone()).await;
    let r = registry(&socket);
    let mut a = TestClient::connect(socket.local_addr()).await;
    rec.wait_for(Event::ConnectionNew, 1).await;
    let mut b = TestClient::connect(socket.local_addr()).await;
    rec.wait_for(Event::ConnectionNew, 2).await;

    let before = listed(&r);
    assert_eq!(before.len(), 2);
    assert_eq!(before[0]["conidx"], 0);
    assert_eq!(
        before[0]["peer"],
        a.stream.local_addr().unwrap().to_string()
    );
    assert_eq!(before[0]["tag"], Value::Null);
    assert_eq!(
        before[1]["peer"],
        b.stream.local_addr().unwrap().to_string()
    );
    assert_eq!(before[1]["tag"], "billing");
    for c in &before {
        for k in ["frames_in", "bytes_in", "frames_out", "bytes_out"] {
            assert_eq!(c[k], 0, "{k} of {c}");
        }
        assert!(c["connected_since"].as_u64().unwrap() > 1_600_000_000);
        assert!(c["connected_for"].is_u64());
        assert_eq!(c["queued_bytes"], 0);
    }

    // Traffic: a sends two messages; b gets one event ("3:abc," is 6 bytes).
    a.send(b"hello").await;
    a.send(b"hi").await;
    rec.wait_for(Event::MessageReceived, 2).await;
    let h = socket.handle();
    assert_eq!(h.multicast(b"abc", b"billing").unwrap(), 1);
    assert_eq!(b.recv().await.unwrap(), "abc");
    eventually("the write counted", || {
        listed(&r)[1]["frames_out"] == json!(1)
    })
    .await;
    let after = listed(&r);
    assert_eq!(
        (after[0]["frames_in"].clone(), after[0]["bytes_in"].clone()),
        (json!(2), json!(7))
    );
    assert_eq!(after[0]["frames_out"], 0);
    assert_eq!(
        (
            after[1]["frames_out"].clone(),
            after[1]["bytes_out"].clone()
        ),
        (json!(1), json!(6))
    );
    assert_eq!(after[1]["frames_in"], 0);

    // Close b by its index: its socket sees the end, connection-closed
    // runs for it (and only it), a stays.
    let closed = r.call("evapi.close", json!([1])).unwrap();
    assert_eq!(closed["conidx"], 1);
    assert_eq!(closed["peer"], b.stream.local_addr().unwrap().to_string());
    b.expect_closed().await;
    rec.wait_for(Event::ConnectionClosed, 1).await;
    let gone = rec
        .events()
        .into_iter()
        .find(|s| s.event == Event::ConnectionClosed)
        .unwrap();
    assert_eq!(gone.conidx, 1);
    assert_eq!(gone.reason, Some(CloseReason::Operator));
    let left = listed(&r);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["conidx"], 0);
    assert_eq!(h.relay(b"still here").unwrap(), 1);
    assert_eq!(a.recv().await.unwrap(), "still here");

    // Unknown indexes are errors naming them; bad parameters are −32602.
    for (params, code, text) in [
        (json!([1]), 404, "no event client with conidx 1"),
        (json!([-3]), 404, "no event client with conidx -3"),
        (json!(["x"]), -32602, "conidx"),
        (json!([]), -32602, "conidx"),
    ] {
        let e = r.call("evapi.close", params).unwrap_err();
        assert_eq!(e.code, code, "{e}");
        assert!(e.message.contains(text), "{e}");
    }
    assert_eq!(rec.count(Event::ConnectionClosed), 1);
    drop(a);
    socket.shutdown().await;
}
