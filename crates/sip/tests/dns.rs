//! Relays to names: resolution runs on the runtime, never on a router
//! thread. A DNS server that never answers delays only the requests sent
//! to its names (478 after `dns_timeout_ms`, or the failure route with
//! 478); a fake DNS server that answers shows the relay reaching a UAS,
//! and the cache sparing a second query.

mod common;

use std::net::Ipv4Addr;

use common::*;
use sip::fake_dns::FakeDns;

/// Relays a request carrying `X-Dest: URI` there (arming failure route
/// "f" if it also carries `X-Failure`); answers any other request 200.
/// The failure route answers 480 with the failure code in the reason.
struct DestRouter;

impl Router for DestRouter {
    fn request(&self, host: &SipHandle, req: &mut Request) {
        let dest = req
            .header("X-Dest")
            .map(|d| String::from_utf8_lossy(d).into_owned());
        let is_ack = req.msg().method() == Some(&Method::Ack);
        match dest {
            Some(d) => {
                req.set_dst_uri(Some(&d)).unwrap();
                if req.header("X-Failure").is_some() {
                    req.set_failure_route("f");
                }
                if host.t_relay(req).is_err() && !is_ack {
                    let _ = host.t_reply(req, 500, "Relay Refused");
                }
            }
            None if is_ack => {}
            None => {
                let _ = host.t_reply(req, 200, "OK");
            }
        }
    }

    fn failure(&self, host: &SipHandle, req: &mut Request, route: &str) {
        assert_eq!(route, "f");
        let code = req.failure_code().unwrap_or(0);
        let _ = host.t_reply(req, 480, &format!("Failed {code}"));
    }
}

/// A host with one router thread (so a lookup on it would hold every other
/// request back) asking `dns` only.
fn host(dns: &FakeDns, timeout_ms: u64) -> (tokio::runtime::Runtime, SipHost) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cfg = HostConfig {
        sip: SipConfig {
            listen: vec!["udp:127.0.0.1:0".into()],
            children: 1,
            dns_timeout_ms: timeout_ms,
            dns_servers: vec![dns.addr().to_string()],
            ..SipConfig::default()
        },
        ..HostConfig::default()
    };
    let h = rt
        .block_on(SipHost::start(cfg, Arc::new(DestRouter)))
        .unwrap();
    (rt, h)
}

fn udp_addr(h: &SipHost) -> SocketAddr {
    h.local_addrs()[0].1
}

fn message(a: &Agent, call_id: &str, extra: &str) -> Vec<u8> {
    Call::new(a, call_id, "sip:bob@example.test").request("MESSAGE", &branch(), 1, None, extra)
}

#[test]
fn silent_dns_gets_478_while_other_requests_are_served_at_once() {
    let dns = FakeDns::silent().unwrap();
    let (rt, h) = host(&dns, 3000);
    let to = udp_addr(&h);
    let mut uas = Agent::udp("127.0.0.1:0").unwrap();
    let mut stuck = Agent::udp("127.0.0.1:0").unwrap();
    let mut other = Agent::udp("127.0.0.1:0").unwrap();
    stuck
        .send(
            to,
            message(&stuck, "to-name", "X-Dest: sip:callee@blackhole.test\r\n"),
        )
        .unwrap();
    // Meanwhile, on the same (only) router thread: answered requests and
    // relays to an IP literal complete.
    for n in 0..5 {
        other
            .send(to, message(&other, &format!("local-{n}"), ""))
            .unwrap();
        other
            .expect_status(200, None, WAIT)
            .expect("a local answer while the name resolves");
        let relay = format!("X-Dest: sip:uas@{}\r\n", uas.addr());
        other
            .send(to, message(&other, &format!("literal-{n}"), &relay))
            .unwrap();
        let (req, from) = uas.expect_request(Method::Message, WAIT).unwrap();
        uas.send(from, reply(&req, 200, "OK", Some("u"))).unwrap();
        other
            .expect_status(200, None, WAIT)
            .expect("a relay to an IP literal while the name resolves");
    }
    assert!(
        stuck.recv(Duration::from_millis(1)).is_none(),
        "the other requests completed before the 478"
    );
    assert_eq!(h.handle().stats().resolving, 1);
    let r = stuck
        .expect_status(478, None, Duration::from_secs(10))
        .expect("478 once the DNS timeout passed");
    assert_eq!(r.reason(), Some(&b"Unresolvable Destination"[..]));
    let s = h.handle().stats();
    assert_eq!((s.resolving, s.unresolvable), (0, 1));
    assert!(dns.queries() >= 1, "the fake server was asked");
    rt.block_on(h.shutdown());
}

