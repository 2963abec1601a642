//! The harness shared by the loopback tests: a host on ephemeral ports
//! with a test router, and agents to talk to it.

#![allow(dead_code, unused_imports)]

pub use std::io::{Read, Write};
pub use std::net::SocketAddr;
pub use std::sync::{mpsc, Arc, Mutex};
pub use std::time::Duration;

pub use sip::testing::{ack_2xx, branch, reply, Agent, Call};
pub use sip::{
    HostConfig, Method, Request, Router, SipConfig, SipHandle, SipHost, SipMessage, Source,
    Transport, TxRef,
};

pub const WAIT: Duration = Duration::from_secs(5);

/// The host closed the stream: a read sees end of file (not a timeout).
pub fn assert_closed(s: &mut std::net::TcpStream) {
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
pub enum Mode {
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

pub struct TestRouter {
    pub mode: Mode,
    pub suspended: Mutex<mpsc::Sender<TxRef>>,
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

pub struct TestHost {
    pub rt: tokio::runtime::Runtime,
    pub host: Option<SipHost>,
    pub handle: SipHandle,
    pub suspended: mpsc::Receiver<TxRef>,
}

/// A host on ephemeral loopback ports (UDP and TCP) with two router
/// threads: what these tests start from.
pub fn loopback_config() -> HostConfig {
    HostConfig {
        sip: SipConfig {
            listen: vec!["udp:127.0.0.1:0".into(), "tcp:127.0.0.1:0".into()],
            children: 2,
            ..SipConfig::default()
        },
        ..HostConfig::default()
    }
}

/// [`loopback_config`] with `children` router threads and `router`, on
/// a runtime of one worker: the runtime, the host and its UDP address.
pub fn start_with(
    children: usize,
    router: Arc<dyn Router>,
) -> (tokio::runtime::Runtime, SipHost, SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = loopback_config();
    cfg.sip.children = children;
    let host = rt.block_on(SipHost::start(cfg, router)).unwrap();
    let udp = local_addr(&host, Transport::Udp);
    (rt, host, udp)
}

/// The address `host` listens on for `t`.
pub fn local_addr(host: &SipHost, t: Transport) -> SocketAddr {
    host.local_addrs()
        .into_iter()
        .find(|(tt, _)| *tt == t)
        .unwrap()
        .1
}

impl TestHost {
    pub fn start(mode: Mode, tweak: impl FnOnce(&mut HostConfig)) -> TestHost {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let mut cfg = loopback_config();
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

    pub fn addr(&self, t: Transport) -> SocketAddr {
        local_addr(self.host.as_ref().unwrap(), t)
    }

    pub fn next_suspended(&self) -> TxRef {
        self.suspended
            .recv_timeout(WAIT)
            .expect("a suspended transaction")
    }

    /// Wait (bounded) until the stats satisfy `f`.
    pub fn wait_stats(&self, f: impl Fn(&sip::TmStats) -> bool) -> sip::TmStats {
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

pub fn uac(host: &TestHost, t: Transport) -> Agent {
    match t {
        Transport::Udp => Agent::udp("127.0.0.1:0").unwrap(),
        Transport::Tcp => Agent::tcp(host.addr(Transport::Tcp)).unwrap(),
    }
}
