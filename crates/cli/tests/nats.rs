//! Scale-out over NATS with the real binary, a real nats-server on
//! loopback and the default script: two nodes, workers in one queue group
//! (Rust, async-nats), SIP calls against both nodes. Every call is answered
//! by whichever worker took its event and resumed on the node that holds
//! it; nobody listening is a 503 at once; the server stopped and restarted
//! mid-load, a worker process killed, a node process killed (SIGKILL).
//!
//! Without nats-server these tests print SKIPPED, unless
//! `EVAPI_REQUIRE_NATS=1` (set by .ci/run): then they fail.

mod common;

use common::nats_worker::{Worker, WorkerProcess};
use common::*;
use futures_util::StreamExt;
use nats::testing::{NatsServer, TestDir, TestOperator, TestPki};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A node running the default script with `[nats]` on.
fn node(server: &NatsServer, name: &str) -> Evapi {
    let cfg = format!(
        "{}\n[nats]\nservers = [\"{}\"]\nnode = \"{name}\"\n",
        config("workers = 2"),
        server.url()
    );
    let ev = Evapi::start(&cfg, DEFAULT_SCRIPT);
    ev.wait_log("NATS connected");
    ev
}

/// A caller: sends INVITEs, collects the final reply of each (ACKed).
struct Caller {
    uac: Agent,
    invites: HashMap<String, (String, SocketAddr)>,
    finals: HashMap<String, (u16, String, SocketAddr)>,
}

impl Caller {
    fn new() -> Caller {
        Caller {
            uac: Agent::udp("127.0.0.1:0").unwrap(),
            invites: HashMap::new(),
            finals: HashMap::new(),
        }
    }

    fn call(&mut self, to: SocketAddr, call_id: &str) {
        let inv = self.uac.invite(to, call_id, call_id).unwrap();
        self.invites.insert(call_id.to_string(), (inv, to));
    }

    /// Wait until every call sent has its final reply (bounded by
    /// `limit`); returns how many are still without one.
    fn collect(&mut self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        while self.finals.len() < self.invites.len() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            let Some((m, from)) = self.uac.recv(left) else {
                break;
            };
            let (Some(code), Ok(cid)) = (m.status(), m.call_id()) else {
                continue;
            };
            if code < 200 {
                continue;
            }
            let text = sip::testing::text(&m);
            let cid = String::from_utf8_lossy(cid).into_owned();
            if let Some((inv, to)) = self.invites.get(&cid) {
                self.uac.ack_for(*to, inv, &text).unwrap();
            }
            let reason = String::from_utf8_lossy(m.reason().unwrap_or_default()).into_owned();
            self.finals.entry(cid).or_insert((code, reason, from));
        }
        self.invites.len() - self.finals.len()
    }

    fn final_of(&self, call_id: &str) -> &(u16, String, SocketAddr) {
        self.finals
            .get(call_id)
            .unwrap_or_else(|| panic!("no final reply for {call_id}"))
    }
}

/// A TCP event client beside NATS gets the call "tcp"'s event as before
/// and answers it with `code`: the caller gets that final reply.
fn tcp_client_answers(node: &Evapi, caller: &mut Caller, code: u16) {
    let mut client = EventClient::connect(node.events);
    node.wait_log("event client 0 connected");
    caller.call(node.udp, "tcp");
    let event = recv_json(&mut client);
    assert_eq!(event["callid"], "tcp");
    client.send(&format!(
        r#"{{"tindex":{},"tlabel":{},"code":{code},"reason":"From TCP"}}"#,
        event["tindex"], event["tlabel"]
    ));
    assert_eq!(caller.collect(WAIT), 0);
    assert_eq!(caller.final_of("tcp").0, code);
}

