//! Who reads the UDP socket (crates/sip/src/host/readers.rs): router
//! thread 0, alone while it keeps up; another thread when it finds a
//! backlog; and nobody wakes while the router is idle. In its own test
//! binary: it counts the context switches of the threads named
//! `sip-child-N`, which must be this test's host's alone.

mod common;

use std::collections::HashMap;

use common::*;

/// Answers every request with 200 after `dwell`, noting which thread ran
/// it by Call-ID.
struct Recorder {
    dwell: Duration,
    ran_on: Mutex<HashMap<String, String>>,
}

impl Router for Recorder {
    fn request(&self, host: &SipHandle, req: &mut Request) {
        let cid = String::from_utf8_lossy(req.msg().call_id().unwrap()).into_owned();
        let thread = std::thread::current().name().unwrap_or("?").to_string();
        self.ran_on.lock().unwrap().insert(cid, thread);
        std::thread::sleep(self.dwell);
        let _ = host.sl_reply(req, 200, "OK");
    }
}

/// Send `n` OPTIONS at once (Call-IDs `{prefix}-{i}`) and wait for every
/// 200.
fn burst(a: &mut Agent, to: SocketAddr, prefix: &str, n: usize) {
    for i in 0..n {
        let c = Call::new(a, &format!("{prefix}-{i}"), &format!("sip:bob@{to}"));
        a.send(to, c.request("OPTIONS", &branch(), 1, None, ""))
            .unwrap();
    }
    for _ in 0..n {
        a.expect_status(200, None, WAIT)
            .expect("every request answered");
    }
}

/// Voluntary context switches of each of this process's `sip-child-N`
/// threads, by name.
fn switches() -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = t.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let name = comm.trim().to_string();
        if !name.starts_with("sip-child-") {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let n = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        out.insert(name, n);
    }
    out
}

#[test]
fn thread_zero_reads_a_backlog_brings_a_helper_and_idle_threads_sleep() {
    let router = Arc::new(Recorder {
        dwell: Duration::from_millis(5),
        ran_on: Mutex::new(HashMap::new()),
    });
    let (rt, host, to) = start_with(2, Arc::clone(&router) as Arc<dyn Router>);
    let mut a = Agent::udp("127.0.0.1:0").unwrap();
    let ran_on = |prefix: &str| -> Vec<String> {
        let m = router.ran_on.lock().unwrap();
        let mut v: Vec<String> = m
            .iter()
            .filter(|(c, _)| c.starts_with(prefix))
            .map(|(_, t)| t.clone())
            .collect();
        v.sort();
        v
    };

    // Three at once, each keeping its thread 5 ms: the second and third
    // arrive while thread 0 is busy. When both threads waited on the
    // socket, thread 1 was woken for them; now they wait for thread 0.
    burst(&mut a, to, "few", 3);
    assert_eq!(ran_on("few"), vec!["sip-child-0"; 3]);

    // Forty at once: thread 0 finds a backlog and thread 1 helps.
    burst(&mut a, to, "many", 40);
    let many = ran_on("many");
    assert_eq!(many.len(), 40);
    assert!(
        many.iter().any(|t| t == "sip-child-1"),
        "no request of the backlog ran on thread 1: {many:?}"
    );

    // Idle: once the watcher has seen a quiet tick, no router thread
    // wakes up (it stops within two ticks; ten to settle on a loaded
    // machine, then five ticks watched).
    std::thread::sleep(Duration::from_millis(1000));
    let before = switches();
    std::thread::sleep(Duration::from_millis(500));
    let after = switches();
    assert_eq!(before.len(), 2, "{before:?}");
    assert_eq!(before, after, "router threads woke while idle");
    rt.block_on(host.shutdown());
}
