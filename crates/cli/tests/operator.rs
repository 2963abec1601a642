//! An operator at work on a running `evapi run`, through `evapi ctl` over
//! the admin HTTP listener: the call whose event client went away is found
//! with `tm.list` and answered by hand with `tm.reply`; the event clients
//! are listed with `evapi.list` and one is closed with `evapi.close`; a
//! value put with `htable.sets` steers the script; `/metrics` counts it
//! all and passes `promtool check metrics`.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

/// INVITEs are suspended and their ids sent to the event clients (nobody
/// answers: the operator does). OPTIONS are answered with the value of
/// `$sht(ops=>greeting)`, so the operator can steer the script. Every
/// closed event client is counted in `$shv(closed)`.
const SCRIPT: &str = r#"
function ksr_request_route()
    if KSR.is_OPTIONS() then
        local g = KSR.pv.get("$sht(ops=>greeting)") or "none"
        KSR.sl.send_reply(200, "greeting " .. g)
        return
    end
    if KSR.is_INVITE() then
        KSR.tm.t_newtran()
        KSR.evapi.async_relay(KSR.pv.get("$T(id_index)") .. ":" .. KSR.pv.get("$T(id_label)"))
        return
    end
    if not KSR.is_ACK() then KSR.sl.send_reply(404, "Not Here") end
end
function ksr_evapi_event(ev)
    if ev == "evapi:connection-closed" then
        KSR.pv.seti("$shv(closed)", (KSR.pv.get("$shv(closed)") or 0) + 1)
    end
end
"#;

fn url(ev: &Evapi) -> String {
    format!("http://{}/RPC", ev.http.expect("the HTTP listener is on"))
}

