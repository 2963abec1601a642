//! Interop with SIPp (Debian package `sip-tester`): 1,000 calls at 100
//! calls/s through the host, relayed to a SIPp UAS, and suspended for a
//! second then continued. Zero failed calls is the bar (SIPp's exit code).
//!
//! Without `sipp` on PATH the tests print a skip note and pass, unless
//! `EVAPI_REQUIRE_SIPP=1` is set: then they fail, so CI cannot pass
//! silently without SIPp.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use sip::{Method, Request, Router, SipHandle, SipHost, Transport, TxRef};

const CALLS: u32 = 1000;
const RATE: u32 = 100;

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/sipp")
        .join(name)
}

fn free_tcp_port() -> u16 {
    sip::testing::free_port()
}

fn free_udp_port() -> u16 {
    sip::testing::free_port()
}

fn sipp(args: &[String]) -> Child {
    Command::new("sipp")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sipp")
}

/// Wait for a SIPp we started, at most `limit`; kill it (by its handle)
/// past that. Returns its exit code and output.
fn finish(mut child: Child, limit: Duration) -> (Option<i32>, String) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !matches!(child.try_wait(), Ok(Some(_))) {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("sipp output");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// A loopback host with two router threads, and its address for
/// `transport`.
fn start_host(
    router: Arc<dyn Router>,
    transport: Transport,
) -> (tokio::runtime::Runtime, SipHost, SocketAddr) {
    let (rt, host, _) = common::start_with(2, router);
    let addr = common::local_addr(&host, transport);
    (rt, host, addr)
}

fn uac_args(target: SocketAddr, transport: Transport) -> Vec<String> {
    let t = match transport {
        Transport::Udp => "u1",
        Transport::Tcp => "t1",
    };
    // An explicit free port: without -p SIPp binds 5060, and over TCP it
    // gives up at once when that port is busy (or held in TIME_WAIT).
    let port = match transport {
        Transport::Udp => free_udp_port(),
        Transport::Tcp => free_tcp_port(),
    };
    [
        "-t",
        t,
        "-p",
        &port.to_string(),
        "-sf",
        scenario("uac.xml").to_str().unwrap(),
        "-i",
        "127.0.0.1",
        "-r",
        &RATE.to_string(),
        "-m",
        &CALLS.to_string(),
        "-l",
        "1000",
        "-nostdin",
        "-timeout",
        "40s",
        "-timeout_error",
        &target.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Relays everything to the SIPp UAS.
struct RelayRouter {
    uas: String,
}

impl Router for RelayRouter {
    fn request(&self, host: &SipHandle, req: &mut Request) {
        req.set_dst_uri(Some(&self.uas)).unwrap();
        if let Err(e) = host.t_relay(req) {
            eprintln!("relay failed: {e}");
        }
    }
}

#[test]
fn sipp_relay_uac_host_uas() {
    relay_run(Transport::Udp);
}

/// The caller over TCP (one connection for every call), the callee over UDP.
#[test]
fn sipp_relay_tcp_uac_host_udp_uas() {
    relay_run(Transport::Tcp);
}

fn relay_run(uac_transport: Transport) {
    if !sip::testing::sipp_available() {
        return;
    }
    let uas_port = free_udp_port();
    let uas = sipp(
        &[
            "-sf",
            scenario("uas.xml").to_str().unwrap(),
            "-i",
            "127.0.0.1",
            "-p",
            &uas_port.to_string(),
            "-m",
            &CALLS.to_string(),
            "-nostdin",
            "-timeout",
            "45s",
            "-timeout_error",
        ]
        .map(String::from),
    );
    std::thread::sleep(Duration::from_millis(300));
    let (rt, host, addr) = start_host(
        Arc::new(RelayRouter {
            uas: format!("sip:127.0.0.1:{uas_port}"),
        }),
        uac_transport,
    );
    let uac = sipp(&uac_args(addr, uac_transport));
    let (uac_code, uac_out) = finish(uac, Duration::from_secs(45));
    let (uas_code, uas_out) = finish(uas, Duration::from_secs(10));
    let stats = host.handle().stats();
    rt.block_on(host.shutdown());
    eprintln!("host stats: {stats:?}");
    assert_eq!(uac_code, Some(0), "SIPp UAC failed:\n{uac_out}");
    assert_eq!(uas_code, Some(0), "SIPp UAS failed:\n{uas_out}");
    assert!(stats.relayed >= u64::from(CALLS) * 2, "{stats:?}");
}

/// Suspends INVITEs; a timer thread continues each after 1 s and
/// answers 200. BYE is answered 200; ACK is taken.
struct SuspendRouter {
    due: Mutex<mpsc::Sender<(Instant, TxRef)>>,
}

impl Router for SuspendRouter {
    fn request(&self, host: &SipHandle, req: &mut Request) {
        match req.msg().method() {
            Some(Method::Invite) => match host.t_suspend(req) {
                Ok(t) => {
                    let at = Instant::now() + Duration::from_secs(1);
                    let _ = self.due.lock().unwrap().send((at, t));
                }
                Err(e) => eprintln!("suspend failed: {e}"),
            },
            Some(Method::Ack) => {}
            _ => {
                let _ = host.t_reply(req, 200, "OK");
            }
        }
    }
}

#[test]
fn sipp_calls_suspended_one_second_then_continued() {
    if !sip::testing::sipp_available() {
        return;
    }
    let (tx, rx) = mpsc::channel::<(Instant, TxRef)>();
    let (rt, host, addr) = start_host(
        Arc::new(SuspendRouter {
            due: Mutex::new(tx),
        }),
        Transport::Udp,
    );
    let handle = host.handle();
    // The continuer: entries arrive in due order (constant delay), so a
    // FIFO is a timer queue. Ends when the router (its sender) is gone or
    // after a bounded idle period.
    let continuer = std::thread::spawn(move || {
        let mut done = 0u32;
        while let Ok((at, t)) = rx.recv_timeout(Duration::from_secs(5)) {
            if let Some(d) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            match handle.t_continue(t.index, t.label) {
                Ok(mut req) => {
                    if handle.t_reply(&mut req, 200, "OK").is_ok() {
                        done += 1;
                    }
                }
                Err(e) => eprintln!("continue failed: {e}"),
            }
            if done == CALLS {
                break;
            }
        }
        done
    });
    let uac = sipp(&uac_args(addr, Transport::Udp));
    let (uac_code, uac_out) = finish(uac, Duration::from_secs(45));
    let stats = host.handle().stats();
    rt.block_on(host.shutdown());
    let done = continuer.join().unwrap();
    eprintln!("host stats: {stats:?}, continued and answered: {done}");
    assert_eq!(uac_code, Some(0), "SIPp UAC failed:\n{uac_out}");
    assert_eq!(done, CALLS);
    assert_eq!(stats.suspended, 0);
}
