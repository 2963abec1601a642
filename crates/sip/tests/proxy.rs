//! The host as a record-routing proxy over loopback, with a Rust router
//! doing what Kamailio's example script does: record-route dialog-forming
//! INVITEs, loose-route in-dialog requests. Caller and callee are test
//! agents: the INVITE reaches the callee with our Record-Route, the 200
//! carries it back, the ACK, a re-INVITE and the BYE with their Route
//! header are loose-routed to the callee, a BYE from the callee goes
//! upstream, and a 200 retransmitted after the transaction ended still
//! reaches the caller (forwarded by its Via).

mod common;

use common::*;

/// Record-route initial INVITEs to their Request-URI; loose-route
/// requests with a To tag; report each in-dialog request's direction.
struct RrProxy {
    directions: Mutex<mpsc::Sender<(String, bool)>>,
}

impl Router for RrProxy {
    fn request(&self, host: &SipHandle, req: &mut Request) {
        let method = req.msg().method().cloned();
        let in_dialog = req.msg().to().is_ok_and(|t| t.tag.is_some());
        if in_dialog {
            if host.loose_route(req).code() > 0 {
                let m = String::from_utf8_lossy(method.as_ref().map_or(b"", |m| m.as_bytes()))
                    .into_owned();
                let _ = self.directions.lock().unwrap().send((m, req.is_upstream()));
                let _ = host.t_relay(req);
            } else if method != Some(Method::Ack) {
                let _ = host.sl_reply(req, 404, "Not here");
            }
            return;
        }
        if method == Some(Method::Invite) {
            req.record_route(None).unwrap();
        }
        let _ = host.t_relay(req);
    }
}

struct Proxy {
    rt: tokio::runtime::Runtime,
    host: Option<SipHost>,
    handle: SipHandle,
    directions: mpsc::Receiver<(String, bool)>,
}