/// `evapi ctl --json METHOD ARGS` against `ev`: the parsed result; the
/// call must succeed.
fn ctl_json(ev: &Evapi, args: &[&str]) -> Value {
    let u = url(ev);
    let mut all = vec!["--url", u.as_str(), "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = ctl(&all, &[]);
    assert_eq!(code, 0, "evapi ctl {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `GET /metrics` with curl.
fn curl_metrics(ev: &Evapi) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-f"])
        .arg(format!("http://{}/metrics", ev.http.unwrap()))
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_suspended_call_is_answered_by_hand() {
    let config = config("").replace("[sip]", "[htable]\nhtable = [\"ops=>size=8;\"]\n\n[sip]");
    let mut ev = Evapi::start(&config, SCRIPT);
    let mut client = EventClient::connect(ev.events);
    ev.wait_log("client connected");
    let mut caller = Agent::udp("127.0.0.1:0").unwrap();
    caller.invite(ev.udp, "by-hand-1", "byhand1").unwrap();
    assert_eq!(caller.recv_status(&[], WAIT).unwrap().0, 100);
    let id = client.recv().expect("the suspended call's ids");

    // tm.list shows it, suspended, with the id the event carried.
    let list = ctl_json(&ev, &["tm.list", "suspended"]);
    let calls = list.as_array().expect("a list");
    assert_eq!(calls.len(), 1, "{list}");
    assert_eq!(calls[0]["id"], Value::String(id.clone()), "{list}");
    assert_eq!(calls[0]["callid"], "by-hand-1");
    assert_eq!(calls[0]["method"], "INVITE");

    // A reply with a line break in its reason is refused; nothing is sent.
    let u = url(&ev);
    let (code, _, err) = ctl(
        &["--url", &u, "tm.reply", "486", "Busy\r\nX-Evil: 1", &id, ""],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("-32602"), "{err}");
    // A code out of range too.
    let (code, _, err) = ctl(&["--url", &u, "tm.reply", "99", "Low", &id, ""], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("99"), "{err}");

    // The operator's answer, with a header and a body.
    ctl_json(
        &ev,
        &[
            "tm.reply",
            "486",
            "Busy by hand",
            &id,
            "op-tag-1",
            "X-Operator: alice\r\nContent-Type: text/plain\r\n",
            "call later",
        ],
    );
    let (code, reply) = caller.recv_status(&[100], WAIT).expect("the final reply");
    assert_eq!(code, 486, "{reply}");
    assert!(reply.starts_with("SIP/2.0 486 Busy by hand\r\n"), "{reply}");
    assert!(reply.contains("X-Operator: alice\r\n"), "{reply}");
    assert!(reply.contains(";tag=op-tag-1"), "{reply}");
    assert!(reply.ends_with("\r\n\r\ncall later"), "{reply}");
    assert!(!reply.contains("X-Evil"), "{reply}");

    // The same id again: that transaction is answered already.
    let (code, _, err) = ctl(&["--url", &u, "tm.reply", "500", "Again", &id, ""], &[]);
    assert_ne!(code, 0);
    assert!(err.contains(&id), "{err}");
    assert!(ctl_json(&ev, &["tm.list", "suspended"])
        .as_array()
        .unwrap()
        .is_empty());

    // The metrics served over HTTP count that call, and promtool accepts
    // the text.
    let metrics = curl_metrics(&ev);
    for line in [
        "evapi_sip_requests_received_total{method=\"INVITE\"} 1\n",
        "evapi_sip_replies_sent_total{class=\"4xx\",origin=\"transaction\"} 1\n",
        "evapi_sip_suspensions_total 1\n",
        "evapi_sip_suspended 0\n",
        "evapi_event_relays_total{kind=\"relay\"} 1\n",
        "evapi_event_clients 1\n",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }
    promtool::check(&metrics);

    // htable.sets steers the script.
    let mut ua = Agent::udp("127.0.0.1:0").unwrap();
    let options = |ua: &mut Agent, n: u32| {
        let me = ua.addr();
        ua.send(
            ev.udp,
            format!(
                "OPTIONS sip:ping@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKops{n};rport\r\n\
                 From: <sip:a@{me}>;tag=f{n}\r\nTo: <sip:ping@{to}>\r\nCall-ID: ops-options-{n}\r\n\
                 CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                to = ev.udp
            ),
        )
        .unwrap();
        let (_, reply) = ua.recv_status(&[], WAIT).expect("a reply to OPTIONS");
        reply.lines().next().unwrap().to_string()
    };
    assert_eq!(options(&mut ua, 1), "SIP/2.0 200 greeting none");
    ctl_json(&ev, &["htable.sets", "ops", "greeting", "hello"]);
    assert_eq!(options(&mut ua, 2), "SIP/2.0 200 greeting hello");
    assert_eq!(
        ctl_json(&ev, &["htable.get", "ops", "greeting"])["item"]["value"],
        "hello"
    );

    // evapi.list shows both clients with their traffic; evapi.close
    // closes the one named, and the script sees it go.
    let mut second = EventClient::connect(ev.events);
    ev.wait_log_count("client connected", 2);
    second.send("hello from two");
    // The frame counts once the server has read it: ask until it has.
    let deadline = std::time::Instant::now() + WAIT;
    let clients = loop {
        let clients = ctl_json(&ev, &["evapi.list"]);
        let read = clients
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["frames_in"] == 1));
        if read || std::time::Instant::now() > deadline {
            break clients;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let clients = clients.as_array().expect("a list");
    assert_eq!(clients.len(), 2, "{clients:?}");
    let first = clients
        .iter()
        .find(|c| c["frames_out"].as_u64() == Some(1))
        .unwrap_or_else(|| panic!("the client that got the event: {clients:?}"));
    let two = clients
        .iter()
        .find(|c| c["frames_in"].as_u64() == Some(1))
        .unwrap_or_else(|| panic!("the client that sent a frame: {clients:?}"));
    assert_ne!(first["conidx"], two["conidx"]);
    let conidx = two["conidx"].as_u64().unwrap().to_string();
    ctl_json(&ev, &["evapi.close", &conidx]);
    assert_eq!(second.recv(), None, "the closed client sees EOF");
    let left = ctl_json(&ev, &["evapi.list"]);
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
    assert_eq!(left[0]["conidx"], first["conidx"]);
    let (code, _, err) = ctl(&["--url", &u, "evapi.close", &conidx], &[]);
    assert_ne!(code, 0);
    assert!(err.contains(&conidx), "{err}");
    drop(client);
    assert!(ev.terminate().success());
}
