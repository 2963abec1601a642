//! The program as a record-routing proxy under SIPp: 1,000 calls with BYE
//! at 100 calls/s from `tests/sipp/uac_rr.xml` (which follows Record-Route:
//! ACK and BYE go to the callee's Contact with the route set as Route)
//! through a Lua script that record-routes INVITEs and loose-routes
//! in-dialog requests, to `tests/sipp/uas_rr.xml` (which returns the
//! Record-Route in its replies). Zero failed calls (SIPp's exit codes).
//!
//! Without `sipp` on PATH this prints a skip note and passes, unless
//! `EVAPI_REQUIRE_SIPP=1` (set by .ci/run): then it fails.

mod common;

use common::sipp::*;
use common::*;
use std::process::Command;
use std::time::Duration;

const CALLS: u32 = 1000;
const RATE: u32 = 100;

/// The script, for a callee on `uas_port`.
fn script(uas_port: u16) -> String {
    format!(
        r#"
function ksr_request_route()
  if KSR.siputils.has_totag() > 0 then
    if KSR.rr.loose_route() > 0 then
      if KSR.tm.t_relay() < 0 then KSR.sl.sl_reply_error() end
      return
    end
    if KSR.is_ACK() then return end
    KSR.sl.sl_send_reply(404, "Not here")
    return
  end
  KSR.hdr.remove("Route")
  if KSR.is_INVITE() then KSR.rr.record_route() end
  KSR.pv.sets("$ru", "sip:" .. KSR.pv.get("$rU") .. "@127.0.0.1:{uas_port}")
  if KSR.tm.t_relay() < 0 then KSR.sl.sl_reply_error() end
end
function ksr_evapi_event(evname) end
"#
    )
}

/// SIPp with `args`, its output in `dir/out`.
fn sipp(dir: &TempDir, out: &str, args: &[String]) -> Proc {
    spawn(
        "sipp",
        Command::new("sipp")
            .current_dir(&dir.0)
            .stdout(std::fs::File::create(dir.0.join(out)).unwrap())
            .args(args),
    )
}

