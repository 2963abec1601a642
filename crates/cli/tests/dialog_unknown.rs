//! A request inside a dialog that the dialog table does not know: the
//! dialog module refuses nothing, the script's `loose_route()` decides,
//! as with Kamailio's dialog module. Kamailio 5.6.3 (dialog, rr, tm, sl,
//! siputils, textops, app_lua) was run by hand on the same script and
//! the same three BYEs; it answered exactly what these asserts expect:
//! the two with a Route naming it (one with an unknown `did`, one without
//! any) were relayed with `is_known_dlg()` -1 (its log: "unable to find
//! dialog for BYE with route param 'abc.def'"), the one without a Route
//! got the script's 404.

mod common;

use common::*;
use std::time::Duration;

const SCRIPT: &str = r#"
function ksr_request_route()
    if KSR.siputils.has_totag() > 0 then
        local known = KSR.dialog.is_known_dlg()
        if KSR.rr.loose_route() > 0 then
            KSR.hdr.append("X-Known: " .. known .. "\r\n")
            KSR.tm.t_relay()
            return
        end
        if KSR.is_ACK() then return end
        KSR.sl.sl_send_reply(404, "No route known " .. known)
        return
    end
    KSR.sl.sl_send_reply(403, "Not here")
end
function ksr_evapi_event(ev) end
"#;

/// A BYE of a dialog nobody created, to `bob` at `uas`, with `route`.
fn bye(uac: &Agent, uas: std::net::SocketAddr, route: Option<String>, n: u32) -> String {
    let me = uac.addr();
    let route = route.map(|r| format!("Route: {r}\r\n")).unwrap_or_default();
    format!(
        "BYE sip:bob@{uas} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKunk{n};rport\r\n\
         {route}From: <sip:a@example.com>;tag=a{n}\r\nTo: <sip:b@example.com>;tag=b{n}\r\n\
         Call-ID: unknown-dialog-{n}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn an_unknown_dialog_is_left_to_the_script() {
    let config = config("").replace("[tm]", "[dialog]\n\n[tm]");
    let ev = Evapi::start(&config, SCRIPT);
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    let mut uas = Agent::udp("127.0.0.1:0").unwrap();
    let proxy = ev.udp;
    for (n, route) in [
        (1, Some(format!("<sip:{proxy};lr;did=abc.def>"))),
        (2, Some(format!("<sip:{proxy};lr>"))),
    ] {
        uac.send(proxy, bye(&uac, uas.addr(), route, n)).unwrap();
        let (msg, _) = uas
            .recv(WAIT)
            .unwrap_or_else(|| panic!("BYE {n} was not relayed"));
        let got = sip::testing::text(&msg);
        assert!(got.starts_with("BYE sip:bob@"), "{got}");
        assert!(
            got.contains(&format!("Call-ID: unknown-dialog-{n}\r\n")),
            "{got}"
        );
        assert!(got.contains("X-Known: -1\r\n"), "{got}");
        assert!(!got.contains("did=abc.def"), "our Route is removed: {got}");
        // Answer it, so no retransmission reaches the next round.
        uas.send(proxy, sip::testing::reply(&msg, 200, "OK", None))
            .unwrap();
        let (code, text) = uac.recv_status(&[], WAIT).expect("the 200 relayed back");
        assert_eq!(code, 200, "{text}");
    }
    // No Route: loose_route() is -1 and the script answers.
    uac.send(proxy, bye(&uac, uas.addr(), None, 3)).unwrap();
    let (code, text) = uac.recv_status(&[], WAIT).expect("the script's reply");
    assert_eq!(code, 404, "{text}");
    assert!(
        text.starts_with("SIP/2.0 404 No route known -1\r\n"),
        "{text}"
    );
    assert!(uas.recv_text(Duration::from_millis(300)).is_none());
}
