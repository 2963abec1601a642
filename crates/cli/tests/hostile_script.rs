//! Runaway scripts against the real binary, each beside a healthy caller
//! whose requests must keep being answered: a route or event callback in
//! an endless loop is stopped at `[script] max_route_ms`, one that
//! allocates without end fails at `[script] memory_limit_mb`, and SIGTERM
//! ends the process in bounded time even with a thread stuck in a C call.

mod common;

use common::*;
use std::net::SocketAddr;

/// A config with `script_keys` added to `[script]`.
fn config_with(script_keys: &str) -> String {
    config("").replace(
        "file = \"router.lua\"",
        &format!("file = \"router.lua\"\n{script_keys}"),
    )
}

/// An OPTIONS request with one extra header line (or none).
fn options(to: SocketAddr, me: SocketAddr, id: &str, extra: &str) -> String {
    format!(
        "OPTIONS sip:ping@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{id};rport\r\n\
         From: <sip:a@{me}>;tag={id}\r\nTo: <sip:ping@{to}>\r\nCall-ID: {id}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// Send `n` plain OPTIONS one after another, each answered before the next:
/// the healthy caller. Returns the codes.
fn healthy_calls(ev: &Evapi, n: usize, tag: &str) -> Vec<u16> {
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    (0..n)
        .map(|i| {
            let id = format!("{tag}-{i}");
            uac.send(ev.udp, options(ev.udp, uac.addr(), &id, ""))
                .unwrap();
            uac.recv_status(&[100], WAIT).expect("a reply in time").0
        })
        .collect()
}

const LOOP_SCRIPT: &str = r#"
function ksr_request_route()
    if KSR.hdr.is_present("X-Loop") > 0 then
        local n = 0
        while true do n = n + 1 end
    end
    if KSR.hdr.is_present("X-Hog") > 0 then
        local t = {}
        while true do t[#t + 1] = string.rep("x", 4096) .. #t end
    end
    KSR.sl.send_reply(200, "OK")
end
function ksr_evapi_event(evname)
    if evname ~= "evapi:message-received" then return end
    local msg = KSR.pv.get("$evapi(msg)")
    if msg == "spin" then
        while true do end
    end
    KSR.evapi.relay("echo:" .. msg)
end
"#;

/// Routes in an endless loop (on both router threads) are stopped at
/// `max_route_ms` with a script error naming the line, get 500, and the
/// threads go on: a healthy caller running beside them is answered 200
/// every time. Without the limit, every call hashed to those threads would
/// be lost for good.
#[test]
fn a_looping_route_is_stopped_and_the_thread_goes_on() {
    let ev = Evapi::start(&config_with("max_route_ms = 300"), LOOP_SCRIPT);
    let healthy = {
        let ev_udp = ev.udp;
        std::thread::spawn(move || {
            let mut uac = Agent::udp("127.0.0.1:0").unwrap();
            (0..60)
                .map(|i| {
                    let id = format!("healthy-{i}");
                    uac.send(ev_udp, options(ev_udp, uac.addr(), &id, ""))
                        .unwrap();
                    uac.recv_status(&[100], WAIT).expect("a reply in time").0
                })
                .collect::<Vec<u16>>()
        })
    };
    let mut attacker = Agent::udp("127.0.0.1:0").unwrap();
    // Several Call-IDs, so both router threads get a loop.
    for i in 0..4 {
        let id = format!("loop-{i}");
        attacker
            .send(
                ev.udp,
                options(ev.udp, attacker.addr(), &id, "X-Loop: 1\r\n"),
            )
            .unwrap();
    }
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(attacker.recv_status(&[100], WAIT).expect("a reply").0);
    }
    assert_eq!(codes, vec![500; 4], "each looping request gets 500");
    let healthy = healthy.join().unwrap();
    assert_eq!(
        healthy,
        vec![200; 60],
        "the healthy caller was always answered"
    );
    let stopped = ev.wait_log("max_route_ms = 300 ms");
    assert!(
        stopped.contains("router.lua:5:"),
        "names the line: {stopped}"
    );
    // And after it all, both threads still serve.
    assert_eq!(healthy_calls(&ev, 10, "after"), vec![200; 10]);
}

/// The same loop in the evapi event callback: stopped, and the worker
/// answers the next message.
#[test]
fn a_looping_event_callback_is_stopped_and_the_worker_goes_on() {
    let ev = Evapi::start(&config_with("max_route_ms = 300"), LOOP_SCRIPT);
    let mut client = EventClient::connect(ev.events);
    ev.wait_log("client connected");
    client.send("spin");
    client.send("hello");
    assert_eq!(client.recv().as_deref(), Some("echo:hello"));
    let stopped = ev.wait_log("max_route_ms = 300 ms");
    assert!(
        stopped.contains("router.lua:17:"),
        "names the line: {stopped}"
    );
    assert_eq!(healthy_calls(&ev, 5, "beside-evapi"), vec![200; 5]);
}

/// A route that allocates without end fails at `memory_limit_mb` with a
/// script error and 500; the process does not abort, and serves on.
#[test]
fn a_route_that_allocates_without_end_fails_alone() {
    let ev = Evapi::start(
        &config_with("memory_limit_mb = 16\nmax_route_ms = 10000"),
        LOOP_SCRIPT,
    );
    let mut attacker = Agent::udp("127.0.0.1:0").unwrap();
    for i in 0..3 {
        let id = format!("hog-{i}");
        attacker
            .send(
                ev.udp,
                options(ev.udp, attacker.addr(), &id, "X-Hog: 1\r\n"),
            )
            .unwrap();
        let (code, _) = attacker.recv_status(&[100], WAIT).expect("a reply");
        assert_eq!(code, 500);
        assert_eq!(
            healthy_calls(&ev, 5, &format!("beside-hog-{i}")),
            vec![200; 5]
        );
    }
    ev.wait_log("out of memory ([script] memory_limit_mb)");
}

/// SIGTERM while a router thread is stuck in a C call (here: opening a
/// FIFO nobody writes to, which no Lua hook can interrupt): the process
/// still exits, and the log names the stuck thread.
#[test]
fn sigterm_ends_the_process_with_a_thread_stuck() {
    let dir = TempDir::new("stuck");
    let fifo = dir.0.join("never-written");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let script = format!(
        r#"
function ksr_request_route()
    KSR.info("about to block")
    local f = io.open("{}", "r")
    KSR.sl.send_reply(200, "never")
end
function ksr_evapi_event(evname) end
"#,
        fifo.display()
    );
    let mut ev = Evapi::start(&config(""), &script);
    let uac = Agent::udp("127.0.0.1:0").unwrap();
    uac.send(ev.udp, options(ev.udp, uac.addr(), "stuck-1", ""))
        .unwrap();
    ev.wait_log("about to block");
    // terminate() fails the test if the process is not gone within WAIT.
    let status = ev.terminate();
    assert!(status.success(), "{status}");
    let stuck = ev.wait_log("still busy after 5 s at shutdown");
    assert!(stuck.contains("sip-child-"), "names the thread: {stuck}");
}
