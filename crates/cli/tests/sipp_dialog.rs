//! Dialog tracking through the program, under SIPp: a Lua script that
//! calls `KSR.dialog.dlg_manage()` on each INVITE, record-routes it and
//! loose-routes in-dialog requests, with a `[dialog] event_callback` that
//! logs each event with `$dlg(h_entry)`, `$dlg(h_id)`, `$dlg(end_reason)`
//! and a `$dlg_var` set in the request route. The tests count those log
//! lines per dialog: every event exactly once.
//!
//! - 1,000 answered calls (`uac_rr.xml` hangs up, `uas_rr.xml` answers
//!   the BYE): one `dialog:start` and one `dialog:end` (reason `bye`) per
//!   call, and `dlg.list` is empty after.
//! - Refused (`uac_refused.xml` / `uas_busy.xml`, 486) and cancelled
//!   (`uac_cancel.xml` / `uas_ring_cancel.xml`) calls: one
//!   `dialog:failed` each, no start.
//! - `dlg.end_dlg` over the admin HTTP listener, and a dialog timeout set
//!   by the script with `dlg_set_timeout`: both SIPp sides
//!   (`uac_wait_bye.xml`, `uas_rr.xml`) receive a BYE and answer it
//!   (their exit code 0 says so), and the end event says why.
//!
//! SIPp is required as in `sipp_rr.rs` (skip note without it, unless
//! `EVAPI_REQUIRE_SIPP=1`); curl for the RPC calls (installed by
//! .ci/run).

mod common;

use common::sipp::*;
use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// The script, for a callee on `uas_port`. A call to `timeout` gets a
/// 1-second dialog lifetime.
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
  if KSR.is_CANCEL() then return end
  KSR.hdr.remove("Route")
  if KSR.is_INVITE() then
    if KSR.dialog.dlg_manage() < 0 then KSR.err("dlg_manage failed") end
    KSR.pv.sets("$dlg_var(caller)", KSR.pv.get("$fU"))
    if KSR.pv.get("$rU") == "timeout" then KSR.dialog.dlg_set_timeout(1) end
    KSR.rr.record_route()
  end
  KSR.pv.sets("$ru", "sip:" .. KSR.pv.get("$rU") .. "@127.0.0.1:{uas_port}")
  if KSR.tm.t_relay() < 0 then KSR.sl.sl_reply_error() end
end
function ksr_evapi_event(evname) end
function ksr_dialog_event(evname)
  KSR.info("DLGEV " .. evname .. " id=" .. KSR.pv.get("$dlg(h_entry)") .. ":" ..
    KSR.pv.get("$dlg(h_id)") .. " reason=" .. (KSR.pv.get("$dlg(end_reason)") or "-") ..
    " caller=" .. (KSR.pv.get("$dlg_var(caller)") or "-") .. " state=" ..
    KSR.pv.get("$dlg(state)") .. " .")
end
"#
    )
}

fn start(uas_port: u16) -> Evapi {
    let config = config("").replace("level = \"debug\"", "level = \"info\"")
        + "\n[dialog]\nevent_callback = \"ksr_dialog_event\"\n";
    Evapi::start(&config, &script(uas_port))
}

/// SIPp with `scenario` on `port`, `calls` calls (as a caller: at `rate`
/// per second, to `service`), giving up after `timeout_s`.
#[allow(clippy::too_many_arguments)]
fn sipp(
    dir: &TempDir,
    out: &str,
    scenario_file: &str,
    port: u16,
    target: &str,
    calls: u32,
    caller: Option<(u32, &str)>,
    timeout_s: u32,
) -> Proc {
    let mut args: Vec<String> = [
        "-sf",
        &scenario(scenario_file),
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        &calls.to_string(),
        "-nostdin",
        "-timeout",
        &format!("{timeout_s}s"),
        "-timeout_error",
        "-trace_err",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some((rate, service)) = caller {
        for a in [
            "-r",
            &rate.to_string(),
            "-s",
            service,
            "-trace_stat",
            "-stf",
        ] {
            args.push(a.to_string());
        }
        args.push(format!("{out}.csv"));
    }
    args.push(target.to_string());
    spawn(
        "sipp",
        Command::new("sipp")
            .current_dir(&dir.0)
            .stdout(std::fs::File::create(dir.0.join(out)).unwrap())
            .args(&args),
    )
}

/// Both SIPp sides ended with exit code 0 (every call as scripted).
fn both_passed(dir: &TempDir, uac: Proc, uas: Proc, limit_s: u64) {
    let (uac_code, uac_err) = uac.finish(Duration::from_secs(limit_s));
    let (uas_code, uas_err) = uas.finish(Duration::from_secs(30));
    let read = |f: &str| std::fs::read_to_string(dir.0.join(f)).unwrap_or_default();
    let errors = sipp_errors(dir);
    assert_eq!(
        uac_code,
        Some(0),
        "SIPp caller failed: {uac_err}\n{}\n{errors}",
        read("uac")
    );
    assert_eq!(
        uas_code,
        Some(0),
        "SIPp callee failed: {uas_err}\n{}\n{errors}",
        read("uas")
    );
}

/// The dialog events logged: (event, id, reason, caller, state) per line.
fn events(ev: &Evapi) -> Vec<(String, String, String, String, String)> {
    let field = |l: &str, k: &str| {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or("")
            .to_string()
    };
    ev.logs
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| {
            let rest = &l[l.find("DLGEV ")? + 6..];
            let name = rest.split_whitespace().next()?.to_string();
            Some((
                name,
                field(rest, "id="),
                field(rest, "reason="),
                field(rest, "caller="),
                field(rest, "state="),
            ))
        })
        .collect()
}

