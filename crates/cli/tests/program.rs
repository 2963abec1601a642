//! The real `evapi` binary with configs and scripts: SIP over loopback, event
//! clients over TCP.

mod common;

use common::*;
use std::time::Duration;

/// The embedded default: INVITE suspended, event out, the client's answer
/// decides the reply; the ACK ends it.
#[test]
fn default_flow_client_answer_decides_the_reply() {
    let (ev, mut client) = default_script_with_client();
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    let invite = uac.invite(ev.udp, "flow-486", "flow486").unwrap();
    let (code, _) = uac.recv_status(&[], WAIT).expect("a reply in time");
    assert_eq!(code, 100);

    let event = recv_json(&mut client);
    assert_eq!(event["event"], "invite");
    assert_eq!(event["callid"], "flow-486");
    assert_eq!(event["from"], format!("sip:alice@{}", uac.addr()));
    assert!(
        event["tindex"].is_u64() && event["tlabel"].is_u64(),
        "{event}"
    );
    client.send(&format!(
        r#"{{"tindex":{},"tlabel":{},"code":486,"reason":"Busy Here"}}"#,
        event["tindex"], event["tlabel"]
    ));
    let (code, reply) = uac.recv_status(&[100], WAIT).expect("a reply in time");
    assert_eq!(code, 486, "{reply}");
    assert!(reply.starts_with("SIP/2.0 486 Busy Here"));
    assert!(
        header(&reply, "To").unwrap().contains("tag="),
        "a to-tag on the final reply"
    );
    uac.ack_for(ev.udp, &invite, &reply).unwrap();

    // Answering the same transaction again finds nothing to continue.
    client.send(&format!(
        r#"{{"tindex":{},"tlabel":{},"code":200}}"#,
        event["tindex"], event["tlabel"]
    ));
    ev.wait_log("no suspended call");
}

/// With no event client connected, an INVITE is refused at once.
#[test]
fn default_flow_no_client_gets_503() {
    let ev = Evapi::start(&config(""), DEFAULT_SCRIPT);
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    uac.invite(ev.udp, "no-client", "noclient").unwrap();
    let (code, reply) = uac.recv_status(&[100], WAIT).expect("a reply in time");
    assert_eq!(code, 503, "{reply}");
}

/// The client answers with a destination: the call is relayed there after
/// t_continue; the UAS's replies come back to the caller.
#[test]
fn default_flow_relay_to_destination() {
    let (ev, mut client) = default_script_with_client();
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    let mut uas = Agent::udp("127.0.0.1:0").unwrap();
    uac.invite(ev.udp, "flow-relay", "flowrelay").unwrap();
    let event = recv_json(&mut client);
    client.send(&format!(
        r#"{{"tindex":{},"tlabel":{},"dst":"sip:{}"}}"#,
        event["tindex"],
        event["tlabel"],
        uas.addr()
    ));
    let (fwd, from) = uas.recv_text(WAIT).expect("a SIP message in time");
    assert!(fwd.starts_with("INVITE sip:bob@"), "{fwd}");
    assert_eq!(header(&fwd, "Call-ID").unwrap(), "flow-relay");
    assert_eq!(
        header(&fwd, "Max-Forwards").unwrap(),
        "69",
        "process_maxfwd(10) decremented the received 70, as Kamailio does (10 is only for a missing header)"
    );
    let top_via = header(&fwd, "Via").unwrap();
    assert!(
        top_via.contains(&ev.udp.port().to_string()),
        "our Via on top: {top_via}"
    );
    // Answer 180 then 200, echoing the Vias.
    let vias: Vec<&str> = fwd.lines().filter(|l| l.starts_with("Via:")).collect();
    for (code, reason) in [(180, "Ringing"), (200, "OK")] {
        let reply = format!(
            "SIP/2.0 {code} {reason}\r\n{}\r\nFrom: {}\r\nTo: {};tag=uas1\r\nCall-ID: flow-relay\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@{}>\r\nContent-Length: 0\r\n\r\n",
            vias.join("\r\n"),
            header(&fwd, "From").unwrap(),
            header(&fwd, "To").unwrap(),
            uas.addr()
        );
        uas.send(from, &reply).unwrap();
    }
    let (code, _) = uac.recv_status(&[100], WAIT).expect("a reply in time");
    assert_eq!(code, 180);
    let (code, ok) = uac.recv_status(&[100, 180], WAIT).expect("a reply in time");
    assert_eq!(code, 200, "{ok}");
    assert_eq!(
        ok.lines().filter(|l| l.starts_with("Via:")).count(),
        1,
        "our Via removed: {ok}"
    );
}

