use super::super::testing::{request, Vm};
use sip::{Request, SipMessage, Source};

/// An in-dialog request (To tag) from 192.0.2.1:5061 with `extra` rows.
pub(crate) fn in_dialog(method: &str, extra: &str) -> Request {
    let raw = format!(
        "{method} sip:bob@192.0.2.20:5070 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5061;branch=z9hG4bK1\r\n\
         From: <sip:alice@a.example>;tag=ft1\r\n\
         To: <sip:bob@example.com>;tag=tt1\r\n\
         Call-ID: cid-1\r\n\
         CSeq: 43 {method}\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    );
    Request::new(
        SipMessage::parse(bytes::Bytes::from(raw)).unwrap(),
        Source {
            transport: sip::Transport::Udp,
            remote: "192.0.2.1:5061".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        },
    )
}

#[test]
fn record_route_and_its_params_reach_the_relayed_branch() {
    let vm = Vm::new();
    let mut req = request("INVITE", "");
    let r = vm.in_request(&mut req, |vm| {
        vm.eval::<(i64, i64, i64, i64, i64)>(
            r#"KSR.rr.add_rr_param(";nat=yes"), KSR.rr.record_route(), KSR.rr.record_route(),
               KSR.rr.add_rr_param("bad"), KSR.rr.add_rr_param(";x=1\r\nX-Injected: y")"#,
        )
    });
    assert_eq!(r, (1, 1, -1, -1, -1));
    assert!(req.is_record_routed());
    let preset = vm.in_request(&mut request("INVITE", ""), |vm| {
        vm.eval::<(i64, i64, i64)>(
            r#"KSR.rr.record_route_preset("10.0.0.1:5060>\r\nX: y"),
               KSR.rr.record_route_preset("out.example;r2=on", "10.0.0.1;r2=on"),
               KSR.rr.record_route_params(";p=1")"#,
        )
    });
    assert_eq!(preset, (-1, 1, -1));
    // Outside a request route: -1.
    assert_eq!(vm.eval::<i64>("KSR.rr.record_route()"), -1);
}

#[test]
fn loose_route_removes_our_route_and_sets_the_destination() {
    let vm = Vm::new();
    // To tag: in dialog. The fake host is 127.0.0.1:5060 and proxy.test.
    let mut req = in_dialog(
        "BYE",
        "Route: <sip:proxy.test;lr;ftag=ft1;nat=yes>, <sip:10.0.0.9:5080;lr>\r\n",
    );
    let r = vm.in_request(&mut req, |vm| {
        vm.eval::<(i64, String, i64, i64, i64, i64, i64)>(
            r#"KSR.rr.loose_route(), KSR.pv.get("$du"), KSR.rr.check_route_param("nat=yes"),
               KSR.rr.check_route_param("NAT=YES$"), KSR.rr.check_route_param("nat=no"),
               KSR.rr.is_direction("downstream"), KSR.rr.is_direction("upstream")"#,
        )
    });
    assert_eq!(r, (1, "sip:10.0.0.9:5080;lr".into(), 1, 1, -1, 1, -1));
    // $hdr(Route) still shows the Route as received.
    let mut req = in_dialog("BYE", "Route: <sip:127.0.0.1:5060;lr;ftag=other>\r\n");
    let r = vm.in_request(&mut req, |vm| {
        vm.eval::<(i64, String, i64, i64)>(
            r#"KSR.rr.loose_route(), KSR.pv.get("$hdr(Route)"),
               KSR.rr.is_direction("upstream"), KSR.rr.is_direction("sideways")"#,
        )
    });
    assert_eq!(r, (1, "<sip:127.0.0.1:5060;lr;ftag=other>".into(), 1, -1));
}

#[test]
fn loose_route_codes_are_kamailios() {
    let vm = Vm::new();
    let mut none = request("BYE", "");
    let r = vm.in_request(&mut none, |vm| {
        vm.eval::<(i64, i64)>(r#"KSR.rr.loose_route(), KSR.rr.check_route_param(".")"#)
    });
    assert_eq!(r, (-1, -1));
    // The test request has no To tag: a preloaded Route to us alone.
    let mut pre = request("INVITE", "Route: <sip:192.0.2.10;lr>\r\n");
    let r = vm.in_request(&mut pre, |vm| vm.eval::<i64>("KSR.rr.loose_route()"));
    assert_eq!(r, -3);
    let mut pre = request("INVITE", "Route: <sip:192.0.2.10;lr>\r\n");
    let r = vm.in_request(&mut pre, |vm| {
        vm.eval::<i64>("KSR.rr.loose_route_preloaded()")
    });
    assert_eq!(r, 1);
    let mut bad = in_dialog("BYE", "Route: garbage\r\n");
    let r = vm.in_request(&mut bad, |vm| vm.eval::<i64>("KSR.rr.loose_route()"));
    assert_eq!(r, -1);
}
