//! The engine's RPC methods and the script's way into the registry, with a
//! real event socket and SIP host on loopback: `htable.*` and the
//! script's `KSR.htable` see the same tables, `KSR.jsonrpcs.exec` fills
//! `$jsonrpl`, and `app_lua.reload` swaps the script under running calls
//! (refused when the new one does not load).

use evapi::testing::BlockingClient;
use evapi::{Config, EventSocket};
use rpc::Registry;
use script::{Engine, HtableSection, ScriptConfig};
use serde_json::{json, Value};
use sip::testing::{branch, Agent, Call};
use sip::{HostConfig, SipConfig, SipHost};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// An engine for the script file `router.lua` (written by the test), its
/// event socket and SIP host started on loopback, and a registry with
/// the engine's and the SIP host's methods.
struct Running {
    rt: tokio::runtime::Runtime,
    engine: Arc<Engine>,
    registry: Arc<Registry>,
    events: Option<EventSocket>,
    host: Option<SipHost>,
    dir: PathBuf,
}

impl Running {
    fn start(name: &str, script: &str, htable: Vec<String>) -> Running {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let dir =
            std::env::temp_dir().join(format!("evapi-script-rpc-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("router.lua"), script).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (bound_events, bound_sip) = rt.block_on(async {
            let events = EventSocket::listen(Config {
                bind_addr: "127.0.0.1:0".into(),
                workers: 1,
                ..Config::default()
            })
            .await
            .unwrap();
            let sip = SipHost::bind(HostConfig {
                sip: SipConfig {
                    listen: vec!["udp:127.0.0.1:0".into()],
                    children: 1,
                    ..SipConfig::default()
                },
                ..HostConfig::default()
            })
            .await
            .unwrap();
            (events, sip)
        });
        let registry = Registry::new();
        let engine = Engine::new(
            &ScriptConfig {
                file: dir.join("router.lua"),
                source: None,
                event_callback: "ksr_evapi_event".into(),
                htable: HtableSection {
                    htable,
                    ..HtableSection::default()
                },
                ..Default::default()
            },
            Arc::new(bound_events.handle()),
            Arc::new(bound_sip.handle()),
            registry.clone(),
        )
        .unwrap();
        script::rpc::register(&registry, &engine);
        sip::rpc::register(&registry, bound_sip.handle());
        let _in_rt = rt.enter();
        let events = bound_events.start(engine.evapi_handler()).unwrap();
        let host = bound_sip.start(engine.sip_router()).unwrap();
        Running {
            rt,
            engine,
            registry,
            events: Some(events),
            host: Some(host),
            dir,
        }
    }

