//! The host over real loopback sockets, driven by the test agent:
//! suspend / continue / reply, relay to a test UAS, retransmissions,
//! CANCEL, timeouts, malformed input, TCP and IPv6.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use sip::testing::{ack_2xx, branch, reply, Agent, Call};
use sip::{
    HostConfig, Method, Request, Router, SipConfig, SipHandle, SipHost, SipMessage, Source,
    Transport, TxRef,
};

const WAIT: Duration = Duration::from_secs(5);

/// The host closed the stream: a read sees end of file (not a timeout).
fn assert_closed(s: &mut std::net::TcpStream) {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 1024];
    // Bounded: each read returns data, EOF, or an error by the timeout.
    for _ in 0..100 {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("connection not closed: {e}"),
        }
    }
    panic!("connection kept sending");
}

/// What the test router does with a new request.
#[derive(Clone)]
enum Mode {
    /// Suspend INVITEs and MESSAGEs; hand the pair to the test.
    Suspend,
    /// Relay everything to this UAS (failure route "next" armed when the
    /// second address is given).
    Relay(SocketAddr, Option<SocketAddr>),
    /// Answer every request statefully (ACK aside).
    Answer(u16),
    /// Relay everything to this URI.
    RelayTo(String),
}

struct TestRouter {
    mode: Mode,
    suspended: Mutex<mpsc::Sender<TxRef>>,
}

impl Router for TestRouter {
    fn request(&self, host: &SipHandle, req: &mut Request) {
        let method = req.msg().method().cloned();
        match (&self.mode, method) {
            (_, Some(Method::Options)) => {
                let _ = host.sl_reply(req, 200, "OK");
            }
            (_, Some(Method::Cancel)) => {
                let _ = host.sl_reply(req, 481, "Call/Transaction Does Not Exist");
            }
            (Mode::Suspend | Mode::Answer(_) | Mode::RelayTo(_), Some(Method::Ack)) => {}
            (Mode::RelayTo(uri), _) => {
                req.set_dst_uri(Some(uri)).unwrap();
                let _ = host.t_relay(req);
            }
            (Mode::Answer(code), _) => {
                let _ = host.t_reply(req, (*code).into(), "Answered");
            }
            (Mode::Suspend, _) => {
                if let Ok(t) = host.t_suspend(req) {
                    let _ = self.suspended.lock().unwrap().send(t);
                }
            }
            (Mode::Relay(uas, second), _) => {
                req.set_dst_uri(Some(&format!("sip:{uas}"))).unwrap();
                if second.is_some() {
                    req.set_failure_route("next");
                }
                let _ = host.t_relay(req);
            }
        }
    }

    fn failure(&self, host: &SipHandle, req: &mut Request, route: &str) {
        assert_eq!(route, "next");
        if let Mode::Relay(_, Some(second)) = &self.mode {
            req.set_dst_uri(Some(&format!("sip:{second}"))).unwrap();
            host.t_relay(req).unwrap();
        }
    }

    fn reply(&self, _host: &SipHandle, reply: &SipMessage, _source: &Source) -> bool {
        // Drop 183s to show the hook works.
        reply.status() != Some(183)
    }
}

struct TestHost {
    rt: tokio::runtime::Runtime,
    host: Option<SipHost>,
    handle: SipHandle,
    suspended: mpsc::Receiver<TxRef>,
}

impl TestHost {
    fn start(mode: Mode, tweak: impl FnOnce(&mut HostConfig)) -> TestHost {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let mut cfg = HostConfig {
            sip: SipConfig {
                listen: vec!["udp:127.0.0.1:0".into(), "tcp:127.0.0.1:0".into()],
                children: 2,
                ..SipConfig::default()
            },
            ..HostConfig::default()
        };
        tweak(&mut cfg);
        let router = Arc::new(TestRouter {
            mode,
            suspended: Mutex::new(tx),
        });
        let host = rt.block_on(SipHost::start(cfg, router)).unwrap();
        let handle = host.handle();
        TestHost {
            rt,
            host: Some(host),
            handle,
            suspended: rx,
        }
    }

    fn addr(&self, t: Transport) -> SocketAddr {
        self.host
            .as_ref()
            .unwrap()
            .local_addrs()
            .into_iter()
            .find(|(tt, _)| *tt == t)
            .unwrap()
            .1
    }

    fn next_suspended(&self) -> TxRef {
        self.suspended
            .recv_timeout(WAIT)
            .expect("a suspended transaction")
    }

