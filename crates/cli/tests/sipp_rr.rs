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

use common::*;
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scenario(name: &str) -> String {
    format!("{}/../../tests/sipp/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A SIPp we started: killed (by its handle) on drop.
struct Proc(Child);

impl Proc {
    /// Wait at most `limit`; kill past it. The exit code.
    fn finish(mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sipp(dir: &TempDir, out: &str, args: &[String]) -> Proc {
    Proc(
        Command::new("sipp")
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.0.join(out)).unwrap())
            .stderr(Stdio::null())
            .args(args)
            .spawn()
            .expect("start sipp"),
    )
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
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let uas = sipp(
        &dir,
        "uas.out",
        &args(&[
            "-sf",
            &scenario("uas_rr.xml"),
            "-i",
            "127.0.0.1",
            "-p",
            &uas_port.to_string(),
            "-m",
            &CALLS.to_string(),
            "-nostdin",
            "-timeout",
            "90s",
            "-timeout_error",
            &target,
        ]),
    );
    let uac = sipp(
        &dir,
        "uac.out",
        &args(&[
            "-sf",
            &scenario("uac_rr.xml"),
            "-i",
            "127.0.0.1",
            "-p",
            &uac_port.to_string(),
            "-r",
            &RATE.to_string(),
            "-m",
            &CALLS.to_string(),
            "-nostdin",
            "-timeout",
            "90s",
            "-timeout_error",
            "-trace_stat",
            "-stf",
            "uac.csv",
            "-trace_err",
            &target,
        ]),
    );
    let uac_code = uac.finish(Duration::from_secs(100));
    let uas_code = uas.finish(Duration::from_secs(30));
    let read = |f: &str| std::fs::read_to_string(dir.0.join(f)).unwrap_or_default();
    let errors: String = std::fs::read_dir(&dir.0)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_errors.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>()
        .chars()
        .take(4000)
        .collect();
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
    let header: Vec<&str> = csv.lines().next().unwrap_or("").split(';').collect();
    let last: Vec<&str> = csv.lines().last().unwrap_or("").split(';').collect();
    let col = |name: &str| {
        let i = header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} in {csv}"));
        last[i].parse::<u64>().unwrap()
    };
    assert_eq!(col("SuccessfulCall(C)"), u64::from(CALLS), "{csv}");
    assert_eq!(col("FailedCall(C)"), 0, "{csv}");
}
