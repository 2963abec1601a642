//! The host over real loopback sockets, driven by the test agent:
//! suspend / continue / reply, relay to a test UAS, retransmissions,
//! CANCEL and timeouts.

mod common;

use common::*;

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

/// The timer task sleeps until the earliest deadline; a transaction that
/// comes later with a sooner one must wake it. Here the INVITE's timer is
/// a minute away: a MESSAGE's 408 that waited for it would come long
/// after `WAIT`.
#[test]
fn a_sooner_timer_wakes_the_sleeping_timer_task() {
    let h = TestHost::start(Mode::Suspend, |c| {
        c.tm.fr_inv_timer = 60_000;
        c.tm.fr_timer = 200;
    });
    let to = h.addr(Transport::Udp);
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&a, "far-timer", "sip:bob@127.0.0.1");
    a.send(to, call.request("INVITE", &branch(), 1, None, ""))
        .unwrap();
    h.next_suspended();
    // Let the timer task settle on the INVITE's deadline.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let m = Call::new(&a, "near-timer", "sip:bob@127.0.0.1");
    a.send(to, m.request("MESSAGE", &branch(), 1, None, ""))
        .unwrap();
    h.next_suspended();
    a.expect_status(408, Some(Method::Message), WAIT)
        .expect("the MESSAGE's 408 at its own deadline, not the INVITE's");
    assert_eq!(h.handle.stats().suspended, 1, "the INVITE still waits");
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

/// The host's counters over real sockets: requests by method, replies
/// received and sent by class, where each came from.
#[test]
fn counts_requests_and_replies_by_class() {
    let mut uas = Agent::udp("127.0.0.1:0").unwrap();
    let h = TestHost::start(Mode::Relay(uas.addr(), None), |_| {});
    let to = h.addr(Transport::Udp);
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&a, "counted", "sip:bob@127.0.0.1");
    // OPTIONS: a stateless 200.
    a.send(to, call.request("OPTIONS", &branch(), 1, None, ""))
        .unwrap();
    a.expect_status(200, Some(Method::Options), WAIT)
        .expect("200 to OPTIONS");
    // INVITE: our 100, relayed; 180 and 486 from the UAS forwarded.
    let invite = call.request("INVITE", &branch(), 2, None, "");
    a.send(to, &invite).unwrap();
    a.expect_status(100, None, WAIT).expect("100");
    let (inv, from) = uas.expect_request(Method::Invite, WAIT).unwrap();
    uas.send(from, reply(&inv, 180, "Ringing", Some("u")))
        .unwrap();
    uas.send(from, reply(&inv, 486, "Busy", Some("u"))).unwrap();
    let (code, busy) = a.recv_status(&[100, 180], WAIT).expect("486");
    assert_eq!(code, 486);
    let invite = String::from_utf8(invite).unwrap();
    a.ack_for(to, &invite, &busy).unwrap();
    let s = h.wait_stats(|s| s.requests[1] == 1);
    let slot = |m: &str| sip::COUNTED_METHODS.iter().position(|x| *x == m).unwrap();
    assert_eq!(s.requests[slot("OPTIONS")], 1, "{s:?}");
    assert_eq!(s.requests[slot("INVITE")], 1);
    assert_eq!(s.requests[slot("ACK")], 1);
    assert_eq!(s.requests.iter().sum::<u64>(), 3);
    assert_eq!(s.replies_received, [1, 0, 0, 1, 0, 0], "180 and 486");
    assert_eq!(s.replies_stateless, [0, 1, 0, 0, 0, 0], "200 to OPTIONS");
    assert_eq!(s.replies_local, [1, 0, 0, 0, 0, 0], "100 Trying");
    assert_eq!(s.replies_relayed, [1, 0, 0, 1, 0, 0], "180 and 486");
    assert_eq!(s.replies_sent(), [2, 1, 0, 1, 0, 0]);
    assert_eq!(s.finals, [0, 0, 0, 1, 0, 0]);
}