    /// Wait (bounded) until the stats satisfy `f`.
    fn wait_stats(&self, f: impl Fn(&sip::TmStats) -> bool) -> sip::TmStats {
        for _ in 0..500 {
            let s = self.handle.stats();
            if f(&s) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.handle.stats()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(h) = self.host.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

fn uac(host: &TestHost, t: Transport) -> Agent {
    match t {
        Transport::Udp => Agent::udp("127.0.0.1:0").unwrap(),
        Transport::Tcp => Agent::tcp(host.addr(Transport::Tcp)).unwrap(),
    }
}

fn suspend_continue_reply(t: Transport) {
    let h = TestHost::start(Mode::Suspend, |_| {});
    let to = h.addr(t);
    let mut a = uac(&h, t);
    let call = Call::new(&a, &format!("scr-{t}"), "sip:bob@127.0.0.1");
    let br = branch();
    let invite = call.request("INVITE", &br, 1, None, "X-Edit: before\r\n");
    a.send(to, &invite).unwrap();
    a.expect_status(100, None, WAIT).expect("100 Trying");
    let tx = h.next_suspended();
    assert_eq!(h.handle.stats().suspended, 1);
    // A retransmission while suspended gets the 100 again.
    a.send(to, &invite).unwrap();
    a.expect_status(100, None, WAIT).expect("100 again");
    // A wrong label fails and changes nothing.
    assert!(h
        .handle
        .t_continue(tx.index, tx.label.wrapping_add(7))
        .is_err());
    assert_eq!(h.handle.stats().suspended, 1);
    let mut req = h.handle.t_continue(tx.index, tx.label).unwrap();
    assert_eq!(req.header("X-Edit"), Some(&b"before"[..]));
    let e = h.handle.t_continue(tx.index, tx.label).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("no suspended transaction {}:{}", tx.index, tx.label)
    );
    req.append_to_reply("X-Answered-By: test").unwrap();
    req.set_reply_body("application/sdp", b"v=0\r\n").unwrap();
    h.handle.t_reply(&mut req, 200, "OK").unwrap();
    let ok = a
        .expect_status(200, Some(Method::Invite), WAIT)
        .expect("200");
    assert!(ok.to().unwrap().tag.is_some());
    assert_eq!(ok.header("X-Answered-By"), Some(&b"test"[..]));
    assert_eq!(ok.header("Content-Type"), Some(&b"application/sdp"[..]));
    assert_eq!(ok.body(), b"v=0\r\n");
    assert_eq!(ok.top_via().unwrap().branch, Some(br.as_bytes()));
    a.send(to, ack_2xx(&call, 1, &ok)).unwrap();
    let s = h.wait_stats(|s| s.suspended == 0);
    assert_eq!(s.resumed, 1);
}

#[test]
fn udp_suspend_continue_reply() {
    suspend_continue_reply(Transport::Udp);
}

#[test]
fn tcp_suspend_continue_reply() {
    suspend_continue_reply(Transport::Tcp);
}

fn suspend_then_relay(uas_t: Transport) {
    let mut uas = match uas_t {
        Transport::Udp => Agent::udp("127.0.0.1:0").unwrap(),
        Transport::Tcp => Agent::tcp_listen("127.0.0.1:0").unwrap(),
    };
    let h = TestHost::start(Mode::Suspend, |_| {});
    let to = h.addr(Transport::Udp);
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&a, &format!("str-{uas_t}"), "sip:bob@127.0.0.1");
    a.send(to, call.request("INVITE", &branch(), 1, None, ""))
        .unwrap();
    let tx = h.next_suspended();
    let mut req = h.handle.t_continue(tx.index, tx.label).unwrap();
    let suffix = if uas_t == Transport::Tcp {
        ";transport=tcp"
    } else {
        ""
    };
    req.set_dst_uri(Some(&format!("sip:{}{suffix}", uas.addr())))
        .unwrap();
    req.append_header("X-Added: 1").unwrap();
    h.handle.t_relay(&mut req).unwrap();
    let (inv, from) = uas
        .expect_request(Method::Invite, WAIT)
        .expect("INVITE at the UAS");
    assert_eq!(inv.vias().count(), 2);
    assert_eq!(inv.max_forwards().unwrap(), Some(69));
    assert_eq!(inv.header("X-Added"), Some(&b"1"[..]));
    let reply_to = if uas_t == Transport::Udp { from } else { to };
    uas.send(reply_to, reply(&inv, 180, "Ringing", Some("uas1")))
        .unwrap();
    let ringing = a.expect_status(180, None, WAIT).expect("180 forwarded");
    assert_eq!(ringing.vias().count(), 1);
    uas.send(reply_to, reply(&inv, 200, "OK", Some("uas1")))
        .unwrap();
    let ok = a.expect_status(200, None, WAIT).expect("200 forwarded");
    // The ACK goes to the router, which relays nothing in this mode; send
    // it straight to show the dialog works end to end.
    let ack = ack_2xx(&call, 1, &ok);
    a.send(to, &ack).unwrap();
    let s = h.wait_stats(|s| s.relayed == 1 && s.suspended == 0);
    assert_eq!(s.relayed, 1);
}

#[test]
fn udp_suspend_then_relay_to_uas() {
    suspend_then_relay(Transport::Udp);
}

#[test]
fn tcp_relay_to_uas() {
    suspend_then_relay(Transport::Tcp);
}

#[test]
fn relay_200_and_ack_pass_end_to_end() {
    let mut uas = Agent::udp("127.0.0.1:0").unwrap();
    let h = TestHost::start(Mode::Relay(uas.addr(), None), |_| {});
    let to = h.addr(Transport::Udp);
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&a, "relay-ack", "sip:bob@127.0.0.1");
    a.send(to, call.request("INVITE", &branch(), 1, None, ""))
        .unwrap();
    a.expect_status(100, None, WAIT).expect("100");
    let (inv, from) = uas.expect_request(Method::Invite, WAIT).unwrap();
    // The reply hook drops 183s.
    uas.send(from, reply(&inv, 183, "Progress", Some("u")))
        .unwrap();
    uas.send(from, reply(&inv, 200, "OK", Some("u"))).unwrap();
    let ok = a.expect_status(200, None, WAIT).expect("200");
    a.send(to, ack_2xx(&call, 1, &ok)).unwrap();
    let (ack, _) = uas.expect_request(Method::Ack, WAIT).expect("ACK relayed");
    assert_eq!(ack.to().unwrap().tag, Some(&b"u"[..]));
    assert!(a
        .expect_status(183, None, Duration::from_millis(200))
        .is_none());
}

