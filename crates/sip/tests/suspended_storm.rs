//! Thousands of distinct suspended transactions that are never continued:
//! every one ends by its timer with a 408, and none leaks (the live and
//! suspended counts return to zero).

use sip::testing::{branch, Agent, Call};
use sip::{HostConfig, Request, Router, SipConfig, SipHandle, SipHost, TmConfig, Transport};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The host's UDP receive-buffer drops so far (`RcvbufErrors` in
/// /proc/net/snmp; 0 where it cannot be read).
fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Suspends every INVITE and forgets it.
struct SuspendAll;

impl Router for SuspendAll {
    fn request(&self, host: &SipHandle, req: &mut Request) {
        if req.msg().method() == Some(&sip::Method::Invite) {
            host.t_suspend(req).expect("suspend");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_suspended_transactions_end_by_timer() {
    const CALLS: usize = 2000;
    let config = HostConfig {
        sip: SipConfig {
            listen: vec!["udp:127.0.0.1:0".into()],
            children: 2,
            ..SipConfig::default()
        },
        tm: TmConfig {
            fr_inv_timer: 500,
            fr_timer: 500,
            wait_timer: 200,
            // A short T1 keeps Timer H (64 × T1, how long an un-ACKed 408
            // lingers over UDP) at 6.4 s instead of 32 s.
            t1: 100,
            t2: 400,
        },
        ..HostConfig::default()
    };
    let host = SipHost::start(config, Arc::new(SuspendAll)).await.unwrap();
    let to = host
        .local_addrs()
        .into_iter()
        .find(|(t, _)| *t == Transport::Udp)
        .unwrap()
        .1;
    let handle = host.handle();
    let seen = handle.clone();
    let result = tokio::task::spawn_blocking(move || {
        // 2,000 408s and their retransmissions arrive in bursts (the
        // table's timers tick every 10 ms). Once in CI (2026-12-02) 9 of
        // them never arrived within 30 s; not seen again in 13 runs alone,
        // four at once, or beside CPU hogs. The likely cause is this
        // agent's default receive buffer overflowing while the host held
        // its thread back: what is tested is the table, not the agent's
        // socket, so it gets room, and the host's UDP drops are named in
        // the message if it fails again.
        let mut agent = Agent::udp_with_buffer("127.0.0.1:0", 4 << 20).unwrap();
        let drops0 = udp_rcvbuf_errors();
        let mut finals = HashSet::new();
        // Windows of 100 INVITEs, each answered 100 Trying at once; the 408s
        // come later, by timer.
        for w in 0..CALLS / 100 {
            for i in 0..100 {
                let call = Call::new(
                    &agent,
                    &format!("storm-{}", w * 100 + i),
                    "sip:bob@127.0.0.1",
                );
                agent
                    .send(to, call.request("INVITE", &branch(), 1, None, ""))
                    .unwrap();
            }
            let mut trying = 0;
            while trying < 100 {
                let (m, _) = agent
                    .recv(Duration::from_secs(10))
                    .expect("replies in time");
                match m.status() {
                    Some(100) => trying += 1,
                    Some(408) => {
                        finals.insert(m.call_id().unwrap().to_vec());
                    }
                    other => panic!("unexpected reply {other:?}"),
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while finals.len() < CALLS {
            assert!(
                Instant::now() < deadline,
                "{} of {CALLS} got their 408 (UDP receive-buffer drops on this host meanwhile: {}; \
                 the table: {:?})",
                finals.len(),
                udp_rcvbuf_errors().saturating_sub(drops0),
                seen.stats()
            );
            if let Some((m, _)) = agent.recv(Duration::from_secs(5)) {
                if m.status() == Some(408) {
                    finals.insert(m.call_id().unwrap().to_vec());
                }
            }
        }
        finals.len()
    })
    .await
    .unwrap();
    assert_eq!(result, CALLS, "every suspended call ended with 408");
    let stats = handle.stats();
    assert!(stats.timeouts >= CALLS as u64, "{stats:?}");
    // The 408s are not ACKed here, so each lingers until its retransmission
    // timers give up; then the table is empty.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = handle.stats();
        if s.live == 0 && s.suspended == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "transactions leaked: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    host.shutdown().await;
}