const TAGS_SCRIPT: &str = r#"
local cjson = require("cjson")
function ksr_request_route()
    if not KSR.is_INVITE() then return end
    local who = KSR.pv.get("$rU")
    -- relay_multicast to the tag named by the user part, unicast to "first"
    KSR.evapi.relay_multicast(cjson.encode({to = who, kind = "multicast"}), who)
    KSR.evapi.relay_unicast(cjson.encode({to = "first", kind = "unicast"}), "first")
    KSR.evapi.relay(cjson.encode({kind = "all", count = KSR.evapi.client_count()}))
    KSR.sl.send_reply(404, "Not Here")
end
function ksr_evapi_event(evname)
    if evname == "evapi:connection-new" then
        -- every client starts tagged "first"; a message retags it
        KSR.evapi.set_tag("first")
        return
    end
    if evname == "evapi:connection-closed" then
        KSR.pv.seti("$shv(closed)", (KSR.pv.get("$shv(closed)") or 0) + 1)
        KSR.info("closed count " .. KSR.pv.get("$shv(closed)"))
        return
    end
    local m = cjson.decode(KSR.pv.get("$evapi(msg)"))
    if m.tag then KSR.evapi.set_tag(m.tag) end
    if m.close then KSR.evapi.close() end
    if m.ask then KSR.evapi.relay_unicast(cjson.encode({closed = KSR.pv.get("$shv(closed)") or 0}), m.ask) end
end
"#;