#[test]
fn failure_route_serial_forking() {
    let mut uas1 = Agent::udp("127.0.0.1:0").unwrap();
    let mut uas2 = Agent::udp("127.0.0.1:0").unwrap();
    let h = TestHost::start(Mode::Relay(uas1.addr(), Some(uas2.addr())), |_| {});
    let to = h.addr(Transport::Udp);
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&a, "serial", "sip:bob@127.0.0.1");
    a.send(to, call.request("INVITE", &branch(), 1, None, ""))
        .unwrap();
    let (inv, from) = uas1.expect_request(Method::Invite, WAIT).unwrap();
    uas1.send(from, reply(&inv, 486, "Busy Here", Some("u1")))
        .unwrap();
    let (ack, _) = uas1
        .expect_request(Method::Ack, WAIT)
        .expect("hop-by-hop ACK of the 486");
    assert_eq!(ack.top_via().unwrap().branch, inv.top_via().unwrap().branch);
    let (inv2, from2) = uas2
        .expect_request(Method::Invite, WAIT)
        .expect("second branch");
    uas2.send(from2, reply(&inv2, 200, "OK", Some("u2")))
        .unwrap();
    let ok = a
        .expect_status(200, None, WAIT)
        .expect("200 from the second UAS");
    assert_eq!(ok.to().unwrap().tag, Some(&b"u2"[..]));
    assert!(a
        .expect_status(486, None, Duration::from_millis(200))
        .is_none());
}

#[test]
fn cancel_while_suspended() {
    let h = TestHost::start(Mode::Suspend, |_| {});
    let to = h.addr(Transport::Udp);
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&a, "cancel-susp", "sip:bob@127.0.0.1");
    let br = branch();
    a.send(to, call.request("INVITE", &br, 1, None, ""))
        .unwrap();
    let tx = h.next_suspended();
    a.send(to, call.request("CANCEL", &br, 1, None, ""))
        .unwrap();
    a.expect_status(200, Some(Method::Cancel), WAIT)
        .expect("200 to the CANCEL");
    let r487 = a
        .expect_status(487, Some(Method::Invite), WAIT)
        .expect("487 to the INVITE");
    let tag = r487
        .to()
        .unwrap()
        .tag
        .map(|t| String::from_utf8_lossy(t).into_owned());
    a.send(to, call.request("ACK", &br, 1, tag.as_deref(), ""))
        .unwrap();
    assert!(h.handle.t_continue(tx.index, tx.label).is_err());
    let s = h.wait_stats(|s| s.suspended == 0);
    assert_eq!((s.suspended, s.canceled), (0, 1));
    // An unmatched CANCEL reaches the router, which answers 481.
    let c2 = Call::new(&a, "cancel-none", "sip:bob@127.0.0.1");
    a.send(to, c2.request("CANCEL", &branch(), 1, None, ""))
        .unwrap();
    a.expect_status(481, None, WAIT).expect("481");
}

