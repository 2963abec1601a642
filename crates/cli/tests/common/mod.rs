//! Harness for tests of the real `evapi` binary: start it with a config and
//! a script on ephemeral loopback ports, talk SIP to it over UDP and TCP,
//! and connect event clients. Every wait is bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The SIP test agent and its text readers, shared with the sip crate's
/// own tests.
#[allow(unused_imports)]
pub use sip::testing::{header, status, Agent};

/// Longest single wait.
pub const WAIT: Duration = Duration::from_secs(15);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_evapi")
}

/// A fresh folder under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("evapi-test-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A config on ephemeral ports, with `extra` appended inside `[evapi]`.
pub fn config(evapi_extra: &str) -> String {
    format!(
        r#"
[sip]
listen = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]
children = 2

[script]
file = "router.lua"

[evapi]
bind_addr = "127.0.0.1:0"
event_callback = "ksr_evapi_event"
{evapi_extra}

[tm]
fr_timer = 5000
fr_inv_timer = 5000

[log]
level = "debug"
"#
    )
}

/// A running `evapi run`.
pub struct Evapi {
    child: Child,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub events: SocketAddr,
    /// The admin HTTP listener (`None` with `[http] enabled = false`).
    pub http: Option<SocketAddr>,
    _dir: TempDir,
}

impl Evapi {
    /// Start with this config text and script text. A config without an
    /// `[http]` section gets one on an ephemeral port (the default port
    /// would be shared by tests running at once).
    pub fn start(config: &str, script: &str) -> Evapi {
        Self::start_watching(config, script, |_| {})
    }

    /// [`Evapi::start`], running `while_starting` with the log lines as
    /// they come, after the process is spawned and before it says it is
    /// running (e.g. to look at it while its script is still loading).
    pub fn start_watching(
        config: &str,
        script: &str,
        while_starting: impl FnOnce(&Arc<Mutex<Vec<String>>>),
    ) -> Evapi {
        let dir = TempDir::new("run");
        let config = if config.contains("[http]") {
            config.to_string()
        } else {
            format!("{config}\n[http]\nlisten = \"127.0.0.1:0\"\n")
        };
        let cfg = dir.write("evapi.toml", &config);
        dir.write("router.lua", script);
        Self::start_with(
            vec!["run".into(), "-c".into(), cfg.display().to_string()],
            dir,
            while_starting,
        )
    }

    /// Start `evapi run` with no arguments (the embedded default).
    pub fn start_default() -> Evapi {
        Self::start_with(vec!["run".into()], TempDir::new("default"), |_| {})
    }

