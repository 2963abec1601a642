//! Replies no one can forge, through the real binary over loopback: text
//! from an event client or a script never becomes SIP framing, a reply code
//! is a SIP status or nothing is sent, and an ACK is never answered.
//!
//! Kamailio differs here on purpose: its `t_reply`/`sl_send_reply` write a
//! reason with CR LF in it as it is (the injection these tests refuse).
//! Only the ACK case matches it: Kamailio's `sl_send_reply` returns -1 on
//! an ACK.

mod common;

use common::*;
use std::time::Duration;

/// Every message `uac` receives within `d`, as text.
fn everything_received(uac: &mut Agent, d: Duration) -> Vec<String> {
    let mut all = Vec::new();
    while let Some((text, _)) = uac.recv_text(d) {
        all.push(text);
    }
    all
}

/// An event client answers with a reason that carries a header line: the
/// shipped default script's `t_reply` is refused (-1, logged with the
/// text), the script falls back to 500, and the caller never sees the
/// injected header.
#[test]
fn an_event_clients_reason_cannot_write_headers() {
    let (ev, mut client) = default_script_with_client();
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    let invite = uac.invite(ev.udp, "forged-reason", "forged1").unwrap();
    let event = recv_json(&mut client);
    client.send(&format!(
        r#"{{"tindex":{},"tlabel":{},"code":486,"reason":"Busy\r\nX-Injected: yes"}}"#,
        event["tindex"], event["tlabel"]
    ));
    let (code, reply) = uac.recv_status(&[100], WAIT).expect("a final reply");
    assert_eq!(code, 500, "{reply}");
    assert!(
        reply.starts_with("SIP/2.0 500 Bad Answer From Event Client\r\n"),
        "{reply}"
    );
    assert!(!reply.contains("X-Injected"), "{reply}");
    uac.ack_for(ev.udp, &invite, &reply).unwrap();
    for other in everything_received(&mut uac, Duration::from_millis(300)) {
        assert!(!other.contains("X-Injected"), "{other}");
    }
    let refusal = ev.wait_log("KSR.tm.t_reply");
    assert!(
        refusal.contains("X-Injected")
            && refusal.contains("forged-reason")
            && refusal.contains("router.lua:"),
        "the log names the refused text, the call and the script line: {refusal}"
    );
}

const SL_SCRIPT: &str = r#"
function ksr_evapi_event(evname) end
function ksr_request_route()
    if KSR.is_ACK() then
        KSR.info("ack reply returned " .. KSR.sl.send_reply(200, "OK"))
        return
    end
    local r = {
        KSR.sl.send_reply(200, "OK\r\nX-Evil: 1"),
        KSR.sl.send_reply(65736, "x"),
        KSR.sl.send_reply(42, "x"),
        KSR.sl.send_reply(700, "x"),
        KSR.sl.sl_send_reply(180, "Ringing\0"),
    }
    KSR.sl.send_reply(499, "results " .. table.concat(r, " "))
end
"#;

/// A script's own bad replies: each call returns -1, logs the value, and
/// sends nothing; only the good reply after them reaches the caller.
#[test]
fn a_scripts_bad_codes_and_reasons_send_nothing() {
    let ev = Evapi::start(&config(""), SL_SCRIPT);
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    uac.invite(ev.udp, "sl-forged", "slforged").unwrap();
    let all = everything_received(&mut uac, Duration::from_millis(700));
    assert_eq!(all.len(), 1, "only the last reply was sent: {all:#?}");
    assert!(
        all[0].starts_with("SIP/2.0 499 results -1 -1 -1 -1 -1\r\n"),
        "{}",
        all[0]
    );
    assert!(!all[0].contains("X-Evil"));
    for value in ["65736", "42", "700", "X-Evil"] {
        assert!(
            ev.log_count(value) > 0,
            "the log names {value}: {:#?}",
            ev.logs.lock().unwrap()
        );
    }
}

/// An ACK never gets a reply, even when the script asks for one
/// (`sl_send_reply` returns -1, as in Kamailio).
#[test]
fn an_ack_is_never_answered() {
    let ev = Evapi::start(&config(""), SL_SCRIPT);
    let mut uac = Agent::udp("127.0.0.1:0").unwrap();
    let me = uac.addr();
    let ack = format!(
        "ACK sip:bob@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bKackforged;rport\r\n\
         From: <sip:alice@{me}>;tag=a1\r\n\
         To: <sip:bob@{to}>;tag=b1\r\n\
         Call-ID: ack-forged\r\n\
         CSeq: 1 ACK\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        to = ev.udp
    );
    uac.send(ev.udp, &ack).unwrap();
    ev.wait_log("ack reply returned -1");
    let all = everything_received(&mut uac, Duration::from_millis(500));
    assert!(all.is_empty(), "no reply to an ACK: {all:#?}");
}