#[test]
fn cancel_while_relayed() {
    let mut uas = Agent::udp("127.0.0.1:0").unwrap();
    let h = TestHost::start(Mode::Relay(uas.addr(), None), |_| {});
    let to = h.addr(Transport::Udp);
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&a, "cancel-relay", "sip:bob@127.0.0.1");
    let br = branch();
    a.send(to, call.request("INVITE", &br, 1, None, ""))
        .unwrap();
    let (inv, from) = uas.expect_request(Method::Invite, WAIT).unwrap();
    uas.send(from, reply(&inv, 180, "Ringing", Some("u")))
        .unwrap();
    a.expect_status(180, None, WAIT).expect("180");
    a.send(to, call.request("CANCEL", &br, 1, None, ""))
        .unwrap();
    a.expect_status(200, Some(Method::Cancel), WAIT)
        .expect("200 to the CANCEL");
    let (cancel, _) = uas
        .expect_request(Method::Cancel, WAIT)
        .expect("CANCEL downstream");
    assert_eq!(
        cancel.top_via().unwrap().branch,
        inv.top_via().unwrap().branch
    );
    uas.send(from, reply(&cancel, 200, "OK", Some("u")))
        .unwrap();
    uas.send(from, reply(&inv, 487, "Request Terminated", Some("u")))
        .unwrap();
    uas.expect_request(Method::Ack, WAIT)
        .expect("ACK of the 487");
    a.expect_status(487, Some(Method::Invite), WAIT)
        .expect("487 forwarded");
}

#[test]
fn never_continued_transaction_times_out() {
    let h = TestHost::start(Mode::Suspend, |c| {
        c.tm.fr_inv_timer = 300;
        c.tm.fr_timer = 200;
        c.tm.wait_timer = 100;
    });
    let to = h.addr(Transport::Udp);
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&a, "timeout", "sip:bob@127.0.0.1");
    let br = branch();
    a.send(to, call.request("INVITE", &br, 1, None, ""))
        .unwrap();
    let tx = h.next_suspended();
    let m = Call::new(&a, "timeout-msg", "sip:bob@127.0.0.1");
    a.send(to, m.request("MESSAGE", &branch(), 1, None, ""))
        .unwrap();
    h.next_suspended();
    let r408 = a
        .expect_status(408, Some(Method::Invite), WAIT)
        .expect("408 for the INVITE");
    a.expect_status(408, Some(Method::Message), WAIT)
        .expect("408 for the MESSAGE");
    let tag = r408
        .to()
        .unwrap()
        .tag
        .map(|t| String::from_utf8_lossy(t).into_owned());
    a.send(to, call.request("ACK", &br, 1, tag.as_deref(), ""))
        .unwrap();
    assert!(h.handle.t_continue(tx.index, tx.label).is_err());
    // Nothing leaks: both transactions leave the table.
    let s = h.wait_stats(|s| s.live == 0);
    assert_eq!((s.live, s.suspended, s.timeouts), (0, 0, 2));
}

#[test]
fn relayed_branch_times_out_with_408() {
    // A UAS that never answers.
    let uas = Agent::udp("127.0.0.1:0").unwrap();
    let h = TestHost::start(Mode::Relay(uas.addr(), None), |c| c.tm.fr_timer = 300);
    let to = h.addr(Transport::Udp);
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&a, "branch-timeout", "sip:bob@127.0.0.1");
    a.send(to, call.request("INVITE", &branch(), 1, None, ""))
        .unwrap();
    a.expect_status(408, None, WAIT).expect("408");
    drop(uas);
}

