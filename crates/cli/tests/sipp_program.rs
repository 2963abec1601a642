//! The whole program under SIPp: SIPp UAC → evapi (Lua script) → event
//! client (the Python example client) → t_continue → relay to a SIPp UAS.
//! 1,000 calls at 100 calls/s, zero failed calls (SIPp's exit codes).
//!
//! Without `sipp` on PATH this prints a skip note and passes, unless
//! `EVAPI_REQUIRE_SIPP=1` (set by .ci/run): then it fails.

mod common;

use common::sipp::*;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const CALLS: u32 = 1000;
const RATE: u32 = 100;

const SCRIPT: &str = r#"
local cjson = require("cjson")
function ksr_request_route()
    if KSR.is_INVITE() then
        KSR.tm.t_newtran()
        local ev = cjson.encode({event = "invite", tindex = KSR.pv.get("$T(id_index)"),
            tlabel = KSR.pv.get("$T(id_label)"), callid = KSR.pv.get("$ci")})
        if KSR.evapi.async_relay(ev) < 0 then KSR.tm.t_reply(500, "Relay Failed") end
        return
    end
    -- SIPp's UAC sends the 2xx ACK and the BYE to us: pass them to the UAS.
    KSR.pv.sets("$du", KSR.pv.get("$shv(uas)"))
    KSR.tm.t_relay()
end
function ksr_evapi_event(evname)
    if evname ~= "evapi:message-received" then return end
    local a = cjson.decode(KSR.pv.get("$evapi(msg)"))
    KSR.pv.sets("$shv(uas)", a.dst)
    KSR.pv.sets("$var(dst)", a.dst)
    if KSR.tmx.t_continue(a.tindex, a.tlabel, "ksr_resume") < 0 then
        KSR.err("cannot continue " .. a.tindex .. ":" .. a.tlabel)
    end
end
function ksr_resume()
    KSR.pv.sets("$du", KSR.pv.get("$var(dst)"))
    if KSR.tm.t_relay() < 0 then KSR.tm.t_reply(500, "Relay Failed") end
end
"#;

#[test]
fn sipp_calls_suspended_answered_and_relayed() {
    if !sip::testing::sipp_available() {
        return;
    }
    let ev = Evapi::start(
        &config("").replace("level = \"debug\"", "level = \"info\""),
        SCRIPT,
    );
    let uas_port = free_udp_port();
    let uac_port = free_udp_port();
    let dir = TempDir::new("sipp");
    let uas = spawn(
        "sipp uas",
        Command::new("sipp")
            .stdout(std::fs::File::create(dir.0.join("uas.out")).unwrap())
            .current_dir(&dir.0)
            .args([
                "-sf",
                &scenario("uas.xml"),
                "-i",
                "127.0.0.1",
                "-p",
                &uas_port.to_string(),
            ])
            .args([
                "-m",
                &CALLS.to_string(),
                "-nostdin",
                "-timeout",
                "90s",
                "-timeout_error",
            ])
            .arg(ev.udp.to_string()),
    );
    let client = spawn(
        "event client",
        Command::new("python3")
            .arg(format!(
                "{}/../../examples/default/client.py",
                env!("CARGO_MANIFEST_DIR")
            ))
            .args([
                "--addr",
                &ev.events.to_string(),
                "--dst",
                &format!("sip:127.0.0.1:{uas_port}"),
            ])
            .args(["--count", &CALLS.to_string()])
            // It prints every event: nobody reads them here, and a full
            // pipe would stop it answering.
            .stdout(Stdio::null()),
    );
    ev.wait_log("client connected");
    let uac = spawn(
        "sipp uac",
        Command::new("sipp")
            .stdout(std::fs::File::create(dir.0.join("uac.out")).unwrap())
            .current_dir(&dir.0)
            .args([
                "-sf",
                &scenario("uac.xml"),
                "-i",
                "127.0.0.1",
                "-p",
                &uac_port.to_string(),
            ])
            .args([
                "-r",
                &RATE.to_string(),
                "-m",
                &CALLS.to_string(),
                "-nostdin",
            ])
            .args([
                "-timeout",
                "90s",
                "-timeout_error",
                "-trace_stat",
                "-stf",
                "uac.csv",
            ])
            .arg(ev.udp.to_string()),
    );
    let (uac_code, uac_out) = uac.finish(Duration::from_secs(100));
    let (uas_code, uas_out) = uas.finish(Duration::from_secs(30));
    let read = |f: &str| std::fs::read_to_string(dir.0.join(f)).unwrap_or_default();
    let (uac_out, uas_out) = (uac_out + &read("uac.out"), uas_out + &read("uas.out"));
    let stats = read("uac.csv");
    let problems: Vec<String> = ev
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .take(20)
        .cloned()
        .collect();
    assert_eq!(
        uac_code,
        Some(0),
        "SIPp UAC failed calls:\n{uac_out}\n{stats}\nevapi said: {problems:#?}"
    );
    assert_eq!(uas_code, Some(0), "SIPp UAS:\n{uas_out}");
    // The last line of SIPp's statistics: successful and failed calls.
    assert_eq!(
        last_stat(&stats, "SuccessfulCall(C)"),
        CALLS as u64,
        "{stats}"
    );
    assert_eq!(last_stat(&stats, "FailedCall(C)"), 0, "{stats}");
    let (client_code, client_out) = client.finish(Duration::from_secs(10));
    assert_eq!(
        client_code,
        Some(0),
        "the event client answered every call: {client_out}"
    );
}