/// Tags set in connection-new and in message-received drive multicast and
/// unicast; close() ends a client; connection-closed runs once per client.
#[test]
fn tags_multicast_unicast_close() {
    let ev = Evapi::start(&config(""), TAGS_SCRIPT);
    let mut a = EventClient::connect(ev.events); // conidx 0, stays "first"
    ev.wait_log("conidx=0");
    let mut b = EventClient::connect(ev.events); // conidx 1, becomes "bob"
    ev.wait_log("conidx=1");
    let mut c = EventClient::connect(ev.events); // conidx 2, becomes "bob"
    ev.wait_log("conidx=2");
    b.send(r#"{"tag":"bob"}"#);
    c.send(r#"{"tag":"bob"}"#);
    // The retags are done once b and c answer an "ask" with their new tag.
    b.send(r#"{"ask":"bob"}"#);
    assert!(recv_json(&mut b)["closed"] == 0);
    c.send(r#"{"ask":"bob"}"#);
    let _ = recv_json(&mut b); // unicast to "bob" goes to the lowest index: b again
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    uac.invite(ev.udp, "tags-1", "tags1").unwrap();
    assert_eq!(
        uac.recv_status(&[100], WAIT).expect("a reply in time").0,
        404
    );
    for (client, expect) in [(&mut b, "multicast"), (&mut c, "multicast")] {
        assert_eq!(recv_json(client)["kind"], expect);
        assert_eq!(recv_json(client)["kind"], "all");
    }
    assert_eq!(recv_json(&mut a)["kind"], "unicast");
    let all = recv_json(&mut a);
    assert_eq!(
        (all["kind"].as_str(), all["count"].as_u64()),
        (Some("all"), Some(3))
    );

    // close() from message-received, then connection-closed exactly once.
    c.send(r#"{"close":true}"#);
    assert!(c.recv().is_none(), "closed by the script");
    ev.wait_log("closed count 1");
    drop(b);
    ev.wait_log("closed count 2");
    a.send(r#"{"ask":"first"}"#);
    assert_eq!(recv_json(&mut a)["closed"], 2);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(ev.log_count("closed count"), 2);
}

const ERROR_SCRIPT: &str = r#"
function ksr_request_route()
    if KSR.pv.get("$rU") == "boom" then
        local t = nil
        return t.field   -- runtime error: the request gets a 500
    end
    KSR.sl.send_reply(404, "Not Found")
end
function ksr_evapi_event(evname) end
"#;

/// A runtime error in a route ends that route only: the request gets 500,
/// the log names file and line, the next request is served.
#[test]
fn script_error_gives_500_and_the_server_keeps_running() {
    let ev = Evapi::start(&config(""), ERROR_SCRIPT);
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    let boom = format!("sip:boom@{}", ev.udp);
    let msg = uac
        .invite(ev.udp, "err-1", "err1")
        .unwrap()
        .replace(&format!("sip:bob@{}", ev.udp), &boom);
    let _ = msg;
    // Send an INVITE whose user part is "boom".
    let inv = format!(
        "INVITE {boom} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKboom;rport\r\nFrom: <sip:a@{me}>;tag=x\r\nTo: <{boom}>\r\nCall-ID: err-2\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        me = uac.addr()
    );
    // The first INVITE (to bob) gets its 404.
    assert_eq!(
        uac.recv_status(&[100], WAIT).expect("a reply in time").0,
        404
    );
    uac.send(ev.udp, &inv).unwrap();
    let (code, reply) = uac.recv_status(&[100], WAIT).expect("a reply in time");
    assert_eq!(code, 500, "{reply}");
    let line = ev.wait_log("script error");
    assert!(line.contains("router.lua:5:"), "file and line in {line}");
    uac.invite(ev.udp, "err-3", "err3").unwrap();
    assert_eq!(
        uac.recv_status(&[100], WAIT).expect("a reply in time").0,
        404
    );
}

/// SIGTERM: suspended transactions get a final reply, event clients are
/// closed (connection-closed runs), the process exits 0.
#[test]
fn sigterm_ends_suspended_calls_and_closes_clients() {
    let mut ev = Evapi::start(&config(""), DEFAULT_SCRIPT);
    let mut client = EventClient::connect(ev.events);
    ev.wait_log("event client 0 connected");
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    uac.invite(ev.udp, "term-1", "term1").unwrap();
    let _ = recv_json(&mut client); // suspended; nobody answers
    let status = ev.terminate();
    assert!(status.success(), "{status}");
    let (code, reply) = uac.recv_status(&[100], WAIT).expect("a reply in time");
    assert!(code >= 400, "a final reply at shutdown: {reply}");
    assert!(client.recv().is_none(), "client closed");
    assert_eq!(ev.log_count("event client 0 disconnected"), 1);
}

/// `evapi check` on good and bad files.
#[test]
fn check_reports_errors_with_file_and_line() {
    let dir = TempDir::new("check");
    let cfg = dir.write("evapi.toml", &config(""));
    dir.write("router.lua", ERROR_SCRIPT);
    let (code, out, err) = evapi(&["check", "-c", cfg.to_str().unwrap()], "", &dir.0);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok:"), "{out}");

    // A syntax error: file and line.
    dir.write(
        "router.lua",
        "function ksr_request_route()\n  if then\nend\n",
    );
    let (code, _, err) = evapi(&["check", "-c", cfg.to_str().unwrap()], "", &dir.0);
    assert_ne!(code, 0);
    assert!(err.contains("router.lua:2:"), "{err}");

    // The event_callback is missing.
    dir.write("router.lua", "function ksr_request_route() end\n");
    let (code, _, err) = evapi(&["check", "-c", cfg.to_str().unwrap()], "", &dir.0);
    assert_ne!(code, 0);
    assert!(err.contains("ksr_evapi_event() is not defined"), "{err}");

    // An unknown key: its name and line.
    let bad = dir.write("bad.toml", "[evapi]\nworkers = 1\nmax_client = 4\n");
    let (code, _, err) = evapi(&["check", "-c", bad.to_str().unwrap()], "", &dir.0);
    assert_ne!(code, 0);
    assert!(
        err.contains("bad.toml:3: [evapi] max_client: unknown key"),
        "{err}"
    );

    // A bad value names the parameter and the value.
    let bad = dir.write("bad2.toml", "[evapi]\nbind_addr = \"[::1:8448\"\n");
    let (code, _, err) = evapi(&["check", "-c", bad.to_str().unwrap()], "", &dir.0);
    assert_ne!(code, 0);
    assert!(
        err.contains("bind_addr") && err.contains("[::1:8448"),
        "{err}"
    );

    // A listen entry that cannot be used, found without binding anything.
    let bad = dir.write(
        "bad3.toml",
        "[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"sctp:127.0.0.1:5060\"]\n",
    );
    let (code, _, err) = evapi(&["check", "-c", bad.to_str().unwrap()], "", &dir.0);
    assert_ne!(code, 0);
    assert!(
        err.contains("bad3.toml") && err.contains("sctp:127.0.0.1:5060"),
        "{err}"
    );

    // The embedded default is fine.
    let (code, out, err) = evapi(&["check"], "", &dir.0);
    assert_eq!(code, 0, "{out}{err}");
}

const ECHO_SCRIPT: &str = r#"
function ksr_request_route() end
function ksr_evapi_event(evname)
    if evname == "evapi:message-received" then
        KSR.evapi.relay("echo:" .. KSR.pv.get("$evapi(msg)"))
    elseif evname == "evapi:connection-new" then
        KSR.evapi.relay("welcome " .. KSR.pv.get("$evapi(conidx)"))
    end
end
"#;

/// `evapi check` and `evapi run` load a config the same way, so each
/// mistake gets the same message from both, naming section, key and value,
/// and `run` starts nothing.
#[test]
fn check_and_run_say_the_same_for_the_same_mistake() {
    let dir = TempDir::new("same-error");
    dir.write("router.lua", "function ksr_request_route() end\n");
    for (section, expect) in [
        (
            "[sip]\nchildren = 5000",
            "[sip] children = 5000: must be 1 to 1024",
        ),
        (
            "[tm]\nfr_timer = 0",
            "[tm] fr_timer = 0: must be at least 1",
        ),
        ("[evapi]\nmax_clients = 0", "[evapi] max_clients = 0"),
        (
            "[script]\nfile = \"\"",
            "[script] file = \"\": must name the Lua script",
        ),
        (
            "[log]\nlevel = \"loud\"",
            "bad.toml:2: [log] level = \"loud\": must be one of \"error\"",
        ),
    ] {
        let cfg = dir.write("bad.toml", &format!("{section}\n"));
        let cfg = cfg.display().to_string();
        let (code, _, check_err) = evapi(&["check", "-c", &cfg], "", &dir.0);
        assert_ne!(code, 0, "{section}");
        let (code, _, run_err) = evapi(&["run", "-c", &cfg], "", &dir.0);
        assert_ne!(code, 0, "{section}");
        assert!(check_err.contains(expect), "check: {check_err}");
        assert_eq!(check_err, run_err, "{section}");
    }
}

/// `evapi check` reads the script's source: what this program does not
/// provide is a warning (exit 0), a guarded use a note; both on stdout,
/// one `file:line: level: ...` a line.
#[test]
fn check_warns_about_what_the_script_uses_and_we_lack() {
    let dir = TempDir::new("lint");
    let cfg = dir.write("evapi.toml", &config(""));
    dir.write(
        "router.lua",
        "function ksr_request_route()\n\
         \x20 KSR.nathelper.fix_nated_register()\n\
         \x20 KSR.tm.t_on_failure(\"nowhere\")\n\
         \x20 if not KSR.auth then return 1 end\n\
         \x20 KSR.auth.auth_challenge(\"example.com\", 0)\n\
         end\n\
         function ksr_evapi_event(e) end\n",
    );
    let (code, out, err) = evapi(&["check", "-c", cfg.to_str().unwrap()], "", &dir.0);
    assert_eq!(code, 0, "{out}{err}");
    let script = dir.0.join("router.lua").display().to_string();
    for want in [
        format!("{script}:2: warning: KSR.nathelper.fix_nated_register: module nathelper is absent here"),
        format!("{script}:3: warning: KSR.tm.t_on_failure: the script defines no function nowhere()"),
        format!("{script}:5: note: KSR.auth.auth_challenge: module auth is absent here, as in a Kamailio built without it; the script tests for it at line 4"),
    ] {
        assert!(out.lines().any(|l| l.starts_with(&want)), "{want}\n{out}");
    }
    assert!(out.contains("ok: config"), "{out}");
}

/// `localhost` is accepted in every address setting, and any other name
/// refused in the same words; a host started on localhost answers there.
#[test]
fn localhost_the_same_in_every_address_setting() {
    let dir = TempDir::new("localhost");
    dir.write(
        "router.lua",
        "function ksr_request_route() KSR.sl.send_reply(404, \"Not Here\") end\n",
    );
    let good = dir.write(
        "good.toml",
        "[sip]\nlisten = [\"udp:localhost:0\"]\n[evapi]\nbind_addr = \"localhost:0\"\n",
    );
    let (code, out, err) = evapi(&["check", "-c", good.to_str().unwrap()], "", &dir.0);
    assert_eq!(code, 0, "{out}{err}");
    let bad = dir.write(
        "bad.toml",
        "[sip]\nlisten = [\"udp:sip.example.com:5060\"]\n[evapi]\nbind_addr = \"events.example.com:8448\"\n",
    );
    let (code, _, err) = evapi(&["check", "-c", bad.to_str().unwrap()], "", &dir.0);
    assert_ne!(code, 0);
    let words = "the host must be an IP address or localhost";
    assert!(
        err.contains(&format!(
            "bad.toml:2: [sip] listen = \"udp:sip.example.com:5060\": {words}"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "bad.toml:4: [evapi] bind_addr = \"events.example.com:8448\": {words}"
        )),
        "{err}"
    );

    let cfg = config("").replace("udp:127.0.0.1:0", "udp:localhost:0");
    let ev = Evapi::start(&cfg, "function ksr_request_route() KSR.sl.send_reply(404, \"Not Here\") end\nfunction ksr_evapi_event(e) end\n");
    assert!(ev.udp.ip().is_loopback(), "{}", ev.udp);
    let mut uac = Agent::udp(&std::net::SocketAddr::new(ev.udp.ip(), 0).to_string()).unwrap();
    uac.invite(ev.udp, "on-localhost", "onlocalhost").unwrap();
    assert_eq!(
        uac.recv_status(&[100], WAIT).expect("a reply in time").0,
        404
    );
}

/// Every mistake of a config file in one run, each with its line, from
/// `check` and `run` alike.
#[test]
fn every_config_mistake_in_one_run() {
    let dir = TempDir::new("all-errors");
    dir.write("router.lua", "function ksr_request_route() end\n");
    let cfg = dir.write(
        "bad.toml",
        "[sip]\nchildren = \"four\"\n[evapi]\nmax_client = 4\nworkers = 5000\n[tm]\nt1 = true\n",
    );
    let cfg = cfg.display().to_string();
    let (code, out, check_err) = evapi(&["check", "-c", &cfg], "", &dir.0);
    assert_ne!(code, 0);
    assert!(out.is_empty(), "{out}");
    for want in [
        "bad.toml:2: [sip] children = \"four\": must be a whole number",
        "bad.toml:4: [evapi] max_client: unknown key (did you mean max_clients?)",
        "bad.toml:5: [evapi] workers = 5000",
        "bad.toml:7: [tm] t1 = true: must be a whole number, 0 or more, not true or false",
    ] {
        assert!(check_err.contains(want), "{want}\n{check_err}");
    }
    let (code, _, run_err) = evapi(&["run", "-c", &cfg], "", &dir.0);
    assert_ne!(code, 0);
    assert_eq!(check_err, run_err);
}

/// `evapi tap`: prints what it receives, one message a line, and sends
/// each stdin line as a message.
#[test]
fn tap_round_trip() {
    let ev = Evapi::start(&config(""), ECHO_SCRIPT);
    let dir = TempDir::new("tap");
    let addr = ev.events.to_string();
    let (code, out, err) = evapi(
        &["tap", &addr, "--count", "3", "--send", "first"],
        "second line\n",
        &dir.0,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "welcome 0\necho:first\necho:second line\n", "{err}");
    assert!(err.contains("connected to"), "{err}");
    // A bad address is a clear error.
    let (code, _, err) = evapi(&["tap", "127.0.0.1:1"], "", &dir.0);
    assert_ne!(code, 0);
    assert!(
        err.contains("cannot connect") && err.contains("127.0.0.1:1"),
        "{err}"
    );
}

/// `evapi tap --token` (or EVAPI_TOKEN) authenticates to a socket with
/// `auth_token`; without it the tap is cut and never becomes a client.
#[test]
fn tap_with_auth_token() {
    let ev = Evapi::start(
        &config("auth_token = \"letmein\"\nauth_timeout_ms = 500"),
        ECHO_SCRIPT,
    );
    let dir = TempDir::new("tap-token");
    let addr = ev.events.to_string();
    let (code, out, err) = evapi(
        &[
            "tap", &addr, "--count", "2", "--token", "letmein", "--send", "hi",
        ],
        "",
        &dir.0,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "welcome 0\necho:hi\n", "{err}");
    // Without the token: cut at the timeout, with nothing received.
    let (code, out, err) = evapi(&["tap", &addr, "--count", "1"], "", &dir.0);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "");
    assert!(err.contains("closed the connection"), "{err}");
    ev.wait_log("not authenticated");
    assert_eq!(
        ev.log_count("client connected"),
        1,
        "only the tap with the token"
    );
}

/// `--help` and `--version` work; a wrong command is refused.
#[test]
fn help_and_version() {
    let dir = TempDir::new("help");
    let (code, out, _) = evapi(&["--help"], "", &dir.0);
    assert_eq!(code, 0);
    for word in ["run", "check", "tap", "defaults"] {
        assert!(out.contains(word), "{out}");
    }
    let (code, out, _) = evapi(&["--version"], "", &dir.0);
    assert_eq!(code, 0);
    assert!(out.starts_with("evapi "), "{out}");
    let (code, _, err) = evapi(&["frobnicate"], "", &dir.0);
    assert_ne!(code, 0);
    assert!(err.contains("frobnicate"), "{err}");
    let (code, out, _) = evapi(&["defaults", "--script"], "", &dir.0);
    assert_eq!(code, 0);
    assert!(out.contains("function ksr_request_route()"));
}

/// `evapi defaults --config` alone is not a whole setup (it names
/// router.lua): it says so on stderr; `--write DIR` writes both files, which
/// pass `evapi check`, and never overwrites.
#[test]
fn defaults_write_gives_a_config_that_checks() {
    let dir = TempDir::new("defaults-write");
    let (code, out, err) = evapi(&["defaults", "--config"], "", &dir.0);
    assert_eq!(code, 0);
    assert!(
        out.contains("[evapi]") && !out.contains("ksr_request_route"),
        "{out}"
    );
    assert!(
        err.contains("router.lua") && err.contains("--write"),
        "{err}"
    );
    let (code, out, err) = evapi(&["defaults", "--write", "mine"], "", &dir.0);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("evapi.toml") && out.contains("router.lua"),
        "{out}"
    );
    let (code, out, err) = evapi(&["check", "-c", "mine/evapi.toml"], "", &dir.0);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok:"), "{out}");
    let (code, _, err) = evapi(&["defaults", "--write", "mine"], "", &dir.0);
    assert_ne!(code, 0);
    assert!(
        err.contains("exists") && err.contains("evapi.toml"),
        "{err}"
    );
}

const REPLY_ROUTE_SCRIPT: &str = r#"
function ksr_request_route()
    if KSR.is_INVITE() then
        KSR.pv.sets("$du", "sip:" .. KSR.pv.get("$hdr(X-Uas)"))
        KSR.hdr.remove("X-Uas")
        KSR.tm.t_relay()
    end
end
function ksr_reply_route()
    KSR.info("reply " .. KSR.pv.get("$rs") .. " " .. KSR.pv.get("$rr") .. " for " .. KSR.pv.get("$rm"))
    if KSR.pv.get("$rs") == 180 then
        KSR.x.drop()
    end
end
function ksr_evapi_event(evname) end
"#;

/// ksr_reply_route sees every reply of a relayed request; KSR.x.drop()
/// there drops it.
#[test]
fn reply_route_sees_and_drops_replies() {
    let ev = Evapi::start(&config(""), REPLY_ROUTE_SCRIPT);
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    let mut uas = Agent::udp("127.0.0.1:0").unwrap();
    let invite = format!(
        "INVITE sip:bob@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKrr1;rport\r\nFrom: <sip:a@{me}>;tag=rr\r\nTo: <sip:bob@{to}>\r\nCall-ID: rr-1\r\nCSeq: 1 INVITE\r\nX-Uas: {uas}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        to = ev.udp,
        me = uac.addr(),
        uas = uas.addr()
    );
    uac.send(ev.udp, &invite).unwrap();
    let (fwd, from) = uas.recv_text(WAIT).expect("a SIP message in time");
    assert_eq!(header(&fwd, "X-Uas"), None, "removed by the script: {fwd}");
    let vias: Vec<&str> = fwd.lines().filter(|l| l.starts_with("Via:")).collect();
    for (code, reason) in [(180, "Ringing"), (486, "Busy Here")] {
        uas.send(
            from,
            format!(
                "SIP/2.0 {code} {reason}\r\n{}\r\nFrom: {}\r\nTo: {};tag=uas\r\nCall-ID: rr-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
                vias.join("\r\n"),
                header(&fwd, "From").unwrap(),
                header(&fwd, "To").unwrap()
            ),
        ).unwrap();
    }
    // The 180 was dropped: the first reply after 100 is the 486.
    let (code, reply) = uac.recv_status(&[100], WAIT).expect("a reply in time");
    assert_eq!(code, 486, "{reply}");
    ev.wait_log("reply 180 Ringing for INVITE");
    ev.wait_log("reply 486 Busy Here for INVITE");
}

/// `evapi run` with TLS and client certificates (paths relative to the
/// config file), and `evapi tap --tls` with and without a certificate.
#[test]
fn tls_event_socket_and_tap() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = TempDir::new("tls");
    std::fs::create_dir_all(dir.0.join("tls")).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    dir.write("tls/ca.pem", &ca.pem());
    for (name, san) in [("server", "127.0.0.1"), ("client", "client.test")] {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![san.to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        dir.write(&format!("tls/{name}.pem"), &cert.pem());
        dir.write(&format!("tls/{name}.key"), &key.serialize_pem());
    }
    let cfg = config(
        "tls_cert = \"tls/server.pem\"\ntls_key = \"tls/server.key\"\ntls_client_ca = \"tls/ca.pem\"\ntls_handshake_timeout_ms = 500",
    );
    let cfg_path = dir.write("evapi.toml", &cfg);
    dir.write("router.lua", ECHO_SCRIPT);
    let (code, out, err) = evapi(&["check", "-c", cfg_path.to_str().unwrap()], "", &dir.0);
    assert_eq!(code, 0, "{out}{err}");

    let ev = Evapi::start(
        &cfg.replace("tls/", &format!("{}/tls/", dir.0.display())),
        ECHO_SCRIPT,
    );
    let addr = ev.events.to_string();
    let tls = |f: &str| dir.0.join("tls").join(f).display().to_string();
    let (code, out, err) = evapi(
        &[
            "tap",
            &addr,
            "--tls",
            "--ca",
            &tls("ca.pem"),
            "--cert",
            &tls("client.pem"),
            "--key",
            &tls("client.key"),
            "--count",
            "2",
            "--send",
            "over tls",
        ],
        "",
        &dir.0,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "welcome 0\necho:over tls\n", "{err}");
    assert!(err.contains("with TLS"), "{err}");
    // Without a client certificate the server refuses it.
    let (code, out, err) = evapi(
        &[
            "tap",
            &addr,
            "--tls",
            "--ca",
            &tls("ca.pem"),
            "--count",
            "1",
        ],
        "",
        &dir.0,
    );
    assert!(code != 0 || out.is_empty(), "{out}{err}");
    ev.wait_log("TLS handshake failed");
    // Plain tap on a TLS socket: nothing usable arrives.
    let (_, out, _) = evapi(&["tap", &addr, "--count", "1"], "", &dir.0);
    assert_eq!(out, "");
}

/// `evapi tap --raw` against a server with netstring_format = 0.
#[test]
fn tap_raw_mode() {
    // Echo only (no welcome): one reply, so one read, so one raw message.
    let echo_only = ECHO_SCRIPT.replace(
        "KSR.evapi.relay(\"welcome \" .. KSR.pv.get(\"$evapi(conidx)\"))",
        "",
    );
    assert!(!echo_only.contains("welcome"));
    let ev = Evapi::start(&config("netstring_format = 0"), &echo_only);
    let dir = TempDir::new("tap-raw");
    let addr = ev.events.to_string();
    let (code, out, err) = evapi(
        &["tap", &addr, "--raw", "--count", "1", "--send", "raw hello"],
        "",
        &dir.0,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "echo:raw hello\n");
}