#[test]
fn malformed_input_gets_400_or_is_dropped() {
    let h = TestHost::start(Mode::Suspend, |_| {});
    let to = h.addr(Transport::Udp);
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    // Garbage: dropped.
    a.send(to, b"\x00\x01garbage\r\n\r\n").unwrap();
    a.send(to, b"INVITE sip:x SIP/2.0\r\nVia: broken\r\n\r\n")
        .unwrap();
    // A bad CSeq: 400, with a reply routed by the good Via.
    let call = Call::new(&a, "bad-cseq", "sip:bob@127.0.0.1");
    let bad = String::from_utf8(call.request("OPTIONS", &branch(), 1, None, ""))
        .unwrap()
        .replace("CSeq: 1 OPTIONS", "CSeq: abc");
    a.send(to, bad.as_bytes()).unwrap();
    a.expect_status(400, None, WAIT).expect("400");
    // The host still works.
    a.send(to, call.request("OPTIONS", &branch(), 2, None, ""))
        .unwrap();
    a.expect_status(200, None, WAIT).expect("200 after junk");

    // TCP: junk and an over-large Content-Length close the connection.
    for junk in [
        &b"NOT SIP AT ALL\r\nfoo\r\n\r\n"[..],
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bK1\r\nContent-Length: 99999999\r\n\r\n",
    ] {
        let mut s = std::net::TcpStream::connect(h.addr(Transport::Tcp)).unwrap();
        s.write_all(junk).unwrap();
        assert_closed(&mut s);
    }
    let mut t = uac(&h, Transport::Tcp);
    let call = Call::new(&t, "tcp-ok", "sip:bob@127.0.0.1");
    t.send(to, call.request("OPTIONS", &branch(), 1, None, ""))
        .unwrap();
    t.expect_status(200, None, WAIT).expect("200 over TCP");
}

#[test]
fn rport_reply_goes_to_the_source_port() {
    let h = TestHost::start(Mode::Suspend, |_| {});
    let to = h.addr(Transport::Udp);
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    // The Via claims port 9 (nothing there); rport makes the reply come
    // back to our real port.
    let msg = format!(
        "OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;rport;branch={}\r\nFrom: <sip:a@a>;tag=1\r\nTo: <sip:b@b>\r\nCall-ID: rport-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        branch()
    );
    a.send(to, msg.as_bytes()).unwrap();
    let ok = a.expect_status(200, None, WAIT).expect("200 via rport");
    let via = ok.top_via().unwrap();
    assert_eq!(via.rport, Some(Some(a.addr().port())));
    assert_eq!(via.received, Some(&b"127.0.0.1"[..]));
}

#[test]
fn ipv6_loopback() {
    let Ok(mut a) = Agent::udp("[::1]:0") else {
        eprintln!("skipping ipv6_loopback: no ::1 on this machine");
        return;
    };
    let h = TestHost::start(Mode::Suspend, |c| {
        c.sip.listen = vec!["udp:[::1]:0".into(), "tcp:[::1]:0".into()];
    });
    let to = h.addr(Transport::Udp);
    assert!(to.is_ipv6());
    let call = Call::new(&a, "v6", "sip:bob@[::1]");
    a.send(to, call.request("INVITE", &branch(), 1, None, ""))
        .unwrap();
    a.expect_status(100, None, WAIT).expect("100 over IPv6");
    let tx = h.next_suspended();
    let mut req = h.handle.t_continue(tx.index, tx.label).unwrap();
    h.handle.t_reply(&mut req, 486, "Busy Here").unwrap();
    a.expect_status(486, None, WAIT).expect("486 over IPv6");
    let mut t = Agent::tcp(h.addr(Transport::Tcp)).unwrap();
    let call = Call::new(&t, "v6-tcp", "sip:bob@[::1]");
    t.send(to, call.request("OPTIONS", &branch(), 1, None, ""))
        .unwrap();
    t.expect_status(200, None, WAIT).expect("200 over IPv6 TCP");
}

#[test]
fn shutdown_answers_suspended_with_503() {
    let mut h = TestHost::start(Mode::Suspend, |_| {});
    let to = h.addr(Transport::Udp);
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&a, "shutdown", "sip:bob@127.0.0.1");
    a.send(to, call.request("INVITE", &branch(), 1, None, ""))
        .unwrap();
    h.next_suspended();
    let host = h.host.take().unwrap();
    h.rt.block_on(host.shutdown());
    a.expect_status(503, None, WAIT).expect("503 at shutdown");
}

