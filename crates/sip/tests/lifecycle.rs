//! The two-phase start over loopback: a handle that works before routing
//! starts, and a router that is dropped at shutdown even when it holds a
//! handle of its own (as a script engine does).

use std::sync::{Arc, Weak};
use std::time::Duration;

use sip::testing::{branch, Agent, Call};
use sip::{
    HostConfig, Request, Router, SipConfig, SipHandle, SipHost, TmError, TmStats, Transport,
};

const WAIT: Duration = Duration::from_secs(5);

/// Replies 200 through the handle it was built with, not the one the
/// host passes: the shape that made a reference cycle when the host
/// itself held the router.
struct Replier {
    handle: SipHandle,
}

impl Router for Replier {
    fn request(&self, _host: &SipHandle, req: &mut Request) {
        let _ = self.handle.sl_reply(req, 200, "OK");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn config() -> HostConfig {
    HostConfig {
        sip: SipConfig {
            listen: vec!["udp:127.0.0.1:0".into(), "tcp:127.0.0.1:0".into()],
            children: 2,
            ..SipConfig::default()
        },
        ..HostConfig::default()
    }
}

#[test]
fn handle_before_start_and_router_dropped_at_shutdown() {
    let rt = runtime();
    let bound = rt.block_on(SipHost::bind(config())).unwrap();
    let handle = bound.handle();
    // Usable before start: answers, and refuses what needs a transaction.
    assert_eq!(handle.stats(), TmStats::default());
    let addrs = bound.local_addrs();
    assert_eq!(addrs.len(), 2);
    assert!(addrs.iter().all(|(_, a)| a.port() != 0), "{addrs:?}");
    assert_eq!(handle.local_addrs(), addrs);
    assert_eq!(
        handle.t_continue(1, 1).unwrap_err(),
        TmError::NotSuspended { index: 1, label: 1 }
    );
    let udp = addrs
        .iter()
        .find(|(t, _)| *t == Transport::Udp)
        .map(|(_, a)| *a)
        .unwrap();

    // A request sent before start waits in the socket, and is routed once
    // the host starts.
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&a, "lifecycle-1", &format!("sip:bob@{udp}"));
    a.send(udp, call.request("OPTIONS", &branch(), 1, None, ""))
        .unwrap();
    let router = Arc::new(Replier {
        handle: bound.handle(),
    });
    let weak: Weak<Replier> = Arc::downgrade(&router);
    let host = bound.start(router).unwrap();
    assert!(a.expect_status(200, None, WAIT).is_some());

    rt.block_on(host.shutdown());
    // The router threads were the router's only owners.
    assert!(
        weak.upgrade().is_none(),
        "router still alive after shutdown"
    );
    // The handle outlives the host and still answers.
    assert_eq!(handle.stats().suspended, 0);
}

#[test]
fn bind_refuses_a_bad_setting_and_a_taken_port() {
    let rt = runtime();
    let mut bad = config();
    bad.tm.fr_timer = 0;
    let e = rt.block_on(SipHost::bind(bad)).err().unwrap();
    assert_eq!(
        e.to_string(),
        "[tm] fr_timer = 0: must be at least 1 (milliseconds)"
    );
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let entry = format!("udp:{}", taken.local_addr().unwrap());
    let mut cfg = config();
    cfg.sip.listen = vec![entry.clone()];
    let e = rt.block_on(SipHost::bind(cfg)).err().unwrap().to_string();
    assert!(e.contains(&entry), "{e}");
}