/// SIPp callee (`uas_rr.xml` on `uas_port`) and caller (`uac_rr.xml` on
/// `uac_port`, `rate` calls/s, statistics in `dir/uac.csv`), `calls` calls
/// each, through `target`; each gives up after `timeout_s`.
fn rr_pair(
    dir: &TempDir,
    target: &str,
    (uas_port, uac_port): (u16, u16),
    calls: u32,
    rate: u32,
    timeout_s: u32,
) -> (Proc, Proc) {
    let (calls, timeout) = (calls.to_string(), format!("{timeout_s}s"));
    let common = |scenario_file: &str, port: u16| -> Vec<String> {
        [
            "-sf",
            &scenario(scenario_file),
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            &calls,
            "-nostdin",
            "-timeout",
            &timeout,
            "-timeout_error",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let uas = sipp(
        dir,
        "uas.out",
        &[common("uas_rr.xml", uas_port), vec![target.into()]].concat(),
    );
    let mut uac_args = common("uac_rr.xml", uac_port);
    for a in [
        "-r",
        &rate.to_string(),
        "-trace_stat",
        "-stf",
        "uac.csv",
        "-trace_err",
        target,
    ] {
        uac_args.push(a.to_string());
    }
    let uac = sipp(dir, "uac.out", &uac_args);
    (uas, uac)
}

#[test]
fn sipp_calls_follow_our_record_route() {
    if !sip::testing::sipp_available() {
        return;
    }
    let uas_port = free_udp_port();
    let uac_port = free_udp_port();
    let ev = Evapi::start(
        &config("").replace("level = \"debug\"", "level = \"info\""),
        &script(uas_port),
    );
    let dir = TempDir::new("sipp-rr");
    let target = ev.udp.to_string();
    let (uas, uac) = rr_pair(&dir, &target, (uas_port, uac_port), CALLS, RATE, 90);
    let (uac_code, _) = uac.finish(Duration::from_secs(100));
    let (uas_code, _) = uas.finish(Duration::from_secs(30));
    let read = |f: &str| std::fs::read_to_string(dir.0.join(f)).unwrap_or_default();
    let errors = sipp_errors(&dir);
    assert_eq!(
        uac_code,
        Some(0),
        "SIPp UAC failed:\n{}\n{errors}",
        read("uac.out")
    );
    assert_eq!(uas_code, Some(0), "SIPp UAS failed:\n{}", read("uas.out"));
    // The last line of SIPp's statistics: every call succeeded. A BYE
    // that was not loose-routed would get 404 and fail its call.
    let csv = read("uac.csv");
    assert_eq!(
        last_stat(&csv, "SuccessfulCall(C)"),
        u64::from(CALLS),
        "{csv}"
    );
    assert_eq!(last_stat(&csv, "FailedCall(C)"), 0, "{csv}");
}

/// The README tour's relay answer, whole: the shipped default script
/// suspends each INVITE, an event client answers `{"dst": ...}`, and the
/// call (INVITE, ACK, BYE) goes from a SIPp caller to a SIPp callee
/// through us, the ACK and BYE loose-routed by the Record-Route the
/// default script adds. 200 calls at 50 calls/s, none failed.
#[test]
fn readme_tour_relay_gives_whole_calls() {
    if !sip::testing::sipp_available() {
        return;
    }
    const TOUR_CALLS: u32 = 200;
    let (ev, mut client) = default_script_with_client();
    let uas_port = free_udp_port();
    let uac_port = free_udp_port();
    let answering = std::thread::spawn(move || {
        let mut answered = 0;
        while answered < TOUR_CALLS {
            let Some(text) = client.recv() else { break };
            let e: serde_json::Value = serde_json::from_str(&text).unwrap();
            client.send(&format!(
                r#"{{"tindex":{},"tlabel":{},"dst":"sip:127.0.0.1:{uas_port}"}}"#,
                e["tindex"], e["tlabel"]
            ));
            answered += 1;
        }
        answered
    });
    let dir = TempDir::new("sipp-tour");
    let target = ev.udp.to_string();
    let (uas, uac) = rr_pair(&dir, &target, (uas_port, uac_port), TOUR_CALLS, 50, 60);
    let (uac_code, _) = uac.finish(Duration::from_secs(70));
    let (uas_code, _) = uas.finish(Duration::from_secs(20));
    let read = |f: &str| std::fs::read_to_string(dir.0.join(f)).unwrap_or_default();
    assert_eq!(
        uac_code,
        Some(0),
        "SIPp UAC failed:\n{}\n{}",
        read("uac.out"),
        sipp_errors(&dir)
    );
    assert_eq!(uas_code, Some(0), "SIPp UAS failed:\n{}", read("uas.out"));
    let csv = read("uac.csv");
    assert_eq!(
        last_stat(&csv, "SuccessfulCall(C)"),
        u64::from(TOUR_CALLS),
        "{csv}"
    );
    assert_eq!(answering.join().expect("the event client"), TOUR_CALLS);
}

/// The error text a failed SIPp run shows leaves out the by-design timeout
/// jumps (`uac_rr.xml` logs one per call), which used to fill it and hide
/// the error that failed the call. SIPp writes those entries with no
/// newline; the sample is as its log has them.
#[test]
fn sipp_error_text_leaves_out_the_timeout_jumps() {
    let log = "2026-12-03\t05:25:49.276213\t1796275549.276213: Call-Id: 1-21802@127.0.0.1, receive timeout on message evapi uac rr:5, jumping to label 7\
2026-12-03\t05:25:49.276417\t1796275549.276417: Call-Id: 2-21802@127.0.0.1, receive timeout on message evapi uac rr:5, jumping to label 7\
2026-12-03\t05:28:15.636233\t1796275695.636233: Aborting call on unexpected message for Call-Id '49786-21944@127.0.0.1': while expecting '200' (index 8), received 'SIP/2.0 408 Request Timeout\n\
CSeq: 2 BYE\n'\n\
2026-12-03\t05:28:16.000000\t1796275696.000000: Call-Id: 3-21802@127.0.0.1, receive timeout on message evapi uac rr:5, jumping to label 7";
    let (jumps, rest) = without_timeout_jumps(log);
    assert_eq!(jumps, 3);
    assert!(rest.starts_with("2026-12-03\t05:28:15.636233"), "{rest}");
    assert!(rest.contains("408 Request Timeout"), "{rest}");
    assert!(rest.ends_with("CSeq: 2 BYE\n'\n"), "{rest:?}");
    assert_eq!(
        without_timeout_jumps("plain text"),
        (0, "plain text".into())
    );
}