impl Proxy {
    fn start() -> Proxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let mut cfg = loopback_config();
        // Transactions end fast, so a late 2xx finds none.
        cfg.tm.wait_timer = 50;
        let router = Arc::new(RrProxy {
            directions: Mutex::new(tx),
        });
        let host = rt.block_on(SipHost::start(cfg, router)).unwrap();
        let handle = host.handle();
        Proxy {
            rt,
            host: Some(host),
            handle,
            directions: rx,
        }
    }

    fn addr(&self, t: Transport) -> SocketAddr {
        self.handle
            .local_addrs()
            .into_iter()
            .find(|(tt, _)| *tt == t)
            .unwrap()
            .1
    }

    fn direction(&self) -> (String, bool) {
        self.directions
            .recv_timeout(WAIT)
            .expect("an in-dialog request")
    }

    /// Wait (bounded) until no transaction is left.
    fn wait_idle(&self) {
        for _ in 0..500 {
            if self.handle.stats().live == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("transactions left: {:?}", self.handle.stats());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(h) = self.host.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

/// The callee's answer to `req`: its Record-Route rows copied (RFC 3261
/// §12.1.1), a To tag and a Contact.
fn answer(req: &SipMessage, code: u16, callee: &Agent) -> Vec<u8> {
    let contact = format!("<sip:bob@{}>", callee.addr());
    let mut extra: Vec<(&[u8], &[u8])> = req
        .headers("Record-Route")
        .map(|v| (&b"Record-Route"[..], v))
        .collect();
    extra.push((b"Contact", contact.as_bytes()));
    req.response(code, b"OK", Some(b"callee"), &extra)
        .unwrap()
        .to_vec()
}

/// A request of the dialog from the caller: to the callee's Contact, with
/// the route set (the Record-Route of the 200, in order for the caller:
/// reversed) as Route.
fn caller_request(
    call: &Call,
    method: &str,
    cseq: u32,
    callee: &Agent,
    ok: &SipMessage,
) -> Vec<u8> {
    let mut routes: Vec<&[u8]> = ok.headers("Record-Route").collect();
    routes.reverse();
    let route = routes
        .iter()
        .map(|r| format!("Route: {}\r\n", String::from_utf8_lossy(r)))
        .collect::<String>();
    let dialog = Call {
        ruri: format!("sip:bob@{}", callee.addr()),
        ..call.clone()
    };
    let text =
        String::from_utf8(dialog.request(method, &branch(), cseq, Some("callee"), &route)).unwrap();
    // The To header keeps the dialog's remote URI (the INVITE's).
    text.replacen(
        &format!("To: <{}>", dialog.ruri),
        &format!("To: <{}>", call.ruri),
        1,
    )
    .into_bytes()
}

#[test]
fn a_dialog_follows_our_record_route() {
    let p = Proxy::start();
    let to = p.addr(Transport::Udp);
    let mut caller = Agent::udp("127.0.0.1:0").unwrap();
    let mut callee = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&caller, "rr-dialog", &format!("sip:bob@{}", callee.addr()));
    caller
        .send(to, call.request("INVITE", &branch(), 1, None, ""))
        .unwrap();
    let (inv, _) = callee.expect_request(Method::Invite, WAIT).expect("INVITE");
    let rr: Vec<_> = inv.headers("Record-Route").collect();
    let ours = format!("<sip:{to};lr;ftag=ft-rr-dialog>");
    assert_eq!(rr, [ours.as_bytes()], "our Record-Route");
    // The callee answers; the 200 carries the Record-Route back.
    callee.send(to, answer(&inv, 200, &callee)).unwrap();
    let ok = caller
        .expect_status(200, Some(Method::Invite), WAIT)
        .expect("200");
    assert_eq!(
        ok.headers("Record-Route").collect::<Vec<_>>(),
        [ours.as_bytes()]
    );
    // ACK with its Route: loose-routed to the callee, our Route gone.
    caller
        .send(to, caller_request(&call, "ACK", 1, &callee, &ok))
        .unwrap();
    let (ack, _) = callee.expect_request(Method::Ack, WAIT).expect("ACK");
    assert_eq!(ack.header("Route"), None, "our Route removed");
    assert_eq!(
        ack.request_uri_raw(),
        Some(format!("sip:bob@{}", callee.addr()).as_bytes())
    );
    assert_eq!(p.direction(), ("ACK".into(), false));

    // The transaction ends; the callee's 200 retransmission still reaches
    // the caller, forwarded by its Via.
    p.wait_idle();
    callee.send(to, answer(&inv, 200, &callee)).unwrap();
    let again = caller
        .expect_status(200, Some(Method::Invite), WAIT)
        .expect("the late 200");
    assert_eq!(again.vias().count(), 1, "our Via removed");
    assert_eq!(p.handle.stats().stateless_replies, 1);

    // A re-INVITE the same way, with its 200 and ACK.
    caller
        .send(to, caller_request(&call, "INVITE", 2, &callee, &ok))
        .unwrap();
    let (reinv, _) = callee
        .expect_request(Method::Invite, WAIT)
        .expect("re-INVITE");
    assert_eq!(reinv.header("Route"), None);
    assert_eq!(p.direction(), ("INVITE".into(), false));
    callee.send(to, answer(&reinv, 200, &callee)).unwrap();
    let ok2 = caller
        .expect_status(200, Some(Method::Invite), WAIT)
        .expect("200 to the re-INVITE");
    assert_eq!(ok2.cseq().unwrap().number, 2);
    caller
        .send(to, caller_request(&call, "ACK", 2, &callee, &ok))
        .unwrap();
    callee.expect_request(Method::Ack, WAIT).expect("ACK 2");
    assert_eq!(p.direction(), ("ACK".into(), false));

    // BYE from the caller, loose-routed; its 200 comes back.
    caller
        .send(to, caller_request(&call, "BYE", 3, &callee, &ok))
        .unwrap();
    let (bye, _) = callee.expect_request(Method::Bye, WAIT).expect("BYE");
    assert_eq!(bye.header("Route"), None);
    assert_eq!(p.direction(), ("BYE".into(), false));
    callee.send(to, reply(&bye, 200, "OK", None)).unwrap();
    caller
        .expect_status(200, Some(Method::Bye), WAIT)
        .expect("200 to BYE");
}

#[test]
fn a_bye_from_the_callee_goes_upstream() {
    let p = Proxy::start();
    let to = p.addr(Transport::Udp);
    let mut caller = Agent::udp("127.0.0.1:0").unwrap();
    let mut callee = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&caller, "rr-up", &format!("sip:bob@{}", callee.addr()));
    caller
        .send(to, call.request("INVITE", &branch(), 1, None, ""))
        .unwrap();
    let (inv, _) = callee.expect_request(Method::Invite, WAIT).expect("INVITE");
    callee.send(to, answer(&inv, 200, &callee)).unwrap();
    caller
        .expect_status(200, Some(Method::Invite), WAIT)
        .expect("200");
    // The callee's BYE: From and To swapped, to the caller's Contact, its
    // route set the Record-Route in order.
    let route = String::from_utf8_lossy(inv.header("Record-Route").unwrap()).into_owned();
    let bye = format!(
        "BYE sip:alice@{caller} SIP/2.0\r\nVia: SIP/2.0/UDP {me};rport;branch={b}\r\nMax-Forwards: 70\r\nRoute: {route}\r\nFrom: <sip:bob@x>;tag=callee\r\nTo: <sip:alice@example.com>;tag=ft-rr-up\r\nCall-ID: rr-up\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        caller = caller.addr(),
        me = callee.addr(),
        b = branch(),
    );
    callee.send(to, bye).unwrap();
    let (got, _) = caller
        .expect_request(Method::Bye, WAIT)
        .expect("BYE upstream");
    assert_eq!(got.header("Route"), None);
    assert_eq!(
        p.direction(),
        ("BYE".into(), true),
        "ftag is not the From tag"
    );
}

