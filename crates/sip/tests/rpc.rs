//! The tm RPC methods on a running host, through the registry as the HTTP
//! listener and scripts call it: `tm.list` shows a suspended INVITE sent
//! over loopback UDP, `tm.reply` answers it, and what the reply gate
//! refuses is refused with nothing sent.

mod common;

use common::*;
use rpc::Registry;
use serde_json::{json, Value};

fn registry(h: &TestHost) -> std::sync::Arc<Registry> {
    let r = Registry::new();
    sip::rpc::register(&r, h.handle.clone());
    r
}

/// The one entry of `tm.list` (with these params), checked to be alone.
fn only(r: &Registry, params: Value) -> Value {
    let list = r.call("tm.list", params).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    list[0].clone()
}

#[test]
fn list_and_reply_by_hand_a_suspended_invite() {
    let h = TestHost::start(Mode::Suspend, |_| {});
    let r = registry(&h);
    let to = h.addr(Transport::Udp);
    let mut a = uac(&h, Transport::Udp);
    let call = Call::new(&a, "rpc-reply-1", "sip:bob@127.0.0.1");
    a.send(to, call.request("INVITE", &branch(), 1, None, ""))
        .unwrap();
    a.expect_status(100, None, WAIT).expect("100 Trying");
    let tx = h.next_suspended();
    let id = format!("{}:{}", tx.index, tx.label);

    let t = only(&r, json!([]));
    assert_eq!(t["id"], json!(id));
    assert_eq!(t["tindex"], json!(tx.index));
    assert_eq!(t["tlabel"], json!(tx.label));
    assert_eq!(t["method"], "INVITE");
    assert_eq!(t["callid"], "rpc-reply-1");
    assert_eq!(t["state"], "suspended");
    assert_eq!(t["cseq"], "1 INVITE");
    assert_eq!(t["code"], 100);
    assert!(t["age_ms"].is_u64());
    assert_eq!(only(&r, json!(["suspended"]))["id"], json!(id));
    assert_eq!(r.call("tm.list", json!(["completed"])).unwrap(), json!([]));
    let e = r.call("tm.list", json!(["asleep"])).unwrap_err();
    assert_eq!(e.code, -32602);
    assert!(e.message.contains("\"asleep\""), "{e}");

    // What the gate refuses: bad parameters, nothing sent, the
    // transaction still suspended.
    let refused = [
        json!([700, "Big", id, ""]),
        json!([99, "Small", id, ""]),
        json!([65736, "Wraps", id, ""]),
        json!([200, "OK\r\nX-Injected: yes", id, ""]),
        json!([200, "OK", id, "", "X-A: 1\nX-Injected: yes"]),
        json!([200, "OK", id, "", "X-A: 1\r\n\r\nX-Injected: yes"]),
        json!([200, "OK", id, "", "X-A: 1\rX-Injected: yes"]),
        json!([200, "OK", id, "", "not a header"]),
        json!([200, "OK", id, "", "Content-Length: 0"]),
        json!([
            200,
            "OK",
            id,
            "",
            "X-A: 1",
            "a body without its Content-Type"
        ]),
        json!([200, "OK", id, "tag;x=1"]),
        json!([200, "OK", "1:2:3", ""]),
        json!(["two hundred", "OK", id, ""]),
        json!([200, "OK", id]),
    ];
    for params in refused {
        let e = r.call("tm.reply", params.clone()).unwrap_err();
        assert_eq!(e.code, -32602, "{params}: {e}");
    }
    let e = r
        .call("tm.reply", json!([200, "OK", "7:4294967295", ""]))
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (481, "no transaction 7:4294967295")
    );
    assert_eq!(only(&r, json!([]))["state"], "suspended");

    // A provisional with our To tag, then the final with the operator's
    // tag, headers and body.
    assert_eq!(
        r.call("tm.reply", json!(["180", "Ringing", id, ""]))
            .unwrap(),
        json!({})
    );
    assert_eq!(
        r.call(
            "tm.reply",
            json!([
                200,
                "Answered By Hand",
                id,
                "op-tag.1",
                "X-By: rpc\r\nContent-Type: text/plain\r\n",
                "hello"
            ])
        )
        .unwrap(),
        json!({})
    );
    // The first messages after the 100 are these two: nothing refused
    // above reached the wire.
    let (ringing, _) = a.recv(WAIT).expect("180");
    assert_eq!(ringing.status(), Some(180));
    assert!(ringing.to().unwrap().tag.is_some());
    let (ok, _) = a.recv(WAIT).expect("200");
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.reason(), Some(&b"Answered By Hand"[..]));
    assert_eq!(ok.to().unwrap().tag, Some(&b"op-tag.1"[..]));
    assert_eq!(ok.header("X-By"), Some(&b"rpc"[..]));
    assert_eq!(ok.header("Content-Type"), Some(&b"text/plain"[..]));
    assert_eq!(ok.body(), b"hello");
    assert!(ok.header("X-Injected").is_none());

    // Answered: no longer suspended, and a second answer is refused.
    assert_eq!(h.wait_stats(|s| s.suspended == 0).suspended, 0);
    assert_eq!(only(&r, json!([]))["code"], 200);
    let e = r
        .call("tm.reply", json!([486, "Busy", id, ""]))
        .unwrap_err();
    assert_eq!(e.code, 500);
    assert!(e.message.contains("already has a final reply (200)"), "{e}");
    assert!(h.handle.t_continue(tx.index, tx.label).is_err());
    a.send(to, ack_2xx(&call, 1, &ok)).unwrap();
}
