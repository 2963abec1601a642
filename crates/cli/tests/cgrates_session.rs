//! examples/cgrates-session: CGRateS's Kamailio session flow, ported to
//! KEMI Lua, run by the real binary with the example's evapi.toml and
//! router.lua unchanged except their ports, against the example's Python
//! mock engine (examples/cgrates-session/mock_engine.py, started here with
//! python3 and stopped by its PID) and SIPp caller/callee scenarios.
//!
//! - Answered calls: CGR_AUTH_REQUEST (tr_index, tr_label, reply_route)
//!   per call, then exactly one CGR_CALL_START (h_entry, h_id, OriginID...)
//!   and one CGR_CALL_END (Usage) per call, and no dialog left.
//! - MaxUsage from the engine is the dialog's lifetime: both SIPp sides
//!   (`uac_wait_bye.xml`, `uas_rr.xml`) receive a BYE and answer it.
//! - CGR_SESSION_DISCONNECT from the engine (typed on its stdin, or
//!   automatic after a call's start) ends the call with dlg.end_dlg: both
//!   sides get a BYE, CGR_CALL_END follows; unknown ids are logged.
//! - No engine: 503 "Charging controller unreachable"; an engine error
//!   503 "CGR_ERROR"; MaxUsage 0 403 "Insufficient credit".
//! - REGISTER goes through the engine (simpleauth) to the location table,
//!   and a call to the registered user goes to its contact.
//! - `evapi check` passes the example without warnings.
//!
//! SIPp is required as in `sipp_dialog.rs` (skip note without it, unless
//! `EVAPI_REQUIRE_SIPP=1`); curl for the RPC calls, python3 for the
//! engine (both installed by .ci/run).

mod common;

use common::sipp::*;
use common::*;
use serde_json::Value;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn example_path(file: &str) -> String {
    format!(
        "{}/../../examples/cgrates-session/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn example(file: &str) -> String {
    std::fs::read_to_string(example_path(file)).unwrap()
}

/// `from` replaced by `to` in `text`, which must hold it.
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the example no longer has {from:?}");
    text.replace(from, to)
}

/// The example, its ports made ephemeral, its gateway the SIPp callee on
/// `gateway_port`. Nothing else changed.
fn start(gateway_port: u16) -> Evapi {
    let mut cfg = example("evapi.toml");
    for port in ["5060", "8448", "9060"] {
        cfg = replaced(&cfg, &format!("127.0.0.1:{port}"), "127.0.0.1:0");
    }
    let script = replaced(
        &example("router.lua"),
        "\"127.0.0.1:5080\"",
        &format!("\"127.0.0.1:{gateway_port}\""),
    );
    Evapi::start(&cfg, &script)
}

/// The mock engine (python3), killed by its PID on drop.
struct Engine {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Every event it received, as printed (one JSON object a line).
    events: Arc<Mutex<Vec<Value>>>,
    /// What it logged on stderr (the messages it sent).
    log: Arc<Mutex<Vec<String>>>,
}