fn nats_status(ev: &Evapi) -> serde_json::Value {
    let url = format!("http://{}", ev.http.expect("http on"));
    let (code, out, err) = ctl(&["--json", "--url", &url, "nats.status"], &[]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn two_nodes_two_workers_every_call_answered_on_its_node() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (a, b) = (node(&server, "a"), node(&server, "b"));
    let w1 = Worker::start(&server.url(), "w1");
    let w2 = Worker::start(&server.url(), "w2");
    let mut caller = Caller::new();
    const CALLS: usize = 60;
    for i in 0..CALLS {
        caller.call(a.udp, &format!("to-a-{i}"));
        caller.call(b.udp, &format!("to-b-{i}"));
    }
    assert_eq!(caller.collect(WAIT), 0, "every call has its final reply");
    for i in 0..CALLS {
        for (n, ev) in [("a", &a), ("b", &b)] {
            let (code, reason, from) = caller.final_of(&format!("to-{n}-{i}"));
            assert_eq!(*code, 486, "{reason}");
            assert!(reason == "Busy w1" || reason == "Busy w2", "{reason}");
            assert_eq!(*from, ev.udp, "the reply comes from the node called");
        }
    }
    // Each event went to one worker of the group; both took a share.
    assert_eq!(w1.answered() + w2.answered(), 2 * CALLS);
    assert!(w1.answered() > 0 && w2.answered() > 0);
    for ev in [&a, &b] {
        assert_eq!(ev.log_count("no suspended call"), 0, "no answer strayed");
        let s = nats_status(ev);
        assert_eq!(s["connected"], 1, "{s}");
        assert_eq!(s["replies"], CALLS as u64, "{s}");
        assert_eq!(s["no_responders"], 0, "{s}");
    }
}

#[test]
fn nobody_listening_is_503_at_once_and_tcp_clients_still_work() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let a = node(&server, "a");
    let mut caller = Caller::new();
    // No worker, no TCP client: NATS says no responders, the default
    // script answers 503 (not 408 after fr_inv_timer).
    caller.call(a.udp, "nobody");
    assert_eq!(caller.collect(WAIT), 0);
    let (code, reason, _) = caller.final_of("nobody");
    assert_eq!((*code, reason.as_str()), (503, "No Event Client"));
    assert_eq!(nats_status(&a)["no_responders"], 1);

    // A TCP client beside NATS gets the event as before and decides; its
    // send is not watched, so no no-responders either.
    tcp_client_answers(&a, &mut caller, 480);
    assert_eq!(nats_status(&a)["no_responders"], 1);
}

#[test]
fn nats_server_stopped_and_restarted_mid_load() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    let a = node(&server, "a");
    let w1 = Worker::start(&server.url(), "w1");
    let mut caller = Caller::new();
    for i in 0..20 {
        caller.call(a.udp, &format!("before-{i}"));
    }
    assert_eq!(caller.collect(WAIT), 0);
    assert!((0..20).all(|i| caller.final_of(&format!("before-{i}")).0 == 486));

    // Down: the node's sends fail at once; with no TCP client either, the
    // default script answers 503 at once; a TCP client still works.
    server.stop();
    a.wait_log("NATS disconnected");
    for i in 0..10 {
        caller.call(a.udp, &format!("down-{i}"));
    }
    assert_eq!(caller.collect(WAIT), 0);
    for i in 0..10 {
        let (code, reason, _) = caller.final_of(&format!("down-{i}"));
        assert_eq!((*code, reason.as_str()), (503, "No Event Client"));
    }
    let mut client = EventClient::connect(a.events);
    a.wait_log("event client 0 connected");
    caller.call(a.udp, "down-tcp");
    let event = recv_json(&mut client);
    client.send(&format!(
        r#"{{"tindex":{},"tlabel":{},"code":480,"reason":"From TCP"}}"#,
        event["tindex"], event["tlabel"]
    ));
    assert_eq!(caller.collect(WAIT), 0);
    assert_eq!(caller.final_of("down-tcp").0, 480);
    // The relay of down-tcp went to the TCP client and failed over NATS:
    // counted.
    let s = nats_status(&a);
    assert_eq!(s["connected"], 0, "{s}");
    assert!(s["send_disconnected"].as_u64().unwrap() >= 1, "{s}");
    drop(client);
    a.wait_log("event client 0 disconnected");

    // Back: node and worker reconnect by themselves; calls are answered
    // by the worker again (the first ones may still find the worker's
    // subscription not yet re-made: 503, then retried).
    server.restart();
    a.wait_log_count("NATS connected", 2);
    let deadline = Instant::now() + WAIT;
    let mut n = 0;
    loop {
        let cid = format!("after-{n}");
        caller.call(a.udp, &cid);
        assert_eq!(caller.collect(WAIT), 0);
        if caller.final_of(&cid).0 == 486 {
            break;
        }
        assert!(Instant::now() < deadline, "no worker answer after restart");
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..20 {
        caller.call(a.udp, &format!("resumed-{i}"));
    }
    assert_eq!(caller.collect(WAIT), 0);
    assert!((0..20).all(|i| caller.final_of(&format!("resumed-{i}")).0 == 486));
    assert!(w1.answered() >= 41);
}

