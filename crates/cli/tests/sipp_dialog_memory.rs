//! Memory back to its level after 100,000 short dialogs (issue #13).
//!
//! The program runs a record-routing script that tracks every INVITE with
//! `KSR.dialog.dlg_manage()` and loose-routes in-dialog requests; a SIPp
//! caller (`uac_rr.xml`: INVITE, ACK, BYE 200 ms later) calls a SIPp
//! callee (`uas_rr.xml`) through it.
//!
//! 1. Warm-up: [`WARM_UP`] calls at [`RATE`] calls/s, long enough for the
//!    transaction table to reach the size it keeps at that rate (every
//!    transaction stays 5 s after it ends, Kamailio's `wait_timer`), so
//!    the allocator's arenas and the tables' capacity reach their working
//!    size. Then the dialog and transaction tables are waited (bounded)
//!    to be empty and the process's memory is read: its resident set
//!    from `/proc/PID/smaps_rollup`, and the heap bytes in use (allocated
//!    and not freed) from the `core.shmmem` RPC.
//! 2. [`CALLS`] calls (100,000) at the same rate in two halves, each
//!    followed by the same wait for empty tables and a reading: the heap
//!    in use may grow by at most [`LEAK_KB`] over the second half (a leak
//!    grows it in both halves alike), and the resident set by at most
//!    [`BOUND_KB`] over the whole (the allocator keeps freed memory for
//!    reuse, so the resident set is a high-water mark, not a leak
//!    detector: see [`LEAK_KB`]).
//!
//! Every call must succeed on both SIPp sides (exit code 0 and the
//! `SuccessfulCall` count of their `-trace_stat` CSV), and the script's
//! `[dialog] event_callback` counts its events cheaply: Lua counters per
//! script thread, published with `KSR.htable.sht_seti` and read at the
//! end through `htable.dump` over the admin HTTP listener (no log line per
//! call). Every dialog gets exactly one `dialog:start` and one
//! `dialog:end`: the start and end counts equal the calls, no dialog
//! starts twice or ends without a start (a `$dlg_var` marks each), none
//! fails, and `dlg.list` is empty after. This is a resource assert, not a
//! timing assert: the rate only decides how long the test takes.
//!
//! SIPp is required as in `sipp_dialog.rs` (skip note without it, unless
//! `EVAPI_REQUIRE_SIPP=1`); curl for the RPC calls (installed by
//! .ci/run).

mod common;

use common::sipp::*;
use common::*;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// Calls per second, both phases: what SIPp and the debug-built program
/// (about 650 µs of CPU per call here) sustain with no failed call on a
/// 2-core machine. At 1,000 calls/s (two thirds of a core for the program,
/// plus both SIPp) a CI run lost some 200s to BYEs (the callee, done with
/// the call, ignored the retransmitted BYE as a dead call's: our 408); at
/// 500 the program takes a third of a core. 100,000 calls take 200 s.
const RATE: u32 = 500;
/// Most calls the caller keeps under way (SIPp's `-l`); a call lasts
/// about 0.2 s, so about 100 are at [`RATE`]. When the machine cannot
/// keep up (CI's host took half of its CPU; here, three and four busy
/// loops beside the test), SIPp waits instead of starting more calls.
/// With SIPp's default (three times the rate, 1,500) the calls piled up:
/// 500 ms retransmissions of every late INVITE and BYE, UDP receive
/// queues overflowing (`RcvbufErrors` +9,916 in one run) and 1,905 of
/// 50,000 calls failed with three busy loops. With 300: every call passed
/// with two, three and four busy loops, no datagram dropped, 100,000
/// calls in 211–299 s instead of 200.
const IN_FLIGHT: u32 = 300;
/// Warm-up calls: 10 s at [`RATE`], more than the 5 s plus the call
/// length that a transaction lives, so the tables reach the size they
/// keep at this rate.
const WARM_UP: u32 = 5_000;
/// The measured calls.
const CALLS: u32 = 100_000;
/// How much more heap (kB) may be in use after the second half of
/// [`CALLS`] than after the first: 3 MB, 60 bytes per call. This is the
/// leak detector: a leak of 100 bytes per dialog adds 5 MB in each half
/// and fails it. What may legitimately differ between the two readings:
/// the transaction table's hash maps (they keep the capacity of their
/// highest peak) and the Lua VMs' garbage (each request leaves a userdata
/// shell that the VM's collector frees only at its next cycle; the script
/// sets Lua's pause to 100 % to keep that small).
///
/// The heap in use, not the resident set: freed memory stays in glibc's
/// arenas (one per thread that allocates), so the resident set follows
/// the highest level each arena ever reached, which a rare burst can
/// raise in either half. The resident set used to be this test's
/// measure, and it rose by 3.2 and 3.9 MB over the second half in two
/// CI runs of four once the second router thread read only under a
/// backlog of 0.5 ms (most likely because that thread, and so its
/// arena, then takes work only in rare bursts); run alone on
/// that code, with one core kept busy beside it, the heap in use grew
/// by 24 kB over the second half (5,326 -> 5,350 kB) and the resident
/// set by 284 kB. The resident set stays bounded over the whole run
/// ([`BOUND_KB`]).
const LEAK_KB: u64 = 3 * 1024;
/// How much more the process may hold after all [`CALLS`] than after the
/// warm-up: 16 MB, the high-water growth measured with a debug build on
/// this 2-core machine (2026-12-01: Rss +14 MB over 100,000 calls in one
/// go; release build +7.5 MB, glibc's in-use bytes 5.0 -> 9.0 MB; the same
/// without `dlg_manage`, so not the dialog table's; heaptrack after 80,000
/// calls found live only the transaction table's hash capacity and Lua
/// userdata not yet collected) with room for a busy machine.
const BOUND_KB: u64 = 16 * 1024;

