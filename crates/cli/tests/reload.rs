//! SIGHUP reloads the script of the running binary: new messages run the
//! new script, a call suspended before completes under the new one, a
//! script that does not load is refused (the old one stays, the process
//! lives), and SIGTERM still stops it cleanly.

mod common;

use common::*;

/// Version `v`: OPTIONS answered with `v` in the reason; INVITEs
/// suspended with their ids sent to the event client; the client's
/// `i l` continues the call into `resume()`, which answers with `v`.
fn script(v: &str) -> String {
    format!(
        r#"
function resume() KSR.tm.t_reply(200, "resumed by {v}") end
function ksr_request_route()
    if KSR.is_OPTIONS() then
        KSR.sl.send_reply(200, "script {v}")
        return
    end
    if KSR.is_INVITE() then
        KSR.tm.t_newtran()
        KSR.evapi.async_relay(KSR.pv.get("$T(id_index)") .. " " .. KSR.pv.get("$T(id_label)"))
        return
    end
    if not KSR.is_ACK() then KSR.sl.send_reply(404, "Not Here") end
end
function ksr_evapi_event(ev)
    if ev ~= "evapi:message-received" then return end
    local i, l = KSR.pv.get("$evapi(msg)"):match("^(%d+) (%d+)$")
    KSR.tmx.t_continue(tonumber(i), tonumber(l), "resume")
end
"#
    )
}

/// The reason phrase of the 200 to one OPTIONS.
fn options(uac: &mut Agent, ev: &Evapi, n: u32) -> String {
    let me = uac.addr();
    uac.send(
        ev.udp,
        format!(
            "OPTIONS sip:ping@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKhup{n};rport\r\n\
             From: <sip:a@{me}>;tag=f{n}\r\nTo: <sip:ping@{to}>\r\nCall-ID: hup-options-{n}\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            to = ev.udp
        ),
    )
    .unwrap();
    let (code, reply) = uac.recv_status(&[], WAIT).expect("a reply to OPTIONS");
    assert_eq!(code, 200, "{reply}");
    reply.lines().next().unwrap()["SIP/2.0 200 ".len()..].to_string()
}

#[test]
fn sighup_reloads_the_script_and_keeps_calls_in_progress() {
    let mut ev = Evapi::start(&config(""), &script("v1"));
    let mut client = EventClient::connect(ev.events);
    ev.wait_log("client connected");
    let mut ua = Agent::udp("127.0.0.1:0").unwrap();
    assert_eq!(options(&mut ua, &ev, 1), "script v1");

    // A call suspended under v1.
    let mut caller = Agent::udp("127.0.0.1:0").unwrap();
    let invite = caller.invite(ev.udp, "hup-invite", "hupinv").unwrap();
    assert_eq!(caller.recv_status(&[], WAIT).unwrap().0, 100);
    let ids = client.recv().expect("the suspended call's ids");

    // A broken script: refused, logged with file and line; v1 stays.
    ev.write_script("function ksr_request_route()\n  local x = = 1\nend\n");
    ev.hangup();
    let refused = ev.wait_log("script reload refused");
    assert!(refused.contains("router.lua:2:"), "{refused}");
    assert!(refused.contains("SIGHUP"), "{refused}");
    assert!(ev.alive());
    assert_eq!(options(&mut ua, &ev, 2), "script v1");

    // v2: the next request runs it.
    ev.write_script(&script("v2"));
    ev.hangup();
    ev.wait_log("script reloaded");
    assert_eq!(options(&mut ua, &ev, 3), "script v2");

    // The call suspended under v1 completes under v2.
    client.send(&ids);
    let (code, reply) = caller.recv_status(&[100], WAIT).expect("the final reply");
    assert_eq!(code, 200, "{reply}");
    assert!(reply.starts_with("SIP/2.0 200 resumed by v2"), "{reply}");
    caller.ack_for(ev.udp, &invite, &reply).unwrap();

    // A second SIGHUP with the same file is fine too; SIGTERM still stops.
    ev.hangup();
    ev.wait_log_count("script reloaded", 2);
    assert!(ev.terminate().success());
}