impl Engine {
    fn start(ev: &Evapi, args: &[&str]) -> Engine {
        let mut child = Command::new("python3")
            .arg(example_path("mock_engine.py"))
            .arg("--addr")
            .arg(ev.events.to_string())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs the mock engine");
        let events = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("engine printed non-JSON ({e}): {line}"));
                sink.lock().unwrap().push(v);
            }
        });
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let engine = Engine {
            stdin: child.stdin.take(),
            child,
            events,
            log,
        };
        // Connected, and the script's connection-new has run: it set
        // $sht(cgrconn=>cgr), which the RPC reads.
        wait_until("the engine is connected", || engine_seen(ev).is_some());
        engine
    }

    /// A command line on its stdin.
    fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("engine stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The events received named `name`.
    fn received(&self, name: &str) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == name)
            .cloned()
            .collect()
    }

    /// Wait (bounded) until `n` events named `name` arrived; those.
    fn wait_received(&self, name: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.received(name);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the engine got {} {name} events, not {n}; stderr: {:?}",
                got.len(),
                self.log
                    .lock()
                    .unwrap()
                    .iter()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `ok` (bounded: 30 s).
fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The engine address the script keeps in $sht(cgrconn=>cgr), if any.
fn engine_seen(ev: &Evapi) -> Option<String> {
    let r = rpc(
        ev.http.expect("the HTTP listener is on"),
        "htable.get",
        serde_json::json!(["cgrconn", "cgr"]),
    );
    r["result"]["item"]["value"].as_str().map(str::to_string)
}

/// `dlg.list`, waiting (bounded) until it holds `n` dialogs.
fn wait_dialogs(ev: &Evapi, n: usize) -> Vec<Value> {
    let mut list = Vec::new();
    wait_until(&format!("{n} dialogs listed"), || {
        list = rpc(
            ev.http.expect("the HTTP listener is on"),
            "dlg.list",
            serde_json::json!([]),
        )["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        list.len() == n
    });
    list
}

/// SIPp with `scenario_file` on `port`, `calls` calls (as a caller: at
/// `rate` per second, to `service`), giving up after `timeout_s`.
fn sipp(
    dir: &TempDir,
    out: &str,
    scenario_file: &str,
    port: u16,
    target: SocketAddr,
    calls: u32,
    caller: Option<(u32, &str)>,
) -> Proc {
    let mut args: Vec<String> = vec![
        "-sf".into(),
        scenario(scenario_file),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-m".into(),
        calls.to_string(),
        "-nostdin".into(),
        "-timeout".into(),
        "90s".into(),
        "-timeout_error".into(),
        "-trace_err".into(),
    ];
    if let Some((rate, service)) = caller {
        args.extend(["-r".into(), rate.to_string(), "-s".into(), service.into()]);
    }
    args.push(target.to_string());
    spawn(
        "sipp",
        Command::new("sipp")
            .current_dir(&dir.0)
            .stdout(std::fs::File::create(dir.0.join(out)).unwrap())
            .args(&args),
    )
}

/// Both SIPp sides ended with exit code 0 (every call as scripted: for
/// `uac_wait_bye.xml`, a BYE received and answered).
fn both_passed(dir: &TempDir, uac: Proc, uas: Proc) {
    let (uac_code, uac_err) = uac.finish(Duration::from_secs(100));
    let (uas_code, uas_err) = uas.finish(Duration::from_secs(30));
    let errors = sipp_errors(dir);
    assert_eq!(uac_code, Some(0), "SIPp caller failed: {uac_err}\n{errors}");
    assert_eq!(uas_code, Some(0), "SIPp callee failed: {uas_err}\n{errors}");
}

/// A string field holding a decimal number.
fn number(ev: &Value, field: &str) -> i64 {
    ev[field]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{field} is not a number in a string: {ev}"))
}

/// Every answered call: one start with its dialog's ids, one end with the
/// same OriginID and a Usage.
fn one_start_one_end_per_call(engine: &Engine, calls: usize, destination: &str) {
    let starts = engine.wait_received("CGR_CALL_START", calls);
    let ends = engine.wait_received("CGR_CALL_END", calls);
    let starts: Vec<_> = starts
        .into_iter()
        .filter(|e| e["Destination"] == destination)
        .collect();
    let ends: Vec<_> = ends
        .into_iter()
        .filter(|e| e["Destination"] == destination)
        .collect();
    assert_eq!(starts.len(), calls, "one CGR_CALL_START per call");
    assert_eq!(ends.len(), calls, "one CGR_CALL_END per call");
    let mut ids = HashSet::new();
    let mut origins = HashSet::new();
    for s in &starts {
        let pair = (number(s, "h_entry"), number(s, "h_id"));
        assert!((0..4096).contains(&pair.0), "{s}");
        assert!(ids.insert(pair), "h_entry/h_id twice: {s}");
        assert!(
            origins.insert(s["OriginID"].as_str().unwrap().to_string()),
            "{s}"
        );
        assert_eq!(s["Account"], "sipp", "{s}");
        assert_eq!(s["Tenant"], "cgrates.org", "{s}");
        assert_eq!(
            s["cgr_flags"], "*attributes;*accounts;*resources;*thresholds",
            "{s}"
        );
        number(s, "AnswerTime");
        number(s, "SetupTime");
    }
    let mut ended = HashSet::new();
    for e in &ends {
        let origin = e["OriginID"].as_str().unwrap().to_string();
        assert!(origins.contains(&origin), "an end for no start: {e}");
        assert!(ended.insert(origin), "two ends for one call: {e}");
        assert!(number(e, "Usage") >= 0, "{e}");
        assert!(number(e, "AnswerTime") > 0, "{e}");
        assert_eq!(e["cgr_flags"], "*accounts;*resources", "{e}");
        assert_eq!(e["Account"], "sipp", "{e}");
    }
}

#[test]
fn answered_calls_give_one_start_and_one_end() {
    if !sip::testing::sipp_available() {
        return;
    }
    const CALLS: u32 = 200;
    let (uas_port, uac_port) = (free_udp_port(), free_udp_port());
    let ev = start(uas_port);
    let engine = Engine::start(&ev, &[]);
    let dir = TempDir::new("cgr-answered");
    let uas = sipp(&dir, "uas", "uas_rr.xml", uas_port, ev.udp, CALLS, None);
    let uac = sipp(
        &dir,
        "uac",
        "uac_rr.xml",
        uac_port,
        ev.udp,
        CALLS,
        Some((50, "bob")),
    );
    both_passed(&dir, uac, uas);

    let auths = engine.received("CGR_AUTH_REQUEST");
    assert_eq!(auths.len(), CALLS as usize);
    for a in &auths {
        number(a, "tr_index");
        number(a, "tr_label");
        assert_eq!(a["reply_route"], "CGR_SESSIONAUTH_REPLY", "{a}");
        assert_eq!(
            (&a["Account"], &a["Destination"]),
            (&Value::from("sipp"), &Value::from("bob")),
            "{a}"
        );
        assert_eq!(
            a["cgr_flags"],
            "*attributes;*accounts;*routes;*resources;*thresholds"
        );
        number(a, "SetupTime");
    }
    one_start_one_end_per_call(&engine, CALLS as usize, "bob");
    wait_dialogs(&ev, 0);
    // Nothing more came after the ends.
    assert_eq!(engine.received("CGR_CALL_START").len(), CALLS as usize);
    assert_eq!(engine.received("CGR_CALL_END").len(), CALLS as usize);
}

#[test]
fn max_usage_ends_the_call_with_a_bye_to_both_sides() {
    if !sip::testing::sipp_available() {
        return;
    }
    const CALLS: u32 = 5;
    let (uas_port, uac_port) = (free_udp_port(), free_udp_port());
    let ev = start(uas_port);
    let engine = Engine::start(&ev, &["--usage", "short=1"]);
    let dir = TempDir::new("cgr-maxusage");
    let uas = sipp(&dir, "uas", "uas_rr.xml", uas_port, ev.udp, CALLS, None);
    // This caller never hangs up: only the dialog's lifetime ends it.
    let uac = sipp(
        &dir,
        "uac",
        "uac_wait_bye.xml",
        uac_port,
        ev.udp,
        CALLS,
        Some((5, "short")),
    );
    both_passed(&dir, uac, uas);
    one_start_one_end_per_call(&engine, CALLS as usize, "short");
    wait_dialogs(&ev, 0);
}

#[test]
fn an_engine_disconnect_ends_the_call_with_a_bye_to_both_sides() {
    if !sip::testing::sipp_available() {
        return;
    }
    const CALLS: u32 = 5;
    let (uas_port, uac_port) = (free_udp_port(), free_udp_port());
    let ev = start(uas_port);
    let mut engine = Engine::start(&ev, &["--disconnect", "cutoff=0.2"]);
    let dir = TempDir::new("cgr-disconnect");

    // Unknown ids: the RPC's error, logged, naming them.
    engine.command("disconnect 4095 99999 no such call");
    ev.wait_log("CGR_SESSION_DISCONNECT 4095:99999: ");

    // Disconnects typed on the engine's stdin, with the ids it got in
    // CGR_CALL_START.
    let uas = sipp(&dir, "uas", "uas_rr.xml", uas_port, ev.udp, CALLS, None);
    let uac = sipp(
        &dir,
        "uac",
        "uac_wait_bye.xml",
        uac_port,
        ev.udp,
        CALLS,
        Some((5, "bob")),
    );
    let starts = engine.wait_received("CGR_CALL_START", CALLS as usize);
    wait_dialogs(&ev, CALLS as usize);
    for s in &starts {
        let line = format!(
            "disconnect {} {} credit exhausted",
            s["h_entry"].as_str().unwrap(),
            s["h_id"].as_str().unwrap()
        );
        engine.command(&line);
    }
    both_passed(&dir, uac, uas);
    one_start_one_end_per_call(&engine, CALLS as usize, "bob");
    wait_dialogs(&ev, 0);

    // The engine's own timer (--disconnect cutoff=0.2 s after the start).
    let uas = sipp(&dir, "uas2", "uas_rr.xml", uas_port, ev.udp, CALLS, None);
    let uac = sipp(
        &dir,
        "uac2",
        "uac_wait_bye.xml",
        uac_port,
        ev.udp,
        CALLS,
        Some((5, "cutoff")),
    );
    both_passed(&dir, uac, uas);
    one_start_one_end_per_call(&engine, CALLS as usize, "cutoff");
    wait_dialogs(&ev, 0);
}

/// An INVITE from `user` to `dest` through the example, from a fresh
/// agent: the final reply's status line.
fn call(ev: &Evapi, user: &str, dest: &str, cid: &str) -> String {
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    let me = uac.addr();
    uac.send(
        ev.udp,
        format!(
            "INVITE sip:{dest}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{cid};rport\r\nFrom: <sip:{user}@{me}>;tag={cid}\r\nTo: <sip:{dest}@{to}>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\nContact: <sip:{user}@{me}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            to = ev.udp,
        ),
    )
    .unwrap();
    let (_, reply) = uac.recv_status(&[100], WAIT).expect("a reply in time");
    reply.lines().next().unwrap().to_string()
}

#[test]
fn refused_without_engine_on_error_and_without_credit() {
    let gateway = free_udp_port();
    let ev = start(gateway);
    assert_eq!(
        call(&ev, "alice", "bob", "cgr-none-1"),
        "SIP/2.0 503 Charging controller unreachable"
    );
    let mut engine = Engine::start(
        &ev,
        &[
            "--error",
            "broke=INSUFFICIENT_CREDIT_FUNDS",
            "--usage",
            "zero=0",
        ],
    );
    assert_eq!(
        call(&ev, "broke", "bob", "cgr-err-1"),
        "SIP/2.0 503 CGR_ERROR"
    );
    ev.wait_log("CGR_AUTH_ERROR: INSUFFICIENT_CREDIT_FUNDS");
    assert_eq!(
        call(&ev, "alice", "zero", "cgr-zero-1"),
        "SIP/2.0 403 Insufficient credit"
    );
    // Authorised calls were asked about, nothing started.
    assert_eq!(engine.wait_received("CGR_AUTH_REQUEST", 2).len(), 2);
    assert!(engine.received("CGR_CALL_START").is_empty());
    // The engine leaves: connection-closed clears it, and calls are
    // refused at once again.
    engine.command("quit");
    wait_until("the engine is gone", || engine_seen(&ev).is_none());
    assert_eq!(
        call(&ev, "alice", "bob", "cgr-none-2"),
        "SIP/2.0 503 Charging controller unreachable"
    );
}

#[test]
fn register_goes_through_the_engine_and_calls_reach_the_contact() {
    let ev = start(free_udp_port());
    let engine = Engine::start(&ev, &["--error", "mallory=ACCOUNT_DISABLED"]);
    let mut phone = Agent::udp("127.0.0.1:0").unwrap();
    let me = phone.addr();
    let register = |user: &str, cid: &str| {
        format!(
            "REGISTER sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{cid};rport\r\nFrom: <sip:{user}@{to}>;tag={cid}\r\nTo: <sip:{user}@{to}>\r\nCall-ID: {cid}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@{me}>\r\nExpires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            to = ev.udp,
        )
    };
    phone
        .send(ev.udp, register("mallory", "cgr-reg-1"))
        .unwrap();
    let (code, reply) = phone.recv_status(&[100], WAIT).expect("a reply in time");
    assert_eq!(
        (code, reply.lines().next().unwrap()),
        (503, "SIP/2.0 503 CGR_ERROR")
    );
    phone.send(ev.udp, register("carol", "cgr-reg-2")).unwrap();
    let (code, reply) = phone.recv_status(&[100], WAIT).expect("a reply in time");
    assert_eq!(code, 200, "{reply}");
    let auths = engine.wait_received("CGR_AUTH_REQUEST", 2);
    for a in &auths {
        assert_eq!(a["cgr_context"], "simpleauth", "{a}");
        assert_eq!(a["reply_route"], "CGR_SIMPLEAUTH_REPLY", "{a}");
    }
    // A call to carol goes to her contact, not to the gateway.
    let caller = Agent::udp("127.0.0.1:0").unwrap();
    let from = caller.addr();
    caller
        .send(
            ev.udp,
            format!(
                "INVITE sip:carol@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKcgrinv;rport\r\nFrom: <sip:alice@{from}>;tag=cgrinv\r\nTo: <sip:carol@{to}>\r\nCall-ID: cgr-inv-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{from}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                to = ev.udp,
            ),
        )
        .unwrap();
    let (invite, _) = phone.recv_text(WAIT).expect("the INVITE at the contact");
    assert!(
        invite.starts_with(&format!("INVITE sip:carol@{me} ")),
        "{invite}"
    );
    assert_eq!(header(&invite, "Call-ID").as_deref(), Some("cgr-inv-1"));
}

#[test]
fn the_example_passes_check_without_warnings() {
    let dir = TempDir::new("cgr-check");
    let (code, out, err) = evapi(&["check", "-c", &example_path("evapi.toml")], "", &dir.0);
    assert_eq!(code, 0, "{out}{err}");
    let all = format!("{out}{err}").to_lowercase();
    assert!(!all.contains("warn"), "{out}{err}");
}