/// Wait (bounded) until `n` events named `name` were logged.
fn wait_events(ev: &Evapi, name: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while events(ev).iter().filter(|e| e.0 == name).count() < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} {name} events: {:?}",
            events(ev).len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Each dialog's events, by id.
fn by_dialog(ev: &Evapi) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for (name, id, ..) in events(ev) {
        m.entry(id).or_default().push(name);
    }
    m
}

/// `dlg.list`, waiting (bounded) until it has `n` dialogs in `state`.
fn wait_listed(http: SocketAddr, n: usize, state: Option<u64>) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = rpc(http, "dlg.list", serde_json::json!([]));
        let list = r["result"].as_array().cloned().unwrap_or_default();
        let matching = list
            .iter()
            .filter(|d| state.is_none_or(|s| d["state"] == s))
            .count();
        if matching == n && (state.is_some() || list.len() == n) {
            return list;
        }
        assert!(Instant::now() < deadline, "dlg.list never had {n}: {r}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn answered_calls_start_and_end_once_and_leave_the_table() {
    if !sip::testing::sipp_available() {
        return;
    }
    const CALLS: u32 = 1000;
    let (uas_port, uac_port) = (free_udp_port(), free_udp_port());
    let ev = start(uas_port);
    let dir = TempDir::new("sipp-dlg");
    let target = ev.udp.to_string();
    let uas = sipp(
        &dir,
        "uas",
        "uas_rr.xml",
        uas_port,
        &target,
        CALLS,
        None,
        90,
    );
    let uac = sipp(
        &dir,
        "uac",
        "uac_rr.xml",
        uac_port,
        &target,
        CALLS,
        Some((100, "bob")),
        90,
    );
    both_passed(&dir, uac, uas, 100);
    wait_events(&ev, "dialog:end", CALLS as usize);
    let all = events(&ev);
    let per = by_dialog(&ev);
    assert_eq!(per.len(), CALLS as usize, "one dialog per call");
    for (id, names) in &per {
        assert_eq!(names, &["dialog:start", "dialog:end"], "dialog {id}");
    }
    for (name, id, reason, caller, state) in &all {
        assert_eq!(caller, "sipp", "{name} {id}: $dlg_var kept with the dialog");
        match name.as_str() {
            "dialog:start" => assert_eq!((reason.as_str(), state.as_str()), ("-", "3")),
            _ => assert_eq!((reason.as_str(), state.as_str()), ("bye", "5")),
        }
    }
    let http = ev.http.expect("the HTTP listener is on");
    wait_listed(http, 0, None);
    let stats = rpc(http, "dlg.stats_active", serde_json::json!([]));
    assert_eq!(stats["result"]["all"], 0, "{stats}");
}

#[test]
fn refused_and_cancelled_calls_fail_once() {
    if !sip::testing::sipp_available() {
        return;
    }
    let dir = TempDir::new("sipp-dlg-fail");
    // The script sends every call to the callee on `uas_port`: one
    // program per run, each with its callee's port.
    let run = |uac_sf: &str, uas_sf: &str, calls: u32| {
        let (uas_port, uac_port) = (free_udp_port(), free_udp_port());
        let ev2 = start(uas_port);
        let target2 = ev2.udp.to_string();
        let uas = sipp(&dir, "uas", uas_sf, uas_port, &target2, calls, None, 60);
        let uac = sipp(
            &dir,
            "uac",
            uac_sf,
            uac_port,
            &target2,
            calls,
            Some((50, "bob")),
            60,
        );
        both_passed(&dir, uac, uas, 70);
        wait_events(&ev2, "dialog:failed", calls as usize);
        let per = by_dialog(&ev2);
        assert_eq!(per.len(), calls as usize);
        for (id, names) in &per {
            assert_eq!(names, &["dialog:failed"], "dialog {id}");
        }
        for (_, id, reason, caller, _) in events(&ev2) {
            assert_eq!(
                (reason.as_str(), caller.as_str()),
                ("failed", "sipp"),
                "{id}"
            );
        }
        wait_listed(ev2.http.unwrap(), 0, None);
    };
    run("uac_refused.xml", "uas_busy.xml", 100);
    run("uac_cancel.xml", "uas_ring_cancel.xml", 50);
}

