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

/// The I/O runtime's threads (named `evapi-io`) of a running server.
fn io_threads(ev: &Evapi) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", ev.pid())).unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "evapi-io")
        .count()
}

/// `[sip] io_threads` sets the I/O runtime's threads; 0, the default, is
/// one per four CPUs and at least one.
#[test]
fn io_threads_sets_the_runtime_threads() {
    let script = "function ksr_request_route() end\nfunction ksr_evapi_event() end\n";
    let three = config("").replace("children = 2", "children = 2\nio_threads = 3");
    let mut ev = Evapi::start(&three, script);
    assert_eq!(io_threads(&ev), 3);
    ev.terminate();
    let cpus = std::thread::available_parallelism().unwrap().get();
    let mut ev = Evapi::start(&config(""), script);
    assert_eq!(io_threads(&ev), (cpus / 4).max(1));
    ev.terminate();
}