/// Not a test of its own: the body of the worker processes of
/// [`a_worker_process_killed_mid_load_the_other_takes_new_events`] (this
/// binary started again with `EVAPI_TEST_WORKER_URL` set); without it,
/// it returns at once.
#[test]
#[ignore = "a worker process, started by the worker-killed test"]
fn worker_process() {
    common::nats_worker::serve_as_process();
}

/// The number of client connections the server has now, from its
/// monitoring endpoint (`/connz`) at `monitor`.
fn server_connections(monitor: u16) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", monitor)).expect("the monitor port");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /connz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    v["num_connections"].as_u64().expect("num_connections")
}

#[test]
fn a_worker_process_killed_mid_load_the_other_takes_new_events() {
    let monitor = sip::testing::free_port();
    let Some(server) = NatsServer::start_with(&format!("http: \"127.0.0.1:{monitor}\"\n")) else {
        return;
    };
    let a = node(&server, "a");
    // w1, a process of its own, hangs: the events it takes stay
    // unanswered; w2 answers its share.
    let mut w1 = WorkerProcess::start("worker_process", &server.url(), "w1", true);
    let w2 = Worker::start(&server.url(), "w2");
    let mut caller = Caller::new();
    const CALLS: usize = 20;
    for i in 0..CALLS {
        caller.call(a.udp, &format!("inflight-{i}"));
    }
    // Every event has reached one of the two (and w1 holds some) before
    // w1 is killed.
    let deadline = Instant::now() + WAIT;
    loop {
        w1.update();
        if w1.taken() + w2.answered() >= CALLS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every event reached a worker"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        w1.taken() > 0,
        "the queue group gave w1 none of {CALLS} events"
    );
    let held = w1.taken();
    assert_eq!(w2.answered(), CALLS - held);
    assert_eq!(server_connections(monitor), 3, "the node, w1 and w2");
    // SIGKILL, by its PID: the connection just goes.
    let pid = w1.pid();
    assert_eq!(w1.kill(), Some(9), "worker process {pid} ended by SIGKILL");
    // The server has noticed (its connection closed): the node and w2
    // are left.
    let deadline = Instant::now() + WAIT;
    while server_connections(monitor) != 2 {
        assert!(Instant::now() < deadline, "the server still has w1");
        std::thread::sleep(Duration::from_millis(10));
    }
    // New events all go to w2 (the server drops w1's subscription when
    // its connection goes; none of these may reach the dead worker).
    for i in 0..CALLS {
        caller.call(a.udp, &format!("new-{i}"));
    }
    // Every call has a final reply: the ones w1 held by the timeout
    // (fr_inv_timer, 5 s in the tests' config: 408), the others from w2.
    assert_eq!(caller.collect(WAIT), 0, "every call ended");
    let mut timed_out = 0;
    for i in 0..CALLS {
        let (code, reason, _) = caller.final_of(&format!("new-{i}"));
        assert_eq!((*code, reason.as_str()), (486, "Busy w2"));
        let (code, reason, _) = caller.final_of(&format!("inflight-{i}"));
        match (*code, reason.as_str()) {
            (408, _) => timed_out += 1,
            (486, "Busy w2") => {}
            other => panic!("inflight-{i}: {other:?}"),
        }
    }
    assert_eq!(timed_out, held, "the calls w1 held end by the timeout");
    assert_eq!(w1.answered(), 0);
    assert_eq!(w2.answered(), 2 * CALLS - held);
    assert_eq!(a.log_count("no suspended call"), 0, "no answer strayed");
}