#[test]
fn tcp_towards_the_callee_gets_a_double_record_route() {
    let p = Proxy::start();
    let to = p.addr(Transport::Udp);
    let tcp = p.addr(Transport::Tcp);
    let mut caller = Agent::udp("127.0.0.1:0").unwrap();
    let mut callee = Agent::tcp_listen("127.0.0.1:0").unwrap();
    let call = Call::new(
        &caller,
        "rr-tcp",
        &format!("sip:bob@{};transport=tcp", callee.addr()),
    );
    caller
        .send(to, call.request("INVITE", &branch(), 1, None, ""))
        .unwrap();
    let (inv, _) = callee.expect_request(Method::Invite, WAIT).expect("INVITE");
    let rr: Vec<String> = inv
        .headers("Record-Route")
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert_eq!(
        rr,
        [
            format!("<sip:{tcp};transport=tcp;r2=on;lr;ftag=ft-rr-tcp>"),
            format!("<sip:{to};r2=on;lr;ftag=ft-rr-tcp>"),
        ]
    );
    callee.send(to, answer(&inv, 200, &callee)).unwrap();
    let ok = caller
        .expect_status(200, Some(Method::Invite), WAIT)
        .expect("200");
    // The caller's BYE names both of our Routes (UDP side first): both go.
    let bye = caller_request(&call, "BYE", 2, &callee, &ok);
    let bye = String::from_utf8(bye).unwrap().replacen(
        &format!("BYE sip:bob@{} ", callee.addr()),
        &format!("BYE sip:bob@{};transport=tcp ", callee.addr()),
        1,
    );
    caller.send(to, bye).unwrap();
    let (got, _) = callee
        .expect_request(Method::Bye, WAIT)
        .expect("BYE over TCP");
    assert_eq!(got.header("Route"), None, "both of our Routes removed");
}
