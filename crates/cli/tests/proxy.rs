//! The real binary as a record-routing proxy, with a Lua script in the
//! manner of Kamailio's example: `KSR.rr.record_route()` for INVITEs,
//! `KSR.rr.loose_route()` for requests in a dialog, a branch route that
//! marks each branch, a reply route that drops 183s. Caller and callee are
//! test agents on loopback.

mod common;

use common::*;
use sip::testing::{branch, Call};
use sip::{Method, SipMessage};
use std::time::Duration;

const SCRIPT: &str = r#"
function ksr_request_route()
  if KSR.is_OPTIONS() then KSR.info("via as received: " .. KSR.pv.get("$hdr(Via)")) end
  if KSR.siputils.has_totag() > 0 then
    if KSR.rr.loose_route() > 0 then
      KSR.info("loose-routed " .. KSR.pv.get("$rm") .. " upstream=" .. KSR.rr.is_direction("upstream"))
      KSR.tm.t_relay()
      return
    end
    if KSR.is_ACK() then return end
    KSR.sl.sl_send_reply(404, "Not here")
    return
  end
  KSR.hdr.remove("Route")
  if KSR.is_INVITE() then KSR.rr.record_route() end
  if KSR.tm.t_is_set("branch_route") < 0 then KSR.tm.t_on_branch("ksr_branch") end
  if KSR.tm.t_is_set("onreply_route") < 0 then KSR.tm.t_on_reply("ksr_onreply") end
  if KSR.tm.t_relay() < 0 then KSR.sl.sl_reply_error() end
end

function ksr_branch()
  KSR.hdr.append("X-Branch: " .. KSR.pv.get("$T_branch_idx") .. "\r\n")
  KSR.rr.add_rr_param(";br=" .. KSR.pv.get("$T_branch_idx"))
end

function ksr_onreply()
  KSR.info("onreply " .. KSR.pv.get("$T_reply_code") .. " " .. KSR.pv.get("$T_reply_reason")
    .. " branch " .. KSR.pv.get("$T_branch_idx"))
  if KSR.tm.t_check_status("^183$") > 0 then KSR.x.drop() end
end

function ksr_evapi_event(evname) end
"#;

fn proxy() -> Evapi {
    let cfg = config("")
        .replace(
            "fr_inv_timer = 5000",
            "fr_inv_timer = 5000\nwait_timer = 50",
        )
        .replace("children = 2", "children = 2\nalias = [\"proxy.test\"]");
    Evapi::start(&cfg, SCRIPT)
}

/// The callee's reply to `req`, its Record-Route copied, with a To tag and
/// a Contact.
fn answer(req: &SipMessage, code: u16, reason: &str, callee: &Agent) -> Vec<u8> {
    let contact = format!("<sip:bob@{}>", callee.addr());
    let mut extra: Vec<(&[u8], &[u8])> = req
        .headers("Record-Route")
        .map(|v| (&b"Record-Route"[..], v))
        .collect();
    extra.push((b"Contact", contact.as_bytes()));
    req.response(code, reason.as_bytes(), Some(b"callee"), &extra)
        .unwrap()
        .to_vec()
}

/// A request of the dialog from the caller, with `route` as its Route.
fn in_dialog(call: &Call, method: &str, cseq: u32, callee: &Agent, route: &str) -> Vec<u8> {
    let text = String::from_utf8(call.request(
        method,
        &branch(),
        cseq,
        Some("callee"),
        &format!("Route: {route}\r\n"),
    ))
    .unwrap();
    text.replacen(
        &format!("{method} {} ", call.ruri),
        &format!("{method} sip:bob@{} ", callee.addr()),
        1,
    )
    .into_bytes()
}