#[test]
fn a_node_killed_leaves_the_others_unaffected() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let mut a = node(&server, "a");
    let b = node(&server, "b");
    let w1 = Worker::start(&server.url(), "w1");
    let mut caller = Caller::new();
    for i in 0..10 {
        caller.call(a.udp, &format!("a-{i}"));
        caller.call(b.udp, &format!("b-{i}"));
    }
    assert_eq!(caller.collect(WAIT), 0);
    // Kill a (SIGKILL): its calls end with it; b goes on.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &a.pid().to_string()])
        .status();
    let deadline = Instant::now() + WAIT;
    while a.alive() {
        assert!(Instant::now() < deadline, "node a did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 0..30 {
        caller.call(b.udp, &format!("b-after-{i}"));
    }
    assert_eq!(caller.collect(WAIT), 0);
    for i in 0..30 {
        assert_eq!(caller.final_of(&format!("b-after-{i}")).0, 486);
    }
    assert_eq!(w1.answered(), 50);
}

#[test]
fn bad_nats_values_are_named_with_their_line() {
    let dir = TempDir::new("nats-config");
    dir.write("router.lua", DEFAULT_SCRIPT);
    let cfg = dir.write(
        "evapi.toml",
        "[nats]\nservers = [\"http://127.0.0.1:4222\"]\nnode = \"a.b\"\n\n[[nats.subscribe]]\nsubject = \"a..b\"\n",
    );
    let (code, out, err) = evapi(&["check", "-c", &cfg.display().to_string()], "", &dir.0);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains(":2: [nats] servers = \"http://127.0.0.1:4222\": scheme http:// is not nats:// or tls://"),
        "{err}"
    );
    // A good section passes `evapi check` without a server running.
    let cfg = dir.write(
        "evapi.toml",
        "[nats]\nservers = [\"nats://127.0.0.1:4222\"]\nnode = \"sip1\"\n\n[[nats.subscribe]]\nsubject = \"control.>\"\nqueue = \"ctl\"\n",
    );
    let (code, out, err) = evapi(&["check", "-c", &cfg.display().to_string()], "", &dir.0);
    assert_eq!(code, 0, "{out}{err}");
}

/// `[[nats.subscribe]]` runs the event callback as `nats:<subject>` with
/// `$natsData`; `KSR.nats.publish` answers; `KSR.nats.connected` is 1.
#[test]
fn subscriptions_reach_the_script_and_it_publishes() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let cfg = format!(
        "{}\n[nats]\nservers = [\"{}\"]\nnode = \"a\"\n\n[[nats.subscribe]]\nsubject = \"control.>\"\nqueue = \"nodes\"\n",
        config(""),
        server.url()
    );
    let script = r#"
        function ksr_request_route() KSR.sl.send_reply(404, "Not Here") end
        function ksr_evapi_event(evname)
            if evname == "nats:control.>" then
                local r = KSR.nats.publish("app.ack", evname .. " " .. KSR.pv.get("$natsData")
                    .. " " .. KSR.nats.connected(), "app.reply")
                KSR.info("published " .. r)
            end
        end
    "#;
    let ev = Evapi::start(&cfg, script);
    ev.wait_log("NATS connected");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = async_nats::connect(server.url()).await.unwrap();
        let mut acks = c.subscribe("app.ack").await.unwrap();
        c.flush().await.unwrap();
        c.publish("control.reload", "now".into()).await.unwrap();
        let m = tokio::time::timeout(WAIT, acks.next())
            .await
            .expect("an ack in time")
            .unwrap();
        assert_eq!(&m.payload[..], b"nats:control.> now 1");
        assert_eq!(m.reply.as_deref(), Some("app.reply"));
    });
    ev.wait_log("published 1");
    assert_eq!(nats_status(&ev)["messages"], 1);
}

