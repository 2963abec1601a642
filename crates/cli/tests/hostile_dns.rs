//! The whole program with a DNS server that never answers: calls routed to
//! a name under it end with 478 Unresolvable Destination after
//! `dns_timeout_ms`, and a healthy caller beside them keeps completing
//! calls meanwhile (before this, the lookups blocked the script threads
//! and every call on the server stopped for about 30 s).

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use sip::fake_dns::FakeDns;

const SCRIPT: &str = r#"
function ksr_request_route()
    if KSR.is_ACK() then
        return
    end
    if KSR.pv.get("$rd") == "blackhole.test" then
        KSR.tm.t_relay()
        return
    end
    KSR.tm.t_reply(200, "OK")
end
function ksr_evapi_event(evname) end
"#;

/// Calls to the name under the silent server.
const STUCK: usize = 12;

fn stuck_invite(me: SocketAddr, n: usize) -> String {
    format!(
        "INVITE sip:callee@blackhole.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbh{n};rport\r\nFrom: <sip:a@{me}>;tag=bh{n}\r\nTo: <sip:callee@blackhole.test>\r\nCall-ID: blackhole-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:a@{me}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// One healthy call: INVITE, 200 (past the 100), ACK.
fn healthy_call(uac: &mut Agent, to: SocketAddr, n: usize) {
    let invite = uac
        .invite(to, &format!("healthy-{n}"), &format!("hc{n}"))
        .unwrap();
    let (code, ok) = uac
        .recv_status(&[100], WAIT)
        .unwrap_or_else(|| panic!("healthy call {n} got no final reply"));
    assert_eq!(code, 200, "healthy call {n}: {ok}");
    uac.ack_for(to, &invite, &ok).unwrap();
}

#[test]
fn silent_dns_delays_only_the_calls_to_its_names() {
    let dns = FakeDns::silent().unwrap();
    let cfg = config("").replace(
        "children = 2\n",
        &format!(
            "children = 2\ndns_timeout_ms = 3000\ndns_servers = [\"{}\"]\n",
            dns.addr()
        ),
    );
    let ev = Evapi::start(&cfg, SCRIPT);
    let mut bad = Agent::udp("127.0.0.1:0").unwrap();
    for n in 0..STUCK {
        bad.send(ev.udp, stuck_invite(bad.addr(), n)).unwrap();
    }
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    // 20 healthy calls right away: all complete while the 12 wait for DNS
    // (an ordering check: the timeout is 3 s, the calls take milliseconds).
    for n in 0..20 {
        healthy_call(&mut uac, ev.udp, n);
    }
    let early = bad.recv_status(&[100], Duration::from_millis(1));
    assert!(
        early.is_none(),
        "a final reply to a stuck call came before the healthy calls: {early:?}"
    );
    // Then about 50 calls/s for 5 s, across the DNS timeout: every one
    // completes.
    let start = Instant::now();
    for n in 20..270 {
        let due = start + Duration::from_millis(20 * (n as u64 - 20));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        healthy_call(&mut uac, ev.udp, n);
    }
    // Each of the 12 ends with 478 (retransmitted until ACKed: counted once
    // per Call-ID).
    let mut ended = HashSet::new();
    let deadline = Instant::now() + WAIT;
    while ended.len() < STUCK && Instant::now() < deadline {
        let Some((code, text)) = bad.recv_status(&[100], WAIT) else {
            break;
        };
        assert_eq!(code, 478, "{text}");
        assert!(text.contains("Unresolvable Destination"), "{text}");
        ended.insert(header(&text, "Call-ID").unwrap());
    }
    assert_eq!(ended.len(), STUCK, "every stuck call ends with 478");
    assert!(dns.queries() >= 1, "the silent server was asked");
}