    /// An event client, returned once the event socket has admitted it
    /// (a relay made before that would reach no one: connect returns as
    /// soon as the kernel accepted the TCP connection).
    fn client(&self) -> BlockingClient {
        let events = self.events.as_ref().unwrap();
        let before = events.handle().client_count();
        let c = BlockingClient::connect(events.local_addr());
        // Bounded: 500 x 10 ms.
        for _ in 0..500 {
            if events.handle().client_count() > before {
                return c;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the event socket did not admit the client within 5 s");
    }

    fn sip_addr(&self) -> std::net::SocketAddr {
        self.host.as_ref().unwrap().local_addrs()[0].1
    }

    fn write_script(&self, text: &str) {
        std::fs::write(self.dir.join("router.lua"), text).unwrap();
    }

    fn call(&self, method: &str, params: Value) -> Result<Value, rpc::RpcError> {
        self.registry.call(method, params)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(h) = self.host.take() {
            self.rt.block_on(h.shutdown());
        }
        if let Some(e) = self.events.take() {
            self.rt.block_on(e.shutdown());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Answers the test client's commands: `get KEY`, `set KEY VALUE`, and
/// `rpc JSON` (through KSR.jsonrpcs.exec, answered with the return value
/// and the three $jsonrpl fields).
const TABLES: &str = r#"
function ksr_request_route() end
function ksr_evapi_event(ev)
    if ev ~= "evapi:message-received" then return end
    local msg = KSR.pv.get("$evapi(msg)")
    local cmd, rest = msg:match("^(%S+) (.*)$")
    if cmd == "get" then
        KSR.evapi.relay("got " .. tostring(KSR.htable.sht_get("t", rest)))
    elseif cmd == "set" then
        local k, v = rest:match("^(%S+) (.*)$")
        KSR.evapi.relay("set " .. KSR.htable.sht_sets("t", k, v))
    elseif cmd == "rpc" then
        local r = KSR.jsonrpcs.exec(rest)
        KSR.evapi.relay(r .. "|" .. KSR.pv.get("$jsonrpl(code)") .. "|" .. KSR.pv.get("$jsonrpl(text)")
            .. "|" .. KSR.pv.get("$jsonrpl(body)"))
    end
end
"#;

#[test]
fn htable_methods_and_the_script_share_tables() {
    let r = Running::start(
        "htable",
        TABLES,
        vec!["t=>size=8;".into(), "x=>autoexpire=600;".into()],
    );
    let mut c = r.client();

    // RPC writes, the script reads.
    assert_eq!(
        r.call("htable.sets", json!(["t", "k", "from rpc"]))
            .unwrap(),
        "Ok. Key set to new value."
    );
    r.call("htable.seti", json!(["t", "n", 42])).unwrap();
    c.send("get k");
    assert_eq!(c.recv().unwrap(), "got from rpc");
    c.send("get n");
    assert_eq!(c.recv().unwrap(), "got 42");

    // The script writes, RPC reads.
    c.send("set s from the script");
    assert_eq!(c.recv().unwrap(), "set 1");
    assert_eq!(
        r.call("htable.get", json!(["t", "s"])).unwrap(),
        json!({"item": {"name": "s", "value": "from the script", "flags": 2, "expire": "NEVER"}})
    );
    assert_eq!(
        r.call("htable.get", json!(["t", "n"])).unwrap()["item"]["flags"],
        0
    );
    assert_eq!(
        r.call("htable.dump", json!(["t"])).unwrap(),
        json!([{"entry": 0, "size": 3, "slot": [
            {"name": "k", "value": "from rpc", "type": "str"},
            {"name": "n", "value": 42, "type": "int"},
            {"name": "s", "value": "from the script", "type": "str"},
        ]}])
    );
    assert_eq!(r.call("htable.dump", json!(["x"])).unwrap(), json!([]));
    r.call("htable.sets", json!(["x", "a", "b"])).unwrap();
    let expire = r.call("htable.get", json!(["x", "a"])).unwrap()["item"]["expire"].clone();
    let expire = expire.as_str().unwrap();
    assert!(expire.len() == 19 && expire.starts_with("20"), "{expire}");

    // Delete, then the script sees nothing; a second delete is 404.
    assert_eq!(
        r.call("htable.delete", json!(["t", "k"])).unwrap(),
        "Ok. Key deleted."
    );
    c.send("get k");
    assert_eq!(c.recv().unwrap(), "got nil");
    for (method, params, code, text) in [
        (
            "htable.delete",
            json!(["t", "k"]),
            404,
            r#"no key "k" in htable "t""#,
        ),
        (
            "htable.get",
            json!(["t", "k"]),
            404,
            r#"no key "k" in htable "t""#,
        ),
        (
            "htable.get",
            json!(["nosuch", "k"]),
            404,
            r#"no htable "nosuch""#,
        ),
        (
            "htable.sets",
            json!(["nosuch", "k", "v"]),
            404,
            r#"no htable "nosuch""#,
        ),
        (
            "htable.dump",
            json!(["nosuch"]),
            404,
            r#"no htable "nosuch""#,
        ),
        ("htable.seti", json!(["t", "k", "abc"]), -32602, "value"),
        ("htable.get", json!(["t"]), -32602, "key name"),
    ] {
        let e = r.call(method, params).unwrap_err();
        assert_eq!(e.code, code, "{method}: {e}");
        assert!(e.message.contains(text), "{method}: {e}");
    }

    // The script through the registry: a write, then an error.
    c.send(r#"rpc {"jsonrpc":"2.0","method":"htable.seti","params":["t","z",9],"id":3}"#);
    let answer = c.recv().unwrap();
    let parts: Vec<&str> = answer.splitn(4, '|').collect();
    assert_eq!(parts[..3], ["1", "200", "OK"], "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(parts[3]).unwrap(),
        json!({"jsonrpc": "2.0", "result": "Ok. Key set to new value.", "id": 3})
    );
    assert_eq!(
        r.call("htable.get", json!(["t", "z"])).unwrap()["item"]["value"],
        9
    );
    c.send(r#"rpc {"jsonrpc":"2.0","method":"htable.get","params":["t","gone"],"id":4}"#);
    assert_eq!(
        c.recv().unwrap(),
        r#"1|404|no key "gone" in htable "t"|{"error":{"code":404,"message":"no key \"gone\" in htable \"t\""},"id":4,"jsonrpc":"2.0"}"#
    );
}

/// Version `v` of a script that suspends INVITEs (telling the event
/// client `i l`), continues them into `resume()` when the client says
/// `continue i l`, and answers OPTIONS with its version, the `$shv` and
/// `$var` set by the first script, in the reason phrase.
fn versioned(v: &str, with_resume: bool) -> String {
    let resume = if with_resume {
        format!(r#"function resume() KSR.tm.t_reply(200, "resumed by {v}") end"#)
    } else {
        String::new()
    };
    format!(
        r#"
{resume}
function ksr_request_route()
    if KSR.is_OPTIONS() then
        if KSR.pv.is_null("$shv(boot)") then KSR.pv.sets("$shv(boot)", "{v}") end
        if KSR.pv.is_null("$var(first)") then KSR.pv.sets("$var(first)", "{v}") end
        KSR.sl.send_reply(200, "{v} shv=" .. KSR.pv.get("$shv(boot)") .. " var=" .. KSR.pv.get("$var(first)"))
        return
    end
    if KSR.is_INVITE() then
        KSR.tm.t_newtran()
        KSR.evapi.async_relay(KSR.pv.get("$T(id_index)") .. " " .. KSR.pv.get("$T(id_label)"))
        return
    end
    KSR.sl.send_reply(404, "Not Here")
end
function ksr_evapi_event(ev)
    if ev ~= "evapi:message-received" then return end
    local i, l = KSR.pv.get("$evapi(msg)"):match("^continue (%d+) (%d+)$")
    if KSR.tmx.t_continue(tonumber(i), tonumber(l), "resume") < 0 then
        -- The function is gone: answer by hand through the registry.
        KSR.jsonrpcs.exec('{{"jsonrpc":"2.0","method":"tm.reply","params":[503,"No Resume In {v}","' .. i .. ':' .. l .. '",""],"id":1}}')
        KSR.evapi.relay("tm.reply " .. KSR.pv.get("$jsonrpl(code)"))
    end
end
"#
    )
}

fn options(a: &mut Agent, to: std::net::SocketAddr, n: u32) -> String {
    let call = Call::new(a, &format!("reload-options-{n}"), "sip:ping@127.0.0.1");
    a.send(to, call.request("OPTIONS", &branch(), 1, None, ""))
        .unwrap();
    let (reply, _) = a.recv(WAIT).expect("a reply to OPTIONS");
    assert_eq!(reply.status(), Some(200));
    String::from_utf8_lossy(reply.reason().unwrap()).into_owned()
}

/// An INVITE suspended by the script: the agent that sent it (past its
/// 100) and the `i l` the event client got.
fn suspended_invite(
    c: &mut BlockingClient,
    to: std::net::SocketAddr,
    call_id: &str,
) -> (Agent, Call, String) {
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&a, call_id, "sip:bob@127.0.0.1");
    a.send(to, call.request("INVITE", &branch(), 1, None, ""))
        .unwrap();
    a.expect_status(100, None, WAIT).expect("100 Trying");
    let ids = c.recv().expect("the suspended transaction's ids");
    (a, call, ids)
}

#[test]
fn reload_swaps_the_script_and_keeps_calls_in_progress() {
    let r = Running::start("reload", &versioned("v1", true), vec![]);
    let to = r.sip_addr();
    let mut ua = Agent::udp("127.0.0.1:0").unwrap();
    let mut c = r.client();
    assert_eq!(options(&mut ua, to, 1), "v1 shv=v1 var=v1");

    // A call suspended under v1.
    let (mut a, _call, ids) = suspended_invite(&mut c, to, "reload-inv-1");
    let tx = r.call("tm.list", json!(["suspended"])).unwrap();
    assert_eq!(tx.as_array().unwrap().len(), 1);

    // A broken script is refused, naming file and line; v1 stays.
    r.write_script("function ksr_request_route()\n  local x = = 1\nend\n");
    let e = r.call("app_lua.reload", json!([])).unwrap_err();
    assert_eq!(e.code, 500);
    assert!(e.message.contains("router.lua:2:"), "{e}");
    assert!(e.message.contains("the old script stays"), "{e}");
    r.write_script("function not_the_route() end\n");
    let e = r.call("app_lua.reload", json!([])).unwrap_err();
    assert!(e.message.contains("ksr_request_route"), "{e}");
    assert_eq!(r.engine.generation(), 1);
    assert_eq!(options(&mut ua, to, 2), "v1 shv=v1 var=v1");

    // v2 loads: new messages run it, with $shv and this worker's $var kept.
    r.write_script(&versioned("v2", true));
    let done = r.call("app_lua.reload", json!([])).unwrap();
    assert_eq!(
        (done["old"].clone(), done["new"].clone()),
        (json!(1), json!(2))
    );
    assert!(done["file"].as_str().unwrap().ends_with("router.lua"));
    assert_eq!(options(&mut ua, to, 3), "v2 shv=v1 var=v1");
    let e = r.call("app_lua.reload", json!([3])).unwrap_err();
    assert_eq!(e.code, -32602);

    // The call suspended under v1 completes under v2.
    c.send(&format!("continue {ids}"));
    let (ok, _) = a.recv(WAIT).expect("the resumed call's reply");
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.reason(), Some(&b"resumed by v2"[..]));

    // v3 has no resume(): t_continue fails (logged), and the script
    // answers the call through the registry instead.
    let (mut a3, _call3, ids3) = suspended_invite(&mut c, to, "reload-inv-3");
    r.write_script(&versioned("v3", false));
    r.call("app_lua.reload", json!([])).unwrap();
    c.send(&format!("continue {ids3}"));
    assert_eq!(c.recv().unwrap(), "tm.reply 200");
    let (busy, _) = a3.recv(WAIT).expect("the hand-made reply");
    assert_eq!(busy.status(), Some(503));
    assert_eq!(busy.reason(), Some(&b"No Resume In v3"[..]));
    assert_eq!(r.call("tm.list", json!(["suspended"])).unwrap(), json!([]));
}

#[test]
fn the_script_can_reload_itself() {
    // KSR.jsonrpcs.exec("app_lua.reload") from a route: the reload checks
    // the new script on this thread and the route goes on in the old one.
    let script = |v: &str| {
        format!(
            r#"
function ksr_request_route()
    local r = KSR.jsonrpcs.exec('{{"jsonrpc":"2.0","method":"app_lua.reload","id":1}}')
    KSR.sl.send_reply(200, "{v} " .. KSR.pv.get("$jsonrpl(code)"))
end
function ksr_evapi_event(ev) end
"#
        )
    };
    let r = Running::start("self", &script("v1"), vec![]);
    let to = r.sip_addr();
    let mut ua = Agent::udp("127.0.0.1:0").unwrap();
    r.write_script(&script("v2"));
    assert_eq!(options(&mut ua, to, 1), "v1 200");
    assert_eq!(options(&mut ua, to, 2), "v2 200");
    assert_eq!(r.engine.generation(), 3);
}