#[test]
fn a_lua_script_record_routes_and_loose_routes_a_dialog() {
    let ev = proxy();
    let to = ev.udp;
    let mut caller = Agent::udp("127.0.0.1:0").unwrap();
    let mut callee = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&caller, "lua-rr", &format!("sip:bob@{}", callee.addr()));
    caller
        .send(to, call.request("INVITE", &branch(), 1, None, ""))
        .unwrap();
    let (inv, _) = callee.expect_request(Method::Invite, WAIT).expect("INVITE");
    // The branch route ran on the branch: its header and rr parameter.
    assert_eq!(inv.header("X-Branch"), Some(&b"0"[..]));
    let rr = String::from_utf8_lossy(inv.header("Record-Route").unwrap()).into_owned();
    assert_eq!(rr, format!("<sip:{to};lr;ftag=ft-lua-rr;br=0>"));
    // 183 is dropped by the reply route, 180 and 200 go through.
    callee
        .send(to, answer(&inv, 183, "Session Progress", &callee))
        .unwrap();
    callee
        .send(to, answer(&inv, 180, "Ringing", &callee))
        .unwrap();
    caller
        .expect_status(180, Some(Method::Invite), WAIT)
        .expect("180");
    ev.wait_log("onreply 183 Session Progress branch 0");
    ev.wait_log("onreply 180 Ringing branch 0");
    assert!(
        caller
            .expect(Duration::ZERO, |m| m.status() == Some(183))
            .is_none(),
        "the 183 was dropped (it came before the 180)"
    );
    callee.send(to, answer(&inv, 200, "OK", &callee)).unwrap();
    let ok = caller
        .expect_status(200, Some(Method::Invite), WAIT)
        .expect("200");
    assert_eq!(
        ok.header("Record-Route").map(<[u8]>::to_vec),
        Some(rr.clone().into_bytes())
    );
    // ACK and BYE with the route set: loose-routed, our Route removed.
    caller
        .send(to, in_dialog(&call, "ACK", 1, &callee, &rr))
        .unwrap();
    let (ack, _) = callee.expect_request(Method::Ack, WAIT).expect("ACK");
    assert_eq!(ack.header("Route"), None);
    ev.wait_log("loose-routed ACK upstream=-1");
    // The transaction ends (wait_timer 50 ms); the callee's 200
    // retransmission still reaches the caller by its Via. Bounded: resent
    // until the binary says it forwarded one with no transaction.
    let mut forwarded = false;
    for _ in 0..50 {
        callee.send(to, answer(&inv, 200, "OK", &callee)).unwrap();
        caller
            .expect_status(200, Some(Method::Invite), WAIT)
            .expect("the 200 again");
        if ev.log_count("forwarding reply with no transaction by its Via") > 0 {
            forwarded = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(forwarded, "a 200 forwarded statelessly");
    caller
        .send(to, in_dialog(&call, "BYE", 2, &callee, &rr))
        .unwrap();
    let (bye, _) = callee.expect_request(Method::Bye, WAIT).expect("BYE");
    assert_eq!(bye.header("Route"), None);
    assert_eq!(bye.header("X-Branch"), None, "no branch route armed");
    callee
        .send(to, sip::testing::reply(&bye, 200, "OK", None))
        .unwrap();
    caller
        .expect_status(200, Some(Method::Bye), WAIT)
        .expect("200 to BYE");
}

#[test]
fn a_route_naming_an_alias_is_ours() {
    let ev = proxy();
    let caller = Agent::udp("127.0.0.1:0").unwrap();
    let mut callee = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&caller, "lua-alias", &format!("sip:bob@{}", callee.addr()));
    caller
        .send(
            ev.udp,
            in_dialog(
                &call,
                "OPTIONS",
                5,
                &callee,
                "<sip:proxy.test;lr;ftag=ft-lua-alias>",
            ),
        )
        .unwrap();
    let (opt, _) = callee
        .expect_request(Method::Options, WAIT)
        .expect("OPTIONS loose-routed to the callee");
    assert_eq!(opt.header("Route"), None);
    // A Route that is not ours is the next hop, kept in the request.
    let mut other = Agent::udp("127.0.0.1:0").unwrap();
    caller
        .send(
            ev.udp,
            in_dialog(
                &call,
                "OPTIONS",
                6,
                &callee,
                &format!("<sip:{};lr>", other.addr()),
            ),
        )
        .unwrap();
    let (fwd, _) = other
        .expect_request(Method::Options, WAIT)
        .expect("OPTIONS to the foreign Route");
    assert_eq!(
        fwd.header("Route"),
        Some(format!("<sip:{};lr>", other.addr()).as_bytes())
    );
}

#[test]
fn hdr_via_reads_the_via_as_it_arrived() {
    let ev = proxy();
    let caller = Agent::udp("127.0.0.1:0").unwrap();
    let mut callee = Agent::udp("127.0.0.1:0").unwrap();
    let call = Call::new(&caller, "lua-via", &format!("sip:bob@{}", callee.addr()));
    // rport asked for: the host fills it in (and adds received) for the
    // replies and the relay, but the script sees the Via as sent.
    let options = String::from_utf8(call.request("OPTIONS", "z9hG4bKvia1", 1, None, ""))
        .unwrap()
        .replacen(";branch=z9hG4bKvia1", ";rport;branch=z9hG4bKvia1", 1);
    caller.send(ev.udp, options).unwrap();
    let (fwd, _) = callee
        .expect_request(Method::Options, WAIT)
        .expect("OPTIONS relayed");
    let theirs = fwd.vias().nth(1).unwrap().unwrap();
    assert_eq!(theirs.rport, Some(Some(caller.addr().port())));
    let line = ev.wait_log("via as received: ");
    assert!(
        line.contains(&format!(
            "SIP/2.0/UDP {};rport;branch=z9hG4bKvia1",
            caller.addr()
        )),
        "{line}"
    );
    assert!(!line.contains("rport="), "{line}");
}
