//! The shipped examples, each run by the real binary with its own script
//! (and, where it has one, its own Python client), on ephemeral ports.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};

fn example(path: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/");
    std::fs::read_to_string(format!("{root}{path}")).unwrap()
}

fn example_path(path: &str) -> String {
    format!("{}/../../examples/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// A Python client of an example, killed on drop.
struct Py(Child);

impl Py {
    fn start(script: &str, args: &[&str]) -> Py {
        Py(Command::new("python3")
            .arg(example_path(script))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the example client"))
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config_with_callback(callback: &str) -> String {
    config("").replace(
        "event_callback = \"ksr_evapi_event\"",
        &format!("event_callback = \"{callback}\""),
    )
}

/// examples/default with its Python client answering 486.
#[test]
fn default_example_with_its_client() {
    let ev = Evapi::start(&config(""), &example("default/router.lua"));
    let _client = Py::start(
        "default/client.py",
        &["--addr", &ev.events.to_string(), "--code", "486"],
    );
    ev.wait_log("event client 0 connected");
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    uac.invite(ev.udp, "ex-default", "exdefault").unwrap();
    let (code, reply) = uac.recv_status(&[100], WAIT).expect("a reply in time");
    assert_eq!(code, 486, "{reply}");
}

/// examples/kamailio-style: a Kamailio-style KEMI script runs unchanged.
#[test]
fn kamailio_style_script_runs_unchanged() {
    let ev = Evapi::start(&config(""), &example("kamailio-style/router.lua"));
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    // No call-control client yet: 503 at once.
    uac.invite(ev.udp, "ks-0", "ks0").unwrap();
    assert_eq!(
        uac.recv_status(&[100], WAIT).expect("a reply in time").0,
        503
    );
    // REGISTER is refused by is_method_in("RMSNP").
    uac.send(
        ev.udp,
        format!(
            "REGISTER sip:{0} SIP/2.0\r\nVia: SIP/2.0/UDP {1};branch=z9hG4bKksreg\r\nFrom: <sip:a@{0}>;tag=1\r\nTo: <sip:a@{0}>\r\nCall-ID: ks-reg\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            ev.udp, uac.addr()
        ),
    ).unwrap();
    assert_eq!(uac.recv_status(&[], WAIT).expect("a reply in time").0, 501);

    let mut ctl = EventClient::connect(ev.events);
    ev.wait_log("call control client 0 connected");
    // Reject with a code.
    uac.invite(ev.udp, "ks-1", "ks1").unwrap();
    let ev1 = recv_json(&mut ctl);
    assert_eq!(ev1["callid"], "ks-1");
    assert_eq!(ev1["caller"], "alice");
    ctl.send(&format!(
        r#"{{"tindex":{},"tlabel":{},"action":"reject","code":486}}"#,
        ev1["tindex"], ev1["tlabel"]
    ));
    let (code, reply) = uac.recv_status(&[100], WAIT).expect("a reply in time");
    assert_eq!(
        (code, reply.lines().next().unwrap()),
        (486, "SIP/2.0 486 Rejected By Call Control")
    );

    // Relay to a UAS that refuses: the failure route answers 480.
    let mut uas = Agent::udp("127.0.0.1:0").unwrap();
    uac.invite(ev.udp, "ks-2", "ks2").unwrap();
    let ev2 = recv_json(&mut ctl);
    ctl.send(&format!(
        r#"{{"tindex":{},"tlabel":{},"action":"relay","dst":"sip:{}"}}"#,
        ev2["tindex"],
        ev2["tlabel"],
        uas.addr()
    ));
    let (fwd, from) = uas.recv_text(WAIT).expect("a SIP message in time");
    assert_eq!(
        header(&fwd, "X-CallCtl").as_deref(),
        Some("relayed"),
        "{fwd}"
    );
    assert_eq!(header(&fwd, "Max-Forwards").as_deref(), Some("69"), "{fwd}");
    let vias: Vec<&str> = fwd.lines().filter(|l| l.starts_with("Via:")).collect();
    uas.send(
        from,
        format!(
            "SIP/2.0 486 Busy Here\r\n{}\r\nFrom: {}\r\nTo: {};tag=uas2\r\nCall-ID: ks-2\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
            vias.join("\r\n"),
            header(&fwd, "From").unwrap(),
            header(&fwd, "To").unwrap()
        ),
    ).unwrap();
    // The hop-by-hop ACK for the 486 reaches the UAS.
    let (ack, _) = uas.recv_text(WAIT).expect("a SIP message in time");
    assert!(ack.starts_with("ACK "), "{ack}");
    let (code, reply) = uac.recv_status(&[100], WAIT).expect("a reply in time");
    assert_eq!(code, 480, "{reply}");
    ev.wait_log("relayed call failed with 486");
}

/// examples/cgrates-auth with its mock rating engine.
#[test]
fn cgrates_style_authorisation() {
    let ev = Evapi::start(
        &config_with_callback("ksr_cgr_event"),
        &example("cgrates-auth/router.lua"),
    );
    let mut uas = Agent::udp("127.0.0.1:0").unwrap();
    let dst = format!("sip:{}", uas.addr());
    let _cgr = Py::start(
        "cgrates-auth/mock_cgrates.py",
        &["--addr", &ev.events.to_string(), "--dst", &dst],
    );
    ev.wait_log("client connected");
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    let me = uac.addr();
    let call = |user: &str, cid: &str| {
        format!(
            "INVITE sip:1002@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{cid};rport\r\nFrom: <sip:{user}@{me}>;tag={cid}\r\nTo: <sip:1002@{to}>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            to = ev.udp,
        )
    };
    uac.send(ev.udp, call("broke", "cgr-1")).unwrap();
    let (code, reply) = uac.recv_status(&[100], WAIT).expect("a reply in time");
    assert_eq!(code, 403, "{reply}");
    assert!(
        reply.starts_with("SIP/2.0 403 CGR_ERROR INSUFFICIENT_CREDIT_FUNDS"),
        "{reply}"
    );
    uac.send(ev.udp, call("zero", "cgr-2")).unwrap();
    assert_eq!(
        uac.recv_status(&[100], WAIT).expect("a reply in time").0,
        403
    );
    uac.send(ev.udp, call("alice", "cgr-3")).unwrap();
    let (fwd, _) = uas.recv_text(WAIT).expect("a SIP message in time");
    assert_eq!(
        header(&fwd, "X-Max-Usage").as_deref(),
        Some("3600"),
        "{fwd}"
    );
    assert_eq!(header(&fwd, "Call-ID").as_deref(), Some("cgr-3"));
}

/// examples/tags: subscribers by domain get calls in turn; "monitor" gets
/// copies; a domain nobody serves is refused without suspending.
#[test]
fn tag_based_routing() {
    let ev = Evapi::start(&config(""), &example("tags/router.lua"));
    let mut s1 = EventClient::connect(ev.events);
    let mut s2 = EventClient::connect(ev.events);
    let mut mon = EventClient::connect(ev.events);
    s1.send(r#"{"subscribe":"example.com"}"#);
    s2.send(r#"{"subscribe":"example.com"}"#);
    mon.send(r#"{"subscribe":"monitor"}"#);
    for n in 0..3 {
        ev.wait_log(&format!("event client {n} subscribed"));
    }
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    let me = uac.addr();
    let call = |cid: &str, domain: &str| {
        format!(
            "INVITE sip:bob@{domain} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{cid};rport\r\nFrom: <sip:alice@{me}>;tag={cid}\r\nTo: <sip:bob@{domain}>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        )
    };
    uac.send(ev.udp, call("tag-0", "nobody.example")).unwrap();
    let (code, reply) = uac.recv_status(&[100], WAIT).expect("a reply in time");
    assert_eq!(code, 480, "{reply}");
    let mut got = [0, 0];
    for i in 0..4 {
        let cid = format!("tag-{}", i + 1);
        uac.send(ev.udp, call(&cid, "example.com")).unwrap();
        assert_eq!(recv_json(&mut mon)["callid"], cid.as_str());
        // Round robin: one of the two subscribers, in turn.
        let (who, event) = if i % 2 == 0 {
            (0, recv_json(&mut s1))
        } else {
            (1, recv_json(&mut s2))
        };
        assert_eq!(event["callid"], cid.as_str());
        got[who] += 1;
        let client = if who == 0 { &mut s1 } else { &mut s2 };
        client.send(&format!(
            r#"{{"tindex":{},"tlabel":{},"code":404,"reason":"No"}}"#,
            event["tindex"], event["tlabel"]
        ));
        assert_eq!(
            uac.recv_status(&[100], WAIT).expect("a reply in time").0,
            404
        );
    }
    assert_eq!(got, [2, 2]);
}

/// Every shipped example's config and script pass `evapi check`.
#[test]
fn every_example_passes_check() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let dir = TempDir::new("examples-check");
    let mut n = 0;
    for entry in std::fs::read_dir(root).unwrap() {
        let cfg = entry.unwrap().path().join("evapi.toml");
        if !cfg.exists() {
            continue;
        }
        let (code, out, err) = evapi(&["check", "-c", cfg.to_str().unwrap()], "", &dir.0);
        assert_eq!(code, 0, "{}: {out}{err}", cfg.display());
        n += 1;
    }
    assert!(n >= 4, "found {n} example configs");
}
