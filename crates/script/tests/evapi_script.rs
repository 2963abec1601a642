//! A Lua script handling evapi events over real loopback connections.

use evapi::testing::TestClient;
use evapi::Config;
use script::{Engine, ScriptConfig};
use std::path::PathBuf;
use std::time::Duration;

mod common;

const WAIT: Duration = Duration::from_secs(20);

const SCRIPT: &str = r#"
local cjson = require("cjson")

function ksr_request_route()
end

function ksr_evapi_event(evname)
    if evname == "evapi:connection-new" then
        local idx = KSR.pv.get("$evapi(conidx)")
        KSR.pv.seti("$var(seen)", (KSR.pv.get("$var(seen)") or 0) + 1)
        KSR.evapi.set_tag("client-" .. idx)
        KSR.info("new client " .. idx .. " from " .. KSR.pv.get("$evapi(srcaddr)") .. "\n")
        return
    end
    if evname == "evapi:connection-closed" then
        KSR.htable.sht_seti("closed", tostring(KSR.pv.get("$evapi(conidx)")), 1)
        return
    end
    -- message-received
    local msg = KSR.pv.get("$evapi(msg)")
    local req = cjson.decode(msg)
    if req.cmd == "echo" then
        KSR.evapi.relay_unicast(cjson.encode({echo = req.text, conidx = KSR.pv.get("$evapi(conidx)"),
            port = KSR.pv.get("$evapi(srcport)")}), "client-" .. KSR.pv.get("$evapi(conidx)"))
    elseif req.cmd == "tag" then
        KSR.evapi.set_tag(req.tag)
    elseif req.cmd == "multicast" then
        KSR.evapi.relay_multicast(req.text, req.tag)
    elseif req.cmd == "count" then
        KSR.pv.sets("$shv(last)", "counted")
        KSR.evapi.relay(cjson.encode({clients = KSR.evapi.client_count(), tagged = KSR.evapi.client_count(req.tag),
            shv = KSR.pv.get("$shv(last)"), null = KSR.pv.get("$evapi(nope)"), closed = KSR.htable.sht_get("closed", "0")}))
    elseif req.cmd == "jansson" then
        KSR.jansson.get("a.b[1]", msg, "$var(j)")
        KSR.evapi.relay("jansson=" .. KSR.pv.get("$var(j)"))
    elseif req.cmd == "exit" then
        KSR.evapi.relay("before exit")
        KSR.x.exit()
        KSR.evapi.relay("after exit")
    elseif req.cmd == "error" then
        local t = nil
        return t.field
    elseif req.cmd == "close" then
        KSR.evapi.close()
    end
end
"#;

async fn wait_until(mut cond: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_handles_the_three_events() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let config = Config {
        // One worker: messages are handled in arrival order, so the
        // frames each step expects come in a known order.
        workers: 1,
        ..Config::default()
    };
    let (engine, bound, _sip) = common::engine(SCRIPT, "ksr_evapi_event", config)
        .await
        .unwrap();
    let socket = bound.start(engine.evapi_handler()).unwrap();
    let h = socket.handle();
    let addr = socket.local_addr();

    let mut a = TestClient::connect(addr).await;
    let mut b = TestClient::connect(addr).await;
    // connection-new tagged them "client-0" and "client-1".
    wait_until(|| h.tag_count(b"client-0") + h.tag_count(b"client-1") == 2).await;

    send(&mut a, r#"{"cmd":"echo","text":"hi"}"#).await;
    let echo: serde_json::Value = serde_json::from_str(&a.recv_text().await.unwrap()).unwrap();
    assert_eq!(echo["echo"], "hi");
    assert_eq!(echo["conidx"], 0, "an integer, not 0.0");
    assert_eq!(echo["port"], a.stream.local_addr().unwrap().port());

    send(&mut b, r#"{"cmd":"tag","tag":"billing"}"#).await;
    wait_until(|| h.tag_count(b"billing") == 1).await;
    send(
        &mut a,
        r#"{"cmd":"multicast","tag":"billing","text":"to billing"}"#,
    )
    .await;
    assert_eq!(b.recv_text().await.unwrap(), "to billing");

    send(&mut a, r#"{"cmd":"count","tag":"billing"}"#).await;
    let count: serde_json::Value = serde_json::from_str(&a.recv_text().await.unwrap()).unwrap();
    assert_eq!(count["clients"], 2);
    assert_eq!(count["tagged"], 1);
    assert_eq!(count["shv"], "counted");
    assert!(count.get("null").is_none(), "an unknown pv reads as nil");
    assert_eq!(b.recv_text().await.unwrap(), count.to_string());

    send(&mut a, r#"{"cmd":"jansson","a":{"b":[1,42]}}"#).await;
    assert_eq!(a.recv_text().await.unwrap(), "jansson=42");
    assert_eq!(b.recv_text().await.unwrap(), "jansson=42");

    // KSR.x.exit() ends the callback; a runtime error is logged and the
    // next message is served as usual.
    send(&mut a, r#"{"cmd":"exit"}"#).await;
    assert_eq!(a.recv_text().await.unwrap(), "before exit");
    send(&mut a, r#"{"cmd":"error"}"#).await;
    send(&mut a, r#"{"cmd":"jansson","a":{"b":[0,7]}}"#).await;
    assert_eq!(
        a.recv_text().await.unwrap(),
        "jansson=7",
        "no 'after exit' in between"
    );

    // close() from message-received; connection-closed ran for it.
    send(&mut b, r#"{"cmd":"close"}"#).await;
    let _ = b.recv_text().await; // "before exit"/"jansson" frames may still be queued
    while b.recv_text().await.is_some() {}
    wait_until(|| h.client_count() == 1).await;
    send(&mut a, r#"{"cmd":"count","tag":"billing"}"#).await;
    let count: serde_json::Value = serde_json::from_str(&a.recv_text().await.unwrap()).unwrap();
    assert_eq!(count["clients"], 1);
    assert_eq!(count["tagged"], 0);
    socket.shutdown().await;
}

async fn send(c: &mut TestClient, msg: &str) {
    c.send(msg.as_bytes()).await;
}

fn engine(source: &str, callback: &str) -> Result<(), script::ScriptError> {
    Engine::check(&ScriptConfig {
        file: PathBuf::from("test.lua"),
        source: Some(source.to_string()),
        event_callback: callback.to_string(),
        ..Default::default()
    })
}

#[test]
fn load_errors_name_file_and_line() {
    let e = engine("function ksr_request_route()\n  local x = = 1\nend\n", "").unwrap_err();
    let text = e.to_string();
    assert!(text.contains("test.lua:2:"), "{text}");
    let e = engine(
        "function ksr_request_route() end\nerror('boom at load')\n",
        "",
    )
    .unwrap_err();
    assert!(e.to_string().contains("test.lua:2: boom at load"), "{e}");
    let e = engine("function f() end\n", "").unwrap_err();
    assert!(
        e.to_string().contains("ksr_request_route() is not defined"),
        "{e}"
    );
    let e = engine("function ksr_request_route() end\n", "ksr_evapi_event").unwrap_err();
    assert!(
        e.to_string().contains("ksr_evapi_event() is not defined"),
        "{e}"
    );
    let e = Engine::check(&ScriptConfig {
        file: PathBuf::from("/nonexistent/router.lua"),
        source: None,
        event_callback: String::new(),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/router.lua"), "{e}");
}
