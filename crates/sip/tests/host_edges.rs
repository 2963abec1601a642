//! The host over real loopback sockets at its edges: malformed input,
//! rport, IPv6, shutdown, RFC 4475 torture messages, TCP limits, and one
//! slow call beside fast ones.

mod common;

use common::*;

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
