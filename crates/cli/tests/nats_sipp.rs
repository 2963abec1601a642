//! Scale-out over NATS under SIPp: a real nats-server on loopback, two
//! `evapi run` nodes with the default script, two workers in one queue
//! group (Rust, async-nats) and one SIPp caller against each node, at the
//! same time. Every call is answered by whichever worker took its event
//! and resumed on the node that holds it: SIPp counts every call
//! successful (the worker's 486) and none failed, both workers answered
//! some, each node resumed exactly its own calls, and every event's reply
//! subject named the node that sent it.
//!
//! Without nats-server or SIPp this prints SKIPPED, unless
//! `EVAPI_REQUIRE_NATS=1` / `EVAPI_REQUIRE_SIPP=1` (set by .ci/run): then
//! it fails.

mod common;

use common::nats_worker::Worker;
use common::sipp::*;
use common::*;
use nats::testing::NatsServer;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

/// Calls per node (one SIPp per node).
const CALLS: u64 = 500;
/// Calls per second of each SIPp.
const RATE: u32 = 200;

/// A node with the default script and `[nats]` on, info-level logs.
fn node(server: &NatsServer, name: &str) -> Evapi {
    let cfg = format!(
        "{}\n[nats]\nservers = [\"{}\"]\nnode = \"{name}\"\n",
        config("workers = 2").replace("level = \"debug\"", "level = \"info\""),
        server.url()
    );
    let ev = Evapi::start(&cfg, DEFAULT_SCRIPT);
    ev.wait_log("NATS connected");
    ev
}

fn nats_status(ev: &Evapi) -> serde_json::Value {
    let url = format!("http://{}", ev.http.expect("http on"));
    let (code, out, err) = ctl(&["--json", "--url", &url, "nats.status"], &[]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// SIPp calling `ev` `CALLS` times at `RATE`/s (uac_refused.xml: INVITE,
/// 486, ACK), bounded by its own `-timeout` and by `Proc::finish`.
fn caller(ev: &Evapi, dir: &TempDir, tag: &str) -> Proc {
    spawn(
        "sipp uac",
        Command::new("sipp")
            .stdout(std::fs::File::create(dir.0.join(format!("{tag}.out"))).unwrap())
            .current_dir(&dir.0)
            .args(["-sf", &scenario("uac_refused.xml"), "-i", "127.0.0.1"])
            .args(["-p", &free_udp_port().to_string()])
            .args([
                "-r",
                &RATE.to_string(),
                "-m",
                &CALLS.to_string(),
                "-nostdin",
            ])
            .args(["-timeout", "60s", "-timeout_error", "-trace_stat"])
            .args(["-stf", &format!("{tag}.csv")])
            .arg(ev.udp.to_string()),
    )
}

#[test]
fn sipp_against_two_nodes_two_workers_every_call_resumed_on_its_node() {
    if !sip::testing::sipp_available() {
        return;
    }
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (a, b) = (node(&server, "a"), node(&server, "b"));
    let w1 = Worker::start(&server.url(), "w1");
    let w2 = Worker::start(&server.url(), "w2");
    let dir = TempDir::new("nats-sipp");
    let (sa, sb) = (caller(&a, &dir, "a"), caller(&b, &dir, "b"));
    let (code_a, err_a) = sa.finish(Duration::from_secs(90));
    let (code_b, err_b) = sb.finish(Duration::from_secs(90));
    let read = |f: &str| std::fs::read_to_string(dir.0.join(f)).unwrap_or_default();
    for (tag, code, err, ev) in [("a", code_a, err_a, &a), ("b", code_b, err_b, &b)] {
        let stats = read(&format!("{tag}.csv"));
        let problems: Vec<String> = ev
            .logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(20)
            .cloned()
            .collect();
        assert_eq!(
            code,
            Some(0),
            "SIPp against node {tag} failed calls:\n{err}\n{}\n{stats}\nnode {tag} said: {problems:#?}",
            read(&format!("{tag}.out"))
        );
        assert_eq!(last_stat(&stats, "SuccessfulCall(C)"), CALLS, "{stats}");
        assert_eq!(last_stat(&stats, "FailedCall(C)"), 0, "{stats}");
        // Each node resumed exactly its own calls: one answer per call
        // reached it over NATS, none was for a call it did not hold.
        let s = nats_status(ev);
        assert_eq!(s["replies"], CALLS, "node {tag}: {s}");
        assert_eq!(s["no_responders"], 0, "node {tag}: {s}");
        assert_eq!(ev.log_count("no suspended call"), 0, "node {tag}");
    }
    // Whichever worker took an event: both took a share, together all.
    let (n1, n2) = (w1.answered(), w2.answered());
    assert_eq!((n1 + n2) as u64, 2 * CALLS, "w1 {n1} + w2 {n2}");
    assert!(
        n1 > 0 && n2 > 0,
        "each worker answered some: w1 {n1}, w2 {n2}"
    );
    // Each event's reply subject named the node that was called.
    let mut seen: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for w in [&w1, &w2] {
        for (subject, ports) in w.seen.lock().unwrap().iter() {
            seen.entry(subject.clone())
                .or_default()
                .extend(ports.iter().copied());
        }
    }
    let expect = BTreeMap::from([
        ("evapi.node.a".to_string(), BTreeSet::from([a.udp.port()])),
        ("evapi.node.b".to_string(), BTreeSet::from([b.udp.port()])),
    ]);
    assert_eq!(seen, expect, "reply subject -> ports of the nodes called");
}
