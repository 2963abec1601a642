//! A Lua script handling evapi events over real loopback connections.

use evapi::codec::NetstringCodec;
use evapi::{Config, EventSocket};
use script::{Engine, ScriptConfig, ScriptError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util_free::read_frame;

mod common;

const WAIT: Duration = Duration::from_secs(20);

/// A tiny netstring reader, so this test depends on nothing but tokio.
mod tokio_util_free {
    use super::*;
    pub async fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
        loop {
            if let Some(colon) = buf.iter().position(|&b| b == b':') {
                let len: usize = std::str::from_utf8(&buf[..colon]).unwrap().parse().unwrap();
                if buf.len() > colon + len {
                    assert_eq!(buf[colon + 1 + len], b',');
                    let frame =
                        String::from_utf8(buf[colon + 1..colon + 1 + len].to_vec()).unwrap();
                    buf.drain(..colon + 2 + len);
                    return Some(frame);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
                .await
                .expect("frame in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

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

fn engine(
    source: &str,
    callback: &str,
) -> Result<(Arc<Engine>, Arc<common::LateEvents>), ScriptError> {
    let events = Arc::new(common::LateEvents::default());
    let engine = Engine::new(
        &ScriptConfig {
            file: PathBuf::from("test.lua"),
            source: Some(source.to_string()),
            event_callback: callback.to_string(),
        },
        events.clone(),
        Arc::new(common::NoSip),
    )?;
    Ok((engine, events))
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn send(s: &mut TcpStream, msg: &str) {
    s.write_all(&NetstringCodec::frame(msg.as_bytes()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_handles_the_three_events() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let (engine, events) = engine(SCRIPT, "ksr_evapi_event").unwrap();
    let config = Config {
        bind_addr: "127.0.0.1:0".into(),
        // One worker: messages are handled in arrival order, so the
        // frames each step expects come in a known order.
        workers: 1,
        ..Config::default()
    };
    let socket = EventSocket::bind(config, engine.evapi_handler())
        .await
        .unwrap();
    let _ = events.0.set(socket.handle());
    let h = socket.handle();
    let addr = socket.local_addr();

    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    let (mut ba, mut bb) = (Vec::new(), Vec::new());
    // connection-new tagged them "client-0" and "client-1".
    wait_until(|| h.tag_count(b"client-0") + h.tag_count(b"client-1") == 2).await;

    send(&mut a, r#"{"cmd":"echo","text":"hi"}"#).await;
    let echo: serde_json::Value =
        serde_json::from_str(&read_frame(&mut a, &mut ba).await.unwrap()).unwrap();
    assert_eq!(echo["echo"], "hi");
    assert_eq!(echo["conidx"], 0, "an integer, not 0.0");
    assert_eq!(echo["port"], a.local_addr().unwrap().port());

    send(&mut b, r#"{"cmd":"tag","tag":"billing"}"#).await;
    wait_until(|| h.tag_count(b"billing") == 1).await;
    send(
        &mut a,
        r#"{"cmd":"multicast","tag":"billing","text":"to billing"}"#,
    )
    .await;
    assert_eq!(read_frame(&mut b, &mut bb).await.unwrap(), "to billing");

    send(&mut a, r#"{"cmd":"count","tag":"billing"}"#).await;
    let count: serde_json::Value =
        serde_json::from_str(&read_frame(&mut a, &mut ba).await.unwrap()).unwrap();
    assert_eq!(count["clients"], 2);
    assert_eq!(count["tagged"], 1);
    assert_eq!(count["shv"], "counted");
    assert!(count.get("null").is_none(), "an unknown pv reads as nil");
    assert_eq!(
        read_frame(&mut b, &mut bb).await.unwrap(),
        count.to_string()
    );

    send(&mut a, r#"{"cmd":"jansson","a":{"b":[1,42]}}"#).await;
    assert_eq!(read_frame(&mut a, &mut ba).await.unwrap(), "jansson=42");
    assert_eq!(read_frame(&mut b, &mut bb).await.unwrap(), "jansson=42");

    // KSR.x.exit() ends the callback; a runtime error is logged and the
    // next message is served as usual.
    send(&mut a, r#"{"cmd":"exit"}"#).await;
    assert_eq!(read_frame(&mut a, &mut ba).await.unwrap(), "before exit");
    send(&mut a, r#"{"cmd":"error"}"#).await;
    send(&mut a, r#"{"cmd":"jansson","a":{"b":[0,7]}}"#).await;
    assert_eq!(
        read_frame(&mut a, &mut ba).await.unwrap(),
        "jansson=7",
        "no 'after exit' in between"
    );

    // close() from message-received; connection-closed ran for it.
    send(&mut b, r#"{"cmd":"close"}"#).await;
    let _ = read_frame(&mut b, &mut bb).await; // "before exit"/"jansson" frames may still be queued
    while read_frame(&mut b, &mut bb).await.is_some() {}
    wait_until(|| h.client_count() == 1).await;
    send(&mut a, r#"{"cmd":"count","tag":"billing"}"#).await;
    let count: serde_json::Value =
        serde_json::from_str(&read_frame(&mut a, &mut ba).await.unwrap()).unwrap();
    assert_eq!(count["clients"], 1);
    assert_eq!(count["tagged"], 0);
    socket.shutdown().await;
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
    })
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/router.lua"), "{e}");
}