#[test]
fn failure_route_runs_with_478() {
    let dns = FakeDns::silent().unwrap();
    let (rt, h) = host(&dns, 200);
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let extra = "X-Dest: sip:callee@blackhole.test\r\nX-Failure: 1\r\n";
    a.send(udp_addr(&h), message(&a, "fail-478", extra))
        .unwrap();
    let r = a
        .expect_status(480, None, WAIT)
        .expect("the failure route's reply");
    assert_eq!(r.reason(), Some(&b"Failed 478"[..]));
    rt.block_on(h.shutdown());
}

#[test]
fn answering_dns_resolves_the_name_and_caches_it() {
    let dns = FakeDns::answering(&[("callee.test", Ipv4Addr::LOCALHOST)]).unwrap();
    let (rt, h) = host(&dns, 3000);
    let to = udp_addr(&h);
    let mut uas = Agent::udp("127.0.0.1:0").unwrap();
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let dest = format!("X-Dest: sip:callee@callee.test:{}\r\n", uas.addr().port());
    for n in 0..2 {
        a.send(to, message(&a, &format!("named-{n}"), &dest))
            .unwrap();
        let (req, from) = uas
            .expect_request(Method::Message, WAIT)
            .expect("the relay reached the UAS");
        assert_eq!(req.vias().count(), 2);
        uas.send(from, reply(&req, 202, "Accepted", Some("u")))
            .unwrap();
        a.expect_status(202, None, WAIT).expect("the UAS's reply");
    }
    // The second relay was answered from the cache (TTL 300 s).
    assert_eq!(dns.queries(), 1);
    // An ACK to the name is relayed once resolved (statelessly).
    let ack = Call::new(&a, "named-ack", "sip:bob@example.test").request(
        "ACK",
        &branch(),
        1,
        Some("u"),
        &dest,
    );
    a.send(to, ack).unwrap();
    uas.expect_request(Method::Ack, WAIT)
        .expect("the ACK reached the UAS");
    // An unknown name: NXDOMAIN, 478 without waiting for the timeout.
    a.send(to, message(&a, "nx", "X-Dest: sip:callee@nowhere.test\r\n"))
        .unwrap();
    a.expect_status(478, None, WAIT).expect("478 for NXDOMAIN");
    rt.block_on(h.shutdown());
}

#[test]
fn localhost_resolves_without_asking_the_dns_server() {
    let dns = FakeDns::silent().unwrap();
    let (rt, h) = host(&dns, 3000);
    let mut uas = Agent::udp("127.0.0.1:0").unwrap();
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let dest = format!("X-Dest: sip:callee@localhost:{}\r\n", uas.addr().port());
    a.send(udp_addr(&h), message(&a, "localhost", &dest))
        .unwrap();
    let (req, from) = uas
        .expect_request(Method::Message, WAIT)
        .expect("localhost reached the UAS");
    uas.send(from, reply(&req, 200, "OK", Some("u"))).unwrap();
    a.expect_status(200, None, WAIT).expect("the UAS's reply");
    assert_eq!(dns.queries(), 0, "localhost never went to the DNS server");
    rt.block_on(h.shutdown());
}