/// The script, for a callee on `uas_port`: dialog tracking, record-route,
/// loose-routing, and event counters per script thread (each has its own
/// Lua state; `vm` is a live table's address, so unique among them).
fn script(uas_port: u16) -> String {
    format!(
        r#"
collectgarbage("incremental", 100, 400)
local vm = {{}}
local vmid = tostring(vm):gsub("[^%w]", "")
local counts = {{ start = 0, ["end"] = 0, failed = 0, dup_start = 0, end_unstarted = 0 }}
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
    KSR.rr.record_route()
  end
  KSR.pv.sets("$ru", "sip:" .. KSR.pv.get("$rU") .. "@127.0.0.1:{uas_port}")
  if KSR.tm.t_relay() < 0 then KSR.sl.sl_reply_error() end
end
function ksr_evapi_event(evname) end
local function count(k)
  counts[k] = counts[k] + 1
  KSR.htable.sht_seti("dlgcount", k .. ":" .. vmid, counts[k])
end
function ksr_dialog_event(evname)
  if evname == "dialog:start" then
    if KSR.pv.get("$dlg_var(started)") then count("dup_start") end
    KSR.pv.sets("$dlg_var(started)", "1")
    count("start")
  elseif evname == "dialog:end" then
    if not KSR.pv.get("$dlg_var(started)") then count("end_unstarted") end
    count("end")
  else
    count("failed")
  end
end
"#
    )
}