#[test]
fn end_dlg_and_the_timeout_bye_both_sides() {
    if !sip::testing::sipp_available() {
        return;
    }
    const CALLS: u32 = 20;
    let (uas_port, uac_port) = (free_udp_port(), free_udp_port());
    let ev = start(uas_port);
    let http = ev.http.expect("the HTTP listener is on");
    let dir = TempDir::new("sipp-dlg-bye");
    let target = ev.udp.to_string();

    // Unknown ids: an error naming them.
    let r = rpc(http, "dlg.end_dlg", serde_json::json!([4095, 99999]));
    assert_eq!(r["error"]["code"], 404, "{r}");
    let msg = r["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("4095") && msg.contains("99999"), "{r}");

    // dlg.end_dlg: calls that stay up until we end them.
    let uas = sipp(
        &dir,
        "uas",
        "uas_rr.xml",
        uas_port,
        &target,
        CALLS,
        None,
        60,
    );
    let uac = sipp(
        &dir,
        "uac",
        "uac_wait_bye.xml",
        uac_port,
        &target,
        CALLS,
        Some((20, "bob")),
        60,
    );
    let up = wait_listed(http, CALLS as usize, Some(4));
    for d in &up {
        let r = rpc(
            http,
            "dlg.end_dlg",
            serde_json::json!([d["h_entry"], d["h_id"]]),
        );
        assert_eq!(r["result"], serde_json::json!({}), "{r}");
    }
    both_passed(&dir, uac, uas, 60);
    wait_events(&ev, "dialog:end", CALLS as usize);
    for (name, id, reason, ..) in events(&ev) {
        if name == "dialog:end" {
            assert_eq!(reason, "command", "{id}");
        }
    }
    wait_listed(http, 0, None);

    // The script's 1-second timeout ends calls the same way.
    let (uas_port2, uac_port2) = (free_udp_port(), free_udp_port());
    let ev2 = start(uas_port2);
    let target2 = ev2.udp.to_string();
    let uas = sipp(&dir, "uas", "uas_rr.xml", uas_port2, &target2, 10, None, 60);
    let uac = sipp(
        &dir,
        "uac",
        "uac_wait_bye.xml",
        uac_port2,
        &target2,
        10,
        Some((10, "timeout")),
        60,
    );
    both_passed(&dir, uac, uas, 60);
    wait_events(&ev2, "dialog:end", 10);
    let per = by_dialog(&ev2);
    assert_eq!(per.len(), 10);
    for (id, names) in &per {
        assert_eq!(names, &["dialog:start", "dialog:end"], "dialog {id}");
    }
    for (name, id, reason, ..) in events(&ev2) {
        if name == "dialog:end" {
            assert_eq!(reason, "timeout", "{id}");
        }
    }
    wait_listed(ev2.http.unwrap(), 0, None);
}

#[test]
fn a_reinvite_passes_and_the_call_still_ends_once() {
    if !sip::testing::sipp_available() {
        return;
    }
    const CALLS: u32 = 50;
    let (uas_port, uac_port) = (free_udp_port(), free_udp_port());
    let ev = start(uas_port);
    let dir = TempDir::new("sipp-dlg-reinvite");
    let target = ev.udp.to_string();
    let uas = sipp(
        &dir,
        "uas",
        "uas_reinvite.xml",
        uas_port,
        &target,
        CALLS,
        None,
        60,
    );
    let uac = sipp(
        &dir,
        "uac",
        "uac_reinvite.xml",
        uac_port,
        &target,
        CALLS,
        Some((25, "bob")),
        60,
    );
    both_passed(&dir, uac, uas, 70);
    wait_events(&ev, "dialog:end", CALLS as usize);
    let per = by_dialog(&ev);
    assert_eq!(per.len(), CALLS as usize);
    for (id, names) in &per {
        assert_eq!(names, &["dialog:start", "dialog:end"], "dialog {id}");
    }
    wait_listed(ev.http.unwrap(), 0, None);
}
