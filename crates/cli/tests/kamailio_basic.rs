//! Kamailio's own example KEMI Lua script (`kamailio-basic-kemi-lua.lua`,
//! read from ../shared/compat/, never copied), run unchanged with
//! examples/kamailio-basic/evapi.toml: registrations, calls between
//! registered users with record-routing and BYE (SIPp on both sides), and
//! the script's other paths (OPTIONS to the server, unknown user, too many
//! hops, a malformed request, un-registration).
//!
//! Without `sipp` on PATH the SIPp part prints a skip note, unless
//! `EVAPI_REQUIRE_SIPP=1` (set by .ci/run): then it fails.

mod common;

use common::sipp::*;
use common::*;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

const CALLS: u32 = 1000;
const RATE: u32 = 100;

/// The shared script, where the project's test data lives.
fn compat_script() -> String {
    let p = format!(
        "{}/../../../shared/compat/kamailio-basic-kemi-lua.lua",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::canonicalize(&p)
        .unwrap_or_else(|e| panic!("{p}: {e} (the shared test data is missing)"))
        .display()
        .to_string()
}

/// The example config, on ephemeral loopback ports, with the script's
/// absolute path (the test runs it from a temporary folder).
fn example_config() -> String {
    let text = include_str!("../../../examples/kamailio-basic/evapi.toml");
    let mut out = String::new();
    for line in text.lines() {
        let line = match line {
            l if l.starts_with("listen = ") => {
                "listen = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]".to_string()
            }
            l if l.starts_with("file = ") => format!("file = {:?}", compat_script()),
            l if l.starts_with("bind_addr = ") => "bind_addr = \"127.0.0.1:0\"".to_string(),
            l => l.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A request from `me` to the server, with `extra` header lines.
fn request(method: &str, ruri: &str, me: SocketAddr, call_id: &str, extra: &str) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id};rport\r\n\
         From: <sip:alice@{me}>;tag=a{call_id}\r\nTo: <{ruri}>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\nContact: <sip:alice@{me}>\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

fn final_code(uac: &mut Agent, to: SocketAddr, msg: &str) -> (u16, String) {
    uac.send(to, msg).unwrap();
    uac.recv_status(&[100], WAIT)
        .expect("a final reply in time")
}

/// The script's own paths, with a `sip::testing` agent: each answered as
/// the script says.
#[test]
fn the_example_script_answers_as_written() {
    let ev = Evapi::start(&example_config(), "-- unused: [script] file is absolute\n");
    let s = ev.udp;
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    let me = uac.addr();
    // OPTIONS to the server itself: "200 Keepalive".
    let (code, reply) = final_code(
        &mut uac,
        s,
        &request(
            "OPTIONS",
            &format!("sip:{s}"),
            me,
            "ka-1",
            "Max-Forwards: 70\r\n",
        ),
    );
    assert_eq!(
        (code, reply.lines().next()),
        (200, Some("SIP/2.0 200 Keepalive"))
    );
    // An unknown user: 404 from the location route.
    let (code, _) = final_code(
        &mut uac,
        s,
        &request(
            "INVITE",
            &format!("sip:nobody@{s}"),
            me,
            "unknown-1",
            "Max-Forwards: 70\r\n",
        ),
    );
    assert_eq!(code, 404);
    // No hops left: 483.
    let (code, _) = final_code(
        &mut uac,
        s,
        &request(
            "INVITE",
            &format!("sip:bob@{s}"),
            me,
            "hops-1",
            "Max-Forwards: 0\r\n",
        ),
    );
    assert_eq!(code, 483);
    // A request the sanity checks refuse (CSeq method unlike the request's).
    let bad = request(
        "INVITE",
        &format!("sip:bob@{s}"),
        me,
        "sane-1",
        "Max-Forwards: 70\r\n",
    )
    .replace("CSeq: 1 INVITE", "CSeq: 1 BYE");
    let (code, _) = final_code(&mut uac, s, &bad);
    assert_eq!(code, 400);
    // No user in the Request-URI: 484.
    let (code, _) = final_code(
        &mut uac,
        s,
        &request(
            "INVITE",
            &format!("sip:{s}"),
            me,
            "nouser-1",
            "Max-Forwards: 70\r\n",
        ),
    );
    assert_eq!(code, 484);
    // An in-dialog request with no route for it: 404 "Not here".
    let stray = request(
        "BYE",
        &format!("sip:bob@{s}"),
        me,
        "stray-1",
        "Max-Forwards: 70\r\n",
    )
    .replace(
        &format!("To: <sip:bob@{s}>"),
        &format!("To: <sip:bob@{s}>;tag=x1"),
    );
    let (code, reply) = final_code(&mut uac, s, &stray);
    assert_eq!(
        (code, reply.lines().next()),
        (404, Some("SIP/2.0 404 Not here"))
    );
}

/// Two users register with SIPp; then 1,000 calls with BYE at 100 calls/s
/// from one to the other through the proxy, following its Record-Route:
/// none failed. Then the callee un-registers and a call to it gets 404.
#[test]
fn sipp_registered_users_call_each_other_through_the_example_script() {
    if !sip::testing::sipp_available() {
        return;
    }
    let ev = Evapi::start(&example_config(), "-- unused\n");
    let dir = TempDir::new("kamailio-basic-sipp");
    let (uas_port, uac_port) = (free_udp_port(), free_udp_port());
    let server = ev.udp.to_string();
    let register = |user: &str, contact_port: u16, final_expires: u32| {
        let port = free_udp_port().to_string();
        let (contact_port, final_expires) = (contact_port.to_string(), final_expires.to_string());
        let p = spawn(
            "sipp register",
            Command::new("sipp")
                .current_dir(&dir.0)
                .stdout(Stdio::null())
                .args([
                    "-sf",
                    &scenario("register.xml"),
                    "-i",
                    "127.0.0.1",
                    "-p",
                    &port,
                ])
                .args(["-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error"])
                .args(["-key", "user", user, "-key", "contact_port", &contact_port])
                .args([
                    "-key",
                    "expires",
                    "3600",
                    "-key",
                    "final_expires",
                    &final_expires,
                ])
                .arg(&server),
        );
        let (code, out) = p.finish(Duration::from_secs(30));
        assert_eq!(code, Some(0), "registering {user}: {out}");
    };
    // The callee (contact: the UAS's port) and the caller register; the
    // second REGISTER of each is a refresh.
    register("bob", uas_port, 3600);
    register("alice", uac_port, 3600);
    let uas = spawn(
        "sipp uas",
        Command::new("sipp")
            .current_dir(&dir.0)
            .stdout(Stdio::null())
            .args(["-sf", &scenario("uas_rr.xml"), "-i", "127.0.0.1"])
            .args([
                "-p",
                &uas_port.to_string(),
                "-m",
                &CALLS.to_string(),
                "-nostdin",
            ])
            .args(["-timeout", "120s", "-timeout_error"])
            .arg(&server),
    );
    let uac = spawn(
        "sipp uac",
        Command::new("sipp")
            .current_dir(&dir.0)
            .stdout(std::fs::File::create(dir.0.join("uac.out")).unwrap())
            .args([
                "-sf",
                &scenario("uac_rr.xml"),
                "-s",
                "bob",
                "-i",
                "127.0.0.1",
            ])
            .args(["-p", &uac_port.to_string(), "-r", &RATE.to_string()])
            .args(["-m", &CALLS.to_string(), "-nostdin"])
            .args(["-timeout", "120s", "-timeout_error"])
            .arg(&server),
    );
    let (uac_code, uac_err) = uac.finish(Duration::from_secs(130));
    let (uas_code, uas_err) = uas.finish(Duration::from_secs(30));
    let uac_out = std::fs::read_to_string(dir.0.join("uac.out")).unwrap_or_default();
    assert_eq!(
        uac_code,
        Some(0),
        "SIPp UAC failed calls:\n{uac_err}\n{uac_out}"
    );
    assert_eq!(uas_code, Some(0), "SIPp UAS:\n{uas_err}");
    // The callee un-registers (expires 0 on its refresh): calls to it now
    // get 404 from the location route.
    register("bob", uas_port, 0);
    let mut probe = Agent::udp("127.0.0.1:0").unwrap();
    let me = probe.addr();
    let s = ev.udp;
    let (code, _) = final_code(
        &mut probe,
        s,
        &request(
            "INVITE",
            &format!("sip:bob@{s}"),
            me,
            "after-unreg",
            "Max-Forwards: 70\r\n",
        ),
    );
    assert_eq!(code, 404, "bob is no longer registered");
}

/// Register `user` with `contact` through the script (its registrar route).
fn register(agent: &mut Agent, server: SocketAddr, user: &str, contact: SocketAddr) {
    let me = agent.addr();
    let msg = format!(
        "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKreg{user};rport\r\n\
         From: <sip:{user}@{server}>;tag=r{user}\r\nTo: <sip:{user}@{server}>\r\n\
         Call-ID: reg-{user}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@{contact}>;expires=600\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    let (code, reply) = final_code(agent, server, &msg);
    assert_eq!(code, 200, "{reply}");
}

/// The failure route (`ksr_failure_manage`) and CANCEL, with agents as
/// the registered callee: a 486 from the callee reaches the caller after
/// the failure route ran; a CANCEL while the callee rings gets 200, the
/// callee gets the CANCEL, and the caller gets 487.
#[test]
fn failure_route_and_cancel_through_the_example_script() {
    let ev = Evapi::start(&example_config(), "-- unused\n");
    let s = ev.udp;
    let mut callee = Agent::udp("127.0.0.1:0").unwrap();
    let callee_addr = callee.addr();
    register(&mut callee, s, "carol", callee_addr);
    let mut caller = Agent::udp("127.0.0.1:0").unwrap();
    let me = caller.addr();

    // Busy: the callee answers 486; the failure route lets it through.
    let invite = request(
        "INVITE",
        &format!("sip:carol@{s}"),
        me,
        "busy-1",
        "Max-Forwards: 70\r\n",
    );
    caller.send(s, &invite).unwrap();
    let (inv, from) = callee
        .expect_request(sip::Method::Invite, WAIT)
        .expect("the INVITE reaches the registered contact");
    let rr = sip::testing::header(&sip::testing::text(&inv), "Record-Route").unwrap_or_default();
    assert!(rr.contains(";lr"), "record-routed: {rr}");
    callee
        .send(
            from,
            sip::testing::reply(&inv, 486, "Busy Here", Some("c1")),
        )
        .unwrap();
    let (code, _) = caller
        .recv_status(&[100], WAIT)
        .expect("the caller's final reply");
    assert_eq!(code, 486);

    // CANCEL while ringing.
    let invite = request(
        "INVITE",
        &format!("sip:carol@{s}"),
        me,
        "cancel-1",
        "Max-Forwards: 70\r\n",
    );
    caller.send(s, &invite).unwrap();
    let (inv, from) = callee
        .expect_request(sip::Method::Invite, WAIT)
        .expect("the INVITE reaches the contact");
    callee
        .send(from, sip::testing::reply(&inv, 180, "Ringing", Some("c2")))
        .unwrap();
    let (code, _) = caller.recv_status(&[100], WAIT).expect("180 relayed");
    assert_eq!(code, 180);
    let cancel = invite
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    caller.send(s, &cancel).unwrap();
    let (cancel_in, from) = callee
        .expect_request(sip::Method::Cancel, WAIT)
        .expect("the CANCEL reaches the callee");
    callee
        .send(from, sip::testing::reply(&cancel_in, 200, "OK", None))
        .unwrap();
    callee
        .send(
            from,
            sip::testing::reply(&inv, 487, "Request Terminated", Some("c2")),
        )
        .unwrap();
    let mut codes = Vec::new();
    while codes.len() < 2 {
        let (code, _) = caller
            .recv_status(&[100, 180], WAIT)
            .expect("replies to the caller");
        codes.push(code);
    }
    codes.sort();
    assert_eq!(
        codes,
        vec![200, 487],
        "200 to the CANCEL, 487 to the INVITE"
    );
}