/// SIPp on `port` with `scenario_file`, `calls` calls; a caller when
/// `caller` is set (at [`RATE`], to `sip:<service>@`, at most
/// [`IN_FLIGHT`] calls at once). Bounded by `-timeout`; its `-trace_stat`
/// CSV is `<out>.csv` in `dir`.
#[allow(clippy::too_many_arguments)]
fn sipp(
    dir: &TempDir,
    out: &str,
    scenario_file: &str,
    port: u16,
    target: &str,
    calls: u32,
    caller: bool,
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
        "-trace_stat",
        "-fd",
        "1",
        "-stf",
        &format!("{out}.csv"),
        // Bursts of a busy machine: a 4 MB socket buffer (as bench/).
        "-buff_size",
        "4194304",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if caller {
        for a in [
            "-r",
            &RATE.to_string(),
            "-rp",
            "1000",
            "-l",
            &IN_FLIGHT.to_string(),
            "-s",
            "bob",
        ] {
            args.push(a.to_string());
        }
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

/// SIPp ended with exit code 0 and `calls` successful calls in its CSV.
fn passed(dir: &TempDir, p: Proc, out: &str, calls: u32, limit: Duration) {
    let (code, err) = p.finish(limit);
    let read = |f: &str| std::fs::read_to_string(dir.0.join(f)).unwrap_or_default();
    let errors = sipp_errors(dir);
    let stats = read(&format!("{out}.csv"));
    assert_eq!(
        code,
        Some(0),
        "SIPp {out} failed: {err}\n{}\n{errors}",
        read(out)
    );
    assert_eq!(
        last_stat(&stats, "SuccessfulCall(C)"),
        u64::from(calls),
        "SIPp {out}"
    );
    assert_eq!(last_stat(&stats, "FailedCall(C)"), 0, "SIPp {out}");
}

/// Wait (bounded: 60 s) until no dialog and no transaction is left:
/// `dlg.stats_active` all 0, `dlg.list` empty, `tm.stats` current and
/// waiting 0.
fn wait_drained(http: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let dlg = rpc(http, "dlg.stats_active", serde_json::json!([]));
        let tm = rpc(http, "tm.stats", serde_json::json!([]));
        let list = rpc(http, "dlg.list", serde_json::json!([]));
        if dlg["result"]["all"] == 0
            && list["result"].as_array().is_some_and(|l| l.is_empty())
            && tm["result"]["current"] == 0
            && tm["result"]["waiting"] == 0
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "dialogs or transactions left 60 s after the calls: {dlg} {tm}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `(Rss, Pss, Anonymous, heap in use)` of `pid` in kB, from
/// `/proc/PID/smaps_rollup` and the `core.shmmem` RPC.
fn memory(pid: u32, http: SocketAddr) -> (u64, u64, u64, u64) {
    let heap = rpc(http, "core.shmmem", serde_json::json!([]));
    let used = heap["result"]["used"]
        .as_u64()
        .unwrap_or_else(|| panic!("no heap in use in core.shmmem: {heap}"));
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in smaps_rollup: {text}"))
    };
    (
        field("Rss:"),
        field("Pss:"),
        field("Anonymous:"),
        used / 1024,
    )
}

/// The event counts, summed over the script threads.
fn counts(http: SocketAddr) -> std::collections::BTreeMap<String, i64> {
    let r = rpc(http, "htable.dump", serde_json::json!(["dlgcount"]));
    let mut m = std::collections::BTreeMap::new();
    for entry in r["result"].as_array().into_iter().flatten() {
        for slot in entry["slot"].as_array().into_iter().flatten() {
            let name = slot["name"].as_str().unwrap_or("");
            let key = name.split(':').next().unwrap_or("").to_string();
            *m.entry(key).or_default() += slot["value"].as_i64().unwrap_or(0);
        }
    }
    m
}

#[test]
fn memory_is_back_to_its_level_after_100000_dialogs() {
    if !sip::testing::sipp_available() {
        return;
    }
    let uas_port = free_udp_port();
    // fr_timer 30 s (Kamailio's default) rather than the harness's 5 s:
    // on a machine busy with other work the callee can stall for seconds,
    // and its late 200 must still end the BYE's transaction (SIPp keeps
    // retransmitting), not our 408.
    let config = config("")
        .replace("level = \"debug\"", "level = \"info\"")
        .replace("fr_timer = 5000", "fr_timer = 30000")
        .replace("fr_inv_timer = 5000", "fr_inv_timer = 30000")
        + "\n[dialog]\nevent_callback = \"ksr_dialog_event\"\n";
    let ev = Evapi::start(&config, &script(uas_port));
    let http = ev.http.expect("the HTTP listener is on");
    let dir = TempDir::new("sipp-dlg-mem");
    let target = ev.udp.to_string();
    // One callee for both phases; each phase its own caller. SIPp's
    // -timeout bounds each (the phases take 10 s and twice 100 s at RATE).
    let uas = sipp(
        &dir,
        "uas",
        "uas_rr.xml",
        uas_port,
        &target,
        WARM_UP + CALLS,
        false,
        400,
    );
    let warm = sipp(
        &dir,
        "warm",
        "uac_rr.xml",
        free_udp_port(),
        &target,
        WARM_UP,
        true,
        60,
    );
    passed(&dir, warm, "warm", WARM_UP, Duration::from_secs(70));
    wait_drained(http);
    let before = memory(ev.pid(), http);
    let started = Instant::now();
    // The measured calls in two halves, with a reading after each once the
    // tables are drained: a leak grows the same in both halves; a
    // high-water mark (allocator arenas, hash capacity) is reached in the
    // first and stays.
    let mut readings = vec![before];
    for half in ["first", "second"] {
        let calls = sipp(
            &dir,
            half,
            "uac_rr.xml",
            free_udp_port(),
            &target,
            CALLS / 2,
            true,
            200,
        );
        passed(&dir, calls, half, CALLS / 2, Duration::from_secs(210));
        wait_drained(http);
        readings.push(memory(ev.pid(), http));
    }
    passed(&dir, uas, "uas", WARM_UP + CALLS, Duration::from_secs(30));
    let took = started.elapsed();
    let (mid, after) = (readings[1], readings[2]);
    let n = counts(http);
    eprintln!(
        "{CALLS} calls at {RATE}/s in {took:?}; memory (Rss, Pss, Anonymous, heap in use kB) after \
         {WARM_UP} warm-up calls {before:?}, after half of {CALLS} more {mid:?}, after \
         all {after:?}; events {n:?}"
    );
    let total = i64::from(WARM_UP + CALLS);
    let get = |k: &str| n.get(k).copied().unwrap_or(0);
    assert_eq!(get("start"), total, "one dialog:start per call: {n:?}");
    assert_eq!(get("end"), total, "one dialog:end per call: {n:?}");
    assert_eq!(get("failed"), 0, "no dialog failed: {n:?}");
    assert_eq!(get("dup_start"), 0, "no dialog started twice: {n:?}");
    assert_eq!(get("end_unstarted"), 0, "no end without a start: {n:?}");
    assert!(
        after.3 <= mid.3 + LEAK_KB,
        "the heap in use grew by {} kB over the second {} calls (bound {LEAK_KB} kB): \
         {before:?} -> {mid:?} -> {after:?}",
        after.3 as i64 - mid.3 as i64,
        CALLS / 2
    );
    assert!(
        after.0 <= before.0 + BOUND_KB,
        "Rss grew by {} kB over {CALLS} calls (bound {BOUND_KB} kB): {before:?} -> {mid:?} -> \
         {after:?}",
        after.0 as i64 - before.0 as i64
    );
}
