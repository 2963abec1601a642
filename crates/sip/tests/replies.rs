//! Replies no one can forge, over loopback: a refused reply (bad code, a
//! reason carrying a header, a reply to an ACK) reaches nobody, while the
//! valid reply that follows it does.

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use sip::testing::{ack_2xx, branch, Agent, Call};
use sip::{
    HostConfig, Method, Request, Router, SipConfig, SipHandle, SipHost, TmConfig, TmError,
    Transport,
};

const WAIT: Duration = Duration::from_secs(5);

/// The attempts one request saw, in order.
type Attempts = (Method, Vec<Result<(), TmError>>);

/// Tries the forbidden replies first, then answers 200 (not to an ACK),
/// and reports what each attempt returned.
struct Refuser {
    results: Mutex<mpsc::Sender<Attempts>>,
}

impl Router for Refuser {
    fn request(&self, host: &SipHandle, req: &mut Request) {
        let method = req.msg().method().cloned().unwrap_or(Method::Options);
        let mut r = Vec::new();
        if method == Method::Ack {
            r.push(host.sl_reply(req, 200, "OK"));
            r.push(host.t_reply(req, 200, "OK"));
        } else {
            // 65736 would be 200 once narrowed to 16 bits.
            r.push(host.sl_reply(req, 65_736, "OK"));
            r.push(host.sl_reply(req, 200, "OK\r\nX-Injected: yes"));
            r.push(host.t_reply(req, 99, "Low"));
            r.push(host.t_reply(req, 700, "High"));
            r.push(host.t_reply(req, 200, "OK\nX-Injected: yes"));
            r.push(host.t_reply(req, 200, "O\0K"));
            r.push(if method == Method::Invite {
                host.t_reply(req, 200, "OK")
            } else {
                host.sl_reply(req, 200, "OK")
            });
        }
        let _ = self.results.lock().unwrap().send((method, r));
    }
}

#[test]
fn refused_replies_never_reach_the_peer() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cfg = HostConfig {
        sip: SipConfig {
            listen: vec!["udp:127.0.0.1:0".into()],
            children: 1,
            ..SipConfig::default()
        },
        // No retransmission of our 200 during the test, so the next
        // message the agent sees is always the answer to its last request.
        tm: TmConfig {
            t1: 10_000,
            t2: 10_000,
            ..TmConfig::default()
        },
        ..HostConfig::default()
    };
    let (tx, results) = mpsc::channel();
    let router = Arc::new(Refuser {
        results: Mutex::new(tx),
    });
    let host = rt.block_on(SipHost::start(cfg, router)).unwrap();
    let to = host
        .local_addrs()
        .into_iter()
        .find(|(t, _)| *t == Transport::Udp)
        .unwrap()
        .1;
    let mut a = Agent::udp("127.0.0.1:0").unwrap();

    // INVITE: the refused attempts sent nothing; the valid t_reply
    // creates the transaction (its 100 Trying) and sends the 200.
    let call = Call::new(&a, "forge-1", &format!("sip:bob@{to}"));
    a.send(to, call.request("INVITE", &branch(), 1, None, ""))
        .unwrap();
    let (trying, _) = a.recv(WAIT).expect("the 100");
    assert_eq!(trying.status(), Some(100), "{:?}", trying.buffer());
    let (ok, _) = a.recv(WAIT).expect("the 200");
    assert_eq!(ok.status(), Some(200), "{:?}", ok.buffer());
    assert_eq!(ok.reason(), Some(&b"OK"[..]));
    assert!(ok.header("X-Injected").is_none());
    let (m, r) = results.recv_timeout(WAIT).unwrap();
    assert_eq!(m, Method::Invite);
    assert_eq!(
        r,
        vec![
            Err(TmError::BadStatus { code: 65_736 }),
            Err(TmError::BadReplyText {
                what: "reason phrase",
                text: "OK\r\nX-Injected: yes".into()
            }),
            Err(TmError::BadStatus { code: 99 }),
            Err(TmError::BadStatus { code: 700 }),
            Err(TmError::BadReplyText {
                what: "reason phrase",
                text: "OK\nX-Injected: yes".into()
            }),
            Err(TmError::BadReplyText {
                what: "reason phrase",
                text: "O\0K".into()
            }),
            Ok(()),
        ]
    );

    // The ACK of that 2xx reaches the router, which cannot answer it.
    a.send(to, ack_2xx(&call, 1, &ok)).unwrap();
    let (m, r) = results.recv_timeout(WAIT).unwrap();
    assert_eq!(m, Method::Ack);
    assert_eq!(r, vec![Err(TmError::ReplyToAck), Err(TmError::ReplyToAck)]);

    // Stateless: the next message is the reply to this OPTIONS, so nothing
    // was sent for the ACK or for the refused attempts.
    let call2 = Call::new(&a, "forge-2", &format!("sip:bob@{to}"));
    a.send(to, call2.request("OPTIONS", &branch(), 1, None, ""))
        .unwrap();
    let (ok2, _) = a.recv(WAIT).expect("the OPTIONS 200");
    assert_eq!(ok2.status(), Some(200));
    assert_eq!(ok2.call_id().unwrap(), b"forge-2");
    assert!(ok2.header("X-Injected").is_none());
    let (m, r) = results.recv_timeout(WAIT).unwrap();
    assert_eq!(m, Method::Options);
    assert_eq!(r.len(), 7);
    assert!(r[..6].iter().all(Result::is_err), "{r:?}");
    assert_eq!(r[6], Ok(()));
    rt.block_on(host.shutdown());
}