#[test]
fn rfc4475_torture_messages_do_not_hurt_the_host() {
    let h = TestHost::start(Mode::Answer(404), |_| {});
    let to = h.addr(Transport::Udp);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torture");
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        if e.path().extension().and_then(|x| x.to_str()) != Some("sip") {
            continue;
        }
        let data = std::fs::read(e.path()).unwrap();
        // Over UDP and over TCP (where framing may close the connection).
        let a = Agent::udp("127.0.0.1:0").unwrap();
        a.send(to, &data).unwrap();
        let t = Agent::tcp(h.addr(Transport::Tcp)).unwrap();
        let _ = t.send(to, &data);
        n += 1;
    }
    assert!(n >= 30, "torture files found: {n}");
    // Still alive and answering, over both transports.
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&a, "after-torture", "sip:bob@127.0.0.1");
    a.send(to, call.request("OPTIONS", &branch(), 1, None, ""))
        .unwrap();
    a.expect_status(200, None, WAIT)
        .expect("200 after the torture messages");
    let mut t = uac(&h, Transport::Tcp);
    let call = Call::new(&t, "after-torture-tcp", "sip:bob@127.0.0.1");
    t.send(to, call.request("MESSAGE", &branch(), 1, None, ""))
        .unwrap();
    t.expect_status(404, None, WAIT)
        .expect("404 over TCP after the torture messages");
}

#[test]
fn idle_tcp_connections_are_closed() {
    let h = TestHost::start(Mode::Suspend, |c| c.sip.tcp_idle_timeout_ms = 100);
    let mut s = std::net::TcpStream::connect(h.addr(Transport::Tcp)).unwrap();
    assert_closed(&mut s);
}

#[test]
fn tcp_connection_limit() {
    let h = TestHost::start(Mode::Suspend, |c| c.sip.max_tcp_connections = 1);
    let mut first = Agent::tcp(h.addr(Transport::Tcp)).unwrap();
    let call = Call::new(&first, "limit", "sip:bob@127.0.0.1");
    first
        .send(
            h.addr(Transport::Tcp),
            call.request("OPTIONS", &branch(), 1, None, ""),
        )
        .unwrap();
    first
        .expect_status(200, None, WAIT)
        .expect("first connection served");
    let mut second = std::net::TcpStream::connect(h.addr(Transport::Tcp)).unwrap();
    assert_closed(&mut second);
}

/// Holds the request of Call-ID "slow" until the test opens the gate;
/// answers everything else at once.
struct GateRouter {
    gate: Mutex<mpsc::Receiver<()>>,
}

impl Router for GateRouter {
    fn request(&self, host: &SipHandle, req: &mut Request) {
        if req.msg().call_id() == Ok(&b"slow"[..]) {
            let _ = self
                .gate
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(10));
        }
        let _ = host.t_reply(req, 200, "OK");
    }
}

#[test]
fn a_blocked_router_thread_does_not_stall_other_calls() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (open, gate) = mpsc::channel();
    let cfg = HostConfig {
        sip: SipConfig {
            listen: vec!["udp:127.0.0.1:0".into()],
            children: 4,
            ..SipConfig::default()
        },
        ..HostConfig::default()
    };
    let host = rt
        .block_on(SipHost::start(
            cfg,
            Arc::new(GateRouter {
                gate: Mutex::new(gate),
            }),
        ))
        .unwrap();
    let to = host.local_addrs()[0].1;
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let slow = Call::new(&a, "slow", "sip:bob@127.0.0.1");
    a.send(to, slow.request("MESSAGE", &branch(), 1, None, ""))
        .unwrap();
    for i in 0..8 {
        let c = Call::new(&a, &format!("fast-{i}"), "sip:bob@127.0.0.1");
        a.send(to, c.request("MESSAGE", &branch(), 1, None, ""))
            .unwrap();
    }
    // Calls on other router threads are answered while one is blocked.
    let fast = a
        .expect(WAIT, |m| {
            m.status() == Some(200) && m.call_id().is_ok_and(|c| c.starts_with(b"fast"))
        })
        .expect("a fast call answered while the slow one is held");
    assert!(fast.0.call_id().unwrap().starts_with(b"fast"));
    open.send(()).unwrap();
    a.expect(WAIT, |m| m.call_id() == Ok(&b"slow"[..]))
        .expect("the slow call answered once released");
    rt.block_on(host.shutdown());
}

#[test]
fn tcp_connect_failure_gives_503() {
    // A port with nothing listening: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let h = TestHost::start(
        Mode::RelayTo(format!("sip:127.0.0.1:{port};transport=tcp")),
        |_| {},
    );
    let to = h.addr(Transport::Udp);
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&a, "tcp-refused", "sip:bob@127.0.0.1");
    a.send(to, call.request("MESSAGE", &branch(), 1, None, ""))
        .unwrap();
    a.expect_status(503, None, WAIT)
        .expect("503 when the next hop refuses the connection");
}
