//! Record-Route building and loose routing on requests, no sockets.

use super::*;
use crate::message::SipMessage;
use crate::request::Source;

const US: &str = "127.0.0.1:5060";

fn req(ruri: &str, to_tag: bool, extra: &str) -> Request {
    let to = if to_tag { ";tag=tb" } else { "" };
    let text = format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: <sip:alice@a>;tag=fa\r\nTo: <sip:bob@b>{to}\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    Request::new(
        SipMessage::parse(Bytes::from(text)).unwrap(),
        Source {
            transport: Transport::Udp,
            remote: "127.0.0.1:5070".parse().unwrap(),
            local: US.parse().unwrap(),
            conn: None,
        },
    )
}

fn myself(host: &str, port: Option<u16>) -> bool {
    host == "127.0.0.1" && port.is_none_or(|p| p == 5060) || host == "proxy.example"
}

/// The request as relayed from `out` (None: the incoming socket).
fn relayed(r: &Request, out: Option<(Transport, SocketAddr)>) -> SipMessage {
    SipMessage::parse(r.serialize_for_relay("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx", out))
        .unwrap()
}

fn rows(m: &SipMessage, name: &str) -> Vec<String> {
    m.headers(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[test]
fn record_route_names_the_incoming_socket_with_lr_and_ftag() {
    let mut r = req(
        "sip:bob@10.0.0.7",
        false,
        "Record-Route: <sip:upstream.example;lr>\r\n",
    );
    r.add_rr_param(";nat=yes").unwrap();
    r.record_route(None).unwrap();
    r.add_rr_param(";x=1").unwrap();
    assert!(r.is_record_routed());
    let m = relayed(&r, Some((Transport::Udp, US.parse().unwrap())));
    assert_eq!(
        rows(&m, "Record-Route"),
        [
            "<sip:127.0.0.1:5060;lr;ftag=fa;nat=yes;x=1>",
            "<sip:upstream.example;lr>"
        ]
    );
    // Only once per request, as Kamailio ("double attempt").
    assert!(r.record_route(None).is_err());
    assert!(r.record_route_preset("10.0.0.1", None).is_err());
    // Not asked for: none added.
    let plain = req("sip:bob@10.0.0.7", false, "");
    assert!(rows(&relayed(&plain, None), "Record-Route").is_empty());
}

#[test]
fn another_outgoing_socket_gets_a_double_record_route() {
    let mut r = req("sip:bob@10.0.0.7", false, "");
    r.record_route(Some(";p=1")).unwrap();
    let m = relayed(&r, Some((Transport::Tcp, US.parse().unwrap())));
    assert_eq!(
        rows(&m, "Record-Route"),
        [
            "<sip:127.0.0.1:5060;transport=tcp;r2=on;lr;ftag=fa;p=1>",
            "<sip:127.0.0.1:5060;r2=on;lr;ftag=fa;p=1>"
        ]
    );
    let m = relayed(&r, Some((Transport::Udp, "[::1]:5062".parse().unwrap())));
    assert_eq!(
        rows(&m, "Record-Route")[0],
        "<sip:[::1]:5062;r2=on;lr;ftag=fa;p=1>"
    );
}

#[test]
fn preset_record_routes_take_the_given_addresses() {
    let mut r = req("sip:bob@10.0.0.7", false, "");
    r.record_route_preset("out.example:5080;r2=on", Some("10.0.0.1;r2=on"))
        .unwrap();
    r.add_rr_param(";a=b").unwrap();
    let m = relayed(&r, None);
    assert_eq!(
        rows(&m, "Record-Route"),
        [
            "<sip:out.example:5080;r2=on;ftag=fa;a=b;lr>",
            "<sip:10.0.0.1;r2=on;ftag=fa;a=b;lr>"
        ]
    );
}

#[test]
fn script_text_cannot_break_the_header() {
    let mut r = req("sip:bob@10.0.0.7", false, "");
    for bad in [
        ";a=b\r\nX-Injected: 1",
        ";a=b\n",
        ";a\0",
        "nat=yes",
        ";",
        ";a>,<sip:evil",
        ";a b",
    ] {
        assert!(r.add_rr_param(bad).is_err(), "{bad:?}");
        assert!(r.record_route(Some(bad)).is_err(), "{bad:?}");
    }
    for bad in ["10.0.0.1>\r\nX: y", "a b", "", "10.0.0.1\0", "h>,<sip:x"] {
        assert!(r.record_route_preset(bad, None).is_err(), "{bad:?}");
        assert!(
            r.record_route_preset("ok.example", Some(bad)).is_err(),
            "{bad:?}"
        );
    }
    assert!(!r.is_record_routed());
}

#[test]
fn no_route_is_not_loose_routed() {
    let mut r = req("sip:bob@10.0.0.7", true, "");
    assert_eq!(r.loose_route(&myself), LooseRoute::NotDriven);
    assert_eq!(LooseRoute::NotDriven.code(), -1);
    assert_eq!(r.dst_uri(), None);
}

#[test]
fn our_route_is_removed_and_the_next_becomes_the_destination() {
    let mut r = req(
        "sip:bob@10.0.0.7:5080",
        true,
        "Route: <sip:127.0.0.1:5060;lr;ftag=fa;nat=yes>, <sip:10.0.0.9:5090;lr>\r\nRoute: <sip:10.0.0.10;lr>\r\n",
    );
    let out = r.loose_route(&myself);
    assert_eq!(out, LooseRoute::Driven);
    assert_eq!(out.code(), 1);
    assert_eq!(r.dst_uri(), Some("sip:10.0.0.9:5090;lr"));
    assert_eq!(r.ruri(), b"sip:bob@10.0.0.7:5080");
    assert_eq!(r.routed_params(), Some(";lr;ftag=fa;nat=yes"));
    assert!(!r.is_upstream());
    let m = relayed(&r, None);
    assert_eq!(
        rows(&m, "Route"),
        ["<sip:10.0.0.9:5090;lr>", "<sip:10.0.0.10;lr>"]
    );
    // $hdr(Route) still reads the message as received.
    assert_eq!(
        r.header("Route"),
        Some(&b"<sip:127.0.0.1:5060;lr;ftag=fa;nat=yes>, <sip:10.0.0.9:5090;lr>"[..])
    );
}

#[test]
fn our_last_route_leaves_the_request_uri_as_target() {
    let mut r = req(
        "sip:bob@10.0.0.7:5080",
        true,
        "Route: <sip:proxy.example;lr>\r\n",
    );
    assert_eq!(r.loose_route(&myself), LooseRoute::Driven);
    assert_eq!(r.dst_uri(), None);
    assert!(rows(&relayed(&r, None), "Route").is_empty());
    // Preloaded (no To tag): Kamailio's -3.
    let mut r = req(
        "sip:bob@10.0.0.7:5080",
        false,
        "Route: <sip:127.0.0.1;lr>\r\n",
    );
    assert_eq!(r.loose_route(&myself), LooseRoute::Preloaded);
    assert_eq!(LooseRoute::Preloaded.code(), -3);
    assert!(rows(&relayed(&r, None), "Route").is_empty());
}

#[test]
fn a_double_record_route_of_ours_goes_whole() {
    let mut r = req(
        "sip:bob@10.0.0.7:5080",
        true,
        "Route: <sip:127.0.0.1:5060;transport=tcp;r2=on;lr;ftag=fa>\r\nRoute: <sip:127.0.0.1:5060;r2=on;lr;ftag=fa>\r\nRoute: <sip:10.0.0.9;lr>\r\n",
    );
    assert_eq!(r.loose_route(&myself), LooseRoute::Driven);
    assert_eq!(r.dst_uri(), Some("sip:10.0.0.9;lr"));
    assert_eq!(rows(&relayed(&r, None), "Route"), ["<sip:10.0.0.9;lr>"]);
}

#[test]
fn a_foreign_top_route_is_the_destination() {
    let mut r = req("sip:bob@10.0.0.7", true, "Route: <sip:10.0.0.9;lr>\r\n");
    assert_eq!(r.loose_route(&myself), LooseRoute::Driven);
    assert_eq!(r.dst_uri(), Some("sip:10.0.0.9;lr"));
    assert_eq!(r.routed_params(), None);
    assert_eq!(rows(&relayed(&r, None), "Route"), ["<sip:10.0.0.9;lr>"]);
}

#[test]
fn a_strict_next_hop_gets_the_request_uri() {
    let mut r = req(
        "sip:bob@10.0.0.7",
        true,
        "Route: <sip:127.0.0.1;lr>, <sip:10.0.0.9>, <sip:10.0.0.10;lr>\r\n",
    );
    assert_eq!(r.loose_route(&myself), LooseRoute::Driven);
    assert_eq!(r.ruri(), b"sip:10.0.0.9");
    assert_eq!(r.dst_uri(), None);
    assert_eq!(
        rows(&relayed(&r, None), "Route"),
        ["<sip:10.0.0.10;lr>", "<sip:bob@10.0.0.7>"]
    );
}

#[test]
fn after_a_strict_router_the_last_route_is_the_target() {
    // The previous hop put our Route into the Request-URI and the real
    // target at the end of the route set.
    let mut r = req(
        "sip:127.0.0.1:5060;lr;ftag=zz",
        true,
        "Route: <sip:10.0.0.9:5090;lr>, <sip:bob@10.0.0.7:5080>\r\n",
    );
    assert_eq!(r.loose_route(&myself), LooseRoute::Driven);
    assert_eq!(r.ruri(), b"sip:bob@10.0.0.7:5080");
    assert_eq!(r.dst_uri(), Some("sip:10.0.0.9:5090;lr"));
    assert_eq!(r.routed_params(), Some(";lr;ftag=zz"));
    // ftag is not the From tag: this request goes upstream.
    assert!(r.is_upstream());
    let m = relayed(&r, None);
    assert_eq!(rows(&m, "Route"), ["<sip:10.0.0.9:5090;lr>"]);
    assert_eq!(m.request_uri_raw(), Some(&b"sip:bob@10.0.0.7:5080"[..]));
}

#[test]
fn upstream_requests_record_the_to_tag() {
    let mut r = req(
        "sip:alice@10.0.0.5",
        true,
        "Route: <sip:127.0.0.1;lr;ftag=tb>\r\n",
    );
    assert_eq!(r.loose_route(&myself), LooseRoute::Driven);
    // From tag "fa", ftag "tb": callee to caller.
    assert!(r.is_upstream());
    r.record_route(None).unwrap();
    assert_eq!(
        rows(&relayed(&r, None), "Record-Route"),
        ["<sip:127.0.0.1:5060;lr;ftag=tb>"]
    );
}

#[test]
fn removing_route_after_loose_routing_removes_the_rest() {
    let mut r = req(
        "sip:bob@10.0.0.7",
        true,
        "Route: <sip:127.0.0.1;lr>, <sip:10.0.0.9;lr>\r\n",
    );
    assert_eq!(r.loose_route(&myself), LooseRoute::Driven);
    assert_eq!(r.remove_header("Route"), 1);
    assert!(rows(&relayed(&r, None), "Route").is_empty());
    // Nothing left to route on.
    assert_eq!(r.loose_route(&myself), LooseRoute::NotDriven);
}

#[test]
fn a_bad_route_changes_nothing() {
    let mut r = req(
        "sip:bob@10.0.0.7",
        true,
        "Route: <sip:127.0.0.1;lr>, garbage\r\n",
    );
    assert!(matches!(r.loose_route(&myself), LooseRoute::Error(_)));
    assert_eq!(r.dst_uri(), None);
    assert_eq!(r.routed_params(), None);
}