    fn start_with(
        args: Vec<String>,
        dir: TempDir,
        while_starting: impl FnOnce(&Arc<Mutex<Vec<String>>>),
    ) -> Evapi {
        let mut child = Command::new(bin())
            .args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start evapi");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let watched =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| while_starting(&logs)));
        if let Err(panic) = watched {
            // Not ours to leave running: the test is failing.
            let _ = child.kill();
            let _ = child.wait();
            std::panic::resume_unwind(panic);
        }
        let deadline = Instant::now() + WAIT;
        let running = loop {
            if let Some(l) = logs
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("evapi running"))
            {
                break l.clone();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("evapi exited with {status}: {:#?}", logs.lock().unwrap());
            }
            if Instant::now() >= deadline {
                // Not ours to leave running: the test is about to fail.
                let _ = child.kill();
                let _ = child.wait();
                panic!("evapi did not start: {:#?}", logs.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let field = |prefix: &str| -> SocketAddr {
            let at = running
                .find(prefix)
                .unwrap_or_else(|| panic!("no {prefix} in {running}"));
            let rest = &running[at + prefix.len()..];
            let end = rest.find([' ', '"']).unwrap_or(rest.len());
            rest[..end]
                .parse()
                .unwrap_or_else(|e| panic!("{prefix}: {e} in {running}"))
        };
        let json = running.starts_with('{');
        Evapi {
            udp: field("udp:"),
            tcp: field("tcp:"),
            // `[log] format = "json"` writes the fields as "events":"…".
            events: field(if json { "\"events\":\"" } else { "events=" }),
            http: (!running.contains("http=off") && !running.contains("\"http\":\"off\""))
                .then(|| field(if json { "\"http\":\"" } else { "http=" })),
            child,
            logs,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Replace the script file (`router.lua` beside the config).
    pub fn write_script(&self, text: &str) {
        self._dir.write("router.lua", text);
    }

    /// Send SIGHUP to this child (reload the script).
    pub fn hangup(&self) {
        signal(self.child.id(), "HUP");
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait until `text` has been logged `n` times.
    pub fn wait_log_count(&self, text: &str, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.log_count(text) < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} log lines with {text:?}: {:#?}",
                self.logs.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait until a log line contains `text`.
    pub fn wait_log(&self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.logs.lock().unwrap().iter().find(|l| l.contains(text)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {text:?}: {:#?}",
                self.logs.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_count(&self, text: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(Instant::now() < deadline, "evapi did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status();
}

impl Drop for Evapi {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The netstring event client shared by every crate's tests.
pub use evapi::testing::BlockingClient as EventClient;

/// The shipped default script (examples/default/router.lua).
pub const DEFAULT_SCRIPT: &str = include_str!("../../../../examples/default/router.lua");

/// `evapi run` with the default script on ephemeral ports, and one event
/// client connected (connection-new has run for it).
pub fn default_script_with_client() -> (Evapi, EventClient) {
    let ev = Evapi::start(&config(""), DEFAULT_SCRIPT);
    let client = EventClient::connect(ev.events);
    ev.wait_log("event client 0 connected");
    (ev, client)
}

/// The next event, parsed as JSON.
pub fn recv_json(c: &mut EventClient) -> serde_json::Value {
    let m = c.recv().expect("an event");
    serde_json::from_str(&m).unwrap_or_else(|e| panic!("not JSON ({e}): {m}"))
}

/// Run `evapi` with `args`; (exit code, stdout, stderr).
pub fn evapi(args: &[&str], stdin: &str, cwd: &Path) -> (i32, String, String) {
    let mut child = Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("evapi {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `evapi ctl ARGS` with only `env` of our variables set: exit code,
/// stdout, stderr.
pub fn ctl(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.arg("ctl")
        .args(args)
        .env_remove("EVAPI_URL")
        .env_remove("EVAPI_HTTP_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("evapi ctl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A JSON-RPC call over the admin HTTP listener, with curl: the response.
pub fn rpc(http: SocketAddr, method: &str, params: serde_json::Value) -> serde_json::Value {
    let body = serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "15", "--data-binary"])
        .arg(body.to_string())
        .arg(format!("http://{http}/RPC"))
        .stdin(Stdio::null())
        .output()
        .expect("curl runs (Debian package curl)");
    assert!(out.status.success(), "curl: {out:?}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&out.stdout)))
}

/// A NATS application worker for the scale-out tests.
pub mod nats_worker;
pub mod promtool;

/// SIPp processes for the program's interop tests.
pub mod sipp {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// SIPp's errors logs (`-trace_err`) in `dir`, at most 4,000
    /// characters of them, for a failed test's message.
    pub fn sipp_errors(dir: &super::TempDir) -> String {
        let all = std::fs::read_dir(&dir.0)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with("_errors.log"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect::<String>();
        let (jumps, errors) = without_timeout_jumps(&all);
        let mut text: String = errors.chars().take(4000).collect();
        if jumps > 0 {
            text.push_str(&format!(
                "\n({jumps} receive timeouts that jumped to their label, as the scenario means, left out)"
            ));
        }
        text
    }

    /// SIPp's error log with its `receive timeout on message ..., jumping
    /// to label ...` entries taken out (an optional wait that timed out, as
    /// `uac_rr.xml`'s wait for a late 180 does on every call): how many
    /// there were, and the rest. SIPp ends those entries with no newline,
    /// so entries are split where a timestamp (`YYYY-MM-DD<TAB>`) starts.
    pub fn without_timeout_jumps(log: &str) -> (usize, String) {
        let b = log.as_bytes();
        let starts_entry = |i: usize| {
            b.len() >= i + 11
                && b[i + 10] == b'\t'
                && b[i..i + 10].iter().enumerate().all(|(k, c)| {
                    if k == 4 || k == 7 {
                        *c == b'-'
                    } else {
                        c.is_ascii_digit()
                    }
                })
        };
        let mut cuts: Vec<usize> = (0..b.len()).filter(|&i| starts_entry(i)).collect();
        if cuts.first() != Some(&0) {
            cuts.insert(0, 0);
        }
        cuts.push(b.len());
        let mut jumps = 0;
        let mut rest = String::new();
        for w in cuts.windows(2) {
            let entry = &log[w[0]..w[1]];
            if entry.contains("receive timeout on message") && entry.contains(", jumping to label")
            {
                jumps += 1;
            } else {
                rest.push_str(entry);
            }
        }
        (jumps, rest)
    }

    /// A free UDP port on 127.0.0.1 (for SIPp's `-p`), one that no
    /// port-0 bind can take before SIPp binds it (`sip::testing::free_port`).
    pub fn free_udp_port() -> u16 {
        sip::testing::free_port()
    }

    pub fn scenario(name: &str) -> String {
        format!("{}/../../tests/sipp/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    pub struct Proc(pub Child, &'static str);

    impl Proc {
        /// Wait at most `limit`; kill past it. Exit code and stderr.
        pub fn finish(mut self, limit: Duration) -> (Option<i32>, String) {
            let deadline = Instant::now() + limit;
            loop {
                if let Ok(Some(status)) = self.0.try_wait() {
                    let mut out = String::new();
                    if let Some(mut e) = self.0.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut out);
                    }
                    return (status.code(), out);
                }
                if Instant::now() > deadline {
                    let _ = self.0.kill();
                    let _ = self.0.wait();
                    return (None, format!("{} did not finish within {limit:?}", self.1));
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

    pub fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        Proc(
            cmd.stdin(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("start {name}: {e}")),
            name,
        )
    }

    /// A column of the last line of SIPp's `-trace_stat` CSV (`name` as
    /// in its header, e.g. "SuccessfulCall(C)"); panics naming the CSV
    /// when the column is missing.
    pub fn last_stat(csv: &str, name: &str) -> u64 {
        let header: Vec<&str> = csv.lines().next().unwrap_or("").split(';').collect();
        let last: Vec<&str> = csv.lines().last().unwrap_or("").split(';').collect();
        let i = header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} in {csv}"));
        last[i]
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a count in {csv}"))
    }
}
