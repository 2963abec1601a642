//! `promtool check metrics` (Debian package `prometheus`) on a metrics
//! text, for the integration tests (`common::promtool`) and the metrics
//! unit tests (included there by path).

use std::io::Write;
use std::process::{Command, Stdio};

/// `promtool check metrics` on `text`: no complaint. Without promtool, a
/// skip note, unless `EVAPI_REQUIRE_PROMTOOL=1` (set by `.ci/run`), which
/// makes it a failure.
pub fn check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var("EVAPI_REQUIRE_PROMTOOL").as_deref() != Ok("1") => {
            eprintln!("SKIPPED promtool check: {e} (install the prometheus package; set EVAPI_REQUIRE_PROMTOOL=1 to make this fatal)");
            return;
        }
        Err(e) => panic!(
            "promtool cannot run ({e}) and EVAPI_REQUIRE_PROMTOOL=1 (apt-get install prometheus)"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\n--- input:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}