/// A node the NATS server refuses (a wrong password, a wrong token, a CA
/// that did not sign the server's certificate) keeps running: it logs the
/// server and the cause, `nats.status` shows them, `KSR.nats.connected()`
/// is -1 (the default script answers 503 at once when no TCP client is
/// there either), and a TCP event client gets the calls and answers them
/// as before.
#[test]
fn a_refused_node_names_the_server_and_the_cause_and_keeps_serving_tcp_clients() {
    let pki = TestPki::new();
    let Some(auth) = NatsServer::start_with(r#"authorization { user: "node", password: "right" }"#)
    else {
        return;
    };
    let token = NatsServer::start_with(r#"authorization { token: "right-token" }"#).unwrap();
    let tls = NatsServer::start_with(&pki.server_config(false)).unwrap();
    let untrusted_ca = format!("tls_ca = {:?}", pki.path("other-ca.pem"));
    for (url, keys, cause) in [
        (
            auth.url(),
            "user = \"node\"\npassword = \"wrong\"",
            "authorization violation",
        ),
        (token.url(), "token = \"wrong\"", "authorization violation"),
        (
            tls.tls_url(),
            untrusted_ca.as_str(),
            "invalid peer certificate: UnknownIssuer",
        ),
    ] {
        let cfg = format!(
            "{}\n[nats]\nservers = [\"{url}\"]\nnode = \"a\"\n{keys}\n",
            config("")
        );
        let ev = Evapi::start(&cfg, DEFAULT_SCRIPT);
        let line = ev.wait_log("NATS cannot connect to");
        assert!(line.contains(&url) && line.contains(cause), "{line}");
        assert!(!line.contains("wrong"), "no secret in the log: {line}");
        let s = nats_status(&ev);
        assert_eq!(s["connected"], 0, "{s}");
        let last = s["last_error"].as_str().unwrap();
        assert!(
            last.starts_with(&format!("{url}: ")) && last.contains(cause),
            "{s}"
        );

        let mut caller = Caller::new();
        caller.call(ev.udp, "no-one");
        assert_eq!(caller.collect(WAIT), 0);
        let (code, reason, _) = caller.final_of("no-one");
        assert_eq!((*code, reason.as_str()), (503, "No Event Client"));

        tcp_client_answers(&ev, &mut caller, 486);
        assert_eq!(nats_status(&ev)["connected"], 0);
    }
}

/// A node with a creds file (operator mode) over TLS with a client
/// certificate: its calls are answered by a worker that has credentials
/// of its own, and `/metrics` counts the answers.
#[test]
fn creds_file_and_tls_with_a_client_certificate() {
    let (operator, pki) = (TestOperator::new(), TestPki::new());
    let Some(server) = NatsServer::start_with(&format!(
        "{}{}",
        operator.server_config(),
        pki.server_config(true)
    )) else {
        return;
    };
    let dir = TestDir::new("nats-creds");
    let creds = dir.write("node.creds", &operator.user_creds("node"));
    let cfg = format!(
        "{}\n[nats]\nservers = [\"{}\"]\nnode = \"a\"\ncreds_file = {:?}\ntls_ca = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
        config(""),
        server.tls_url(),
        creds,
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let ev = Evapi::start(&cfg, DEFAULT_SCRIPT);
    ev.wait_log("NATS connected");
    let opts = async_nats::ConnectOptions::with_credentials(&operator.user_creds("worker"))
        .unwrap()
        .add_root_certificates(pki.path("ca.pem"))
        .add_client_certificate(pki.path("client.pem"), pki.path("client.key"))
        .require_tls(true);
    let w1 = Worker::start_with(&server.tls_url(), "w1", opts);
    let mut caller = Caller::new();
    for i in 0..10 {
        caller.call(ev.udp, &format!("secure-{i}"));
    }
    assert_eq!(caller.collect(WAIT), 0);
    for i in 0..10 {
        let (code, reason, _) = caller.final_of(&format!("secure-{i}"));
        assert_eq!((*code, reason.as_str()), (486, "Busy w1"));
    }
    assert_eq!(w1.answered(), 10);
    let s = nats_status(&ev);
    assert_eq!(
        (s["connected"].as_i64(), s["replies"].as_u64()),
        (Some(1), Some(10)),
        "{s}"
    );
    assert_eq!(s["last_error"], serde_json::Value::Null, "{s}");
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("http://{}/metrics", ev.http.unwrap())])
        .output()
        .expect("curl runs");
    let metrics = String::from_utf8_lossy(&out.stdout);
    for line in [
        "evapi_nats_connected 1\n",
        "evapi_nats_replies_received_total 10\n",
        "evapi_nats_published_total 10\n",
        "evapi_nats_no_responders_total 0\n",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }
}
