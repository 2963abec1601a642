//! The admin HTTP listener of the real `evapi` binary, over loopback:
//! health through start and stop, JSON-RPC over `POST /RPC` (with curl),
//! the body, header and token rules, and `evapi ctl` against it.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A script with nothing to do.
const IDLE_SCRIPT: &str = "function ksr_request_route() KSR.sl.send_reply(404, \"Not Here\") end\n\
                           function ksr_evapi_event(e) end\n";

/// An HTTP answer as curl saw it.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Run curl with `args` (after `-sS -i`); its answer, 1xx heads skipped.
fn curl(args: &[&str]) -> Answer {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "15"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl runs (Debian package curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {args:?}: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rest = text.as_str();
    loop {
        let (head, body) = rest
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP head in {text:?}"));
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        if (100..200).contains(&status) {
            rest = body;
            continue;
        }
        return Answer {
            status,
            head: head.to_string(),
            body: body.to_string(),
        };
    }
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// POST `body` to /RPC.
fn rpc(addr: SocketAddr, body: &str) -> Answer {
    curl(&["--data-binary", body, &url(addr, "/RPC")])
}

fn http_of(ev: &Evapi) -> SocketAddr {
    ev.http.expect("the HTTP listener is on")
}

/// Open `fifo` for writing once its reader (the script) has opened it:
/// retried without blocking, bounded by WAIT.
fn release(fifo: &Path) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    let deadline = Instant::now() + WAIT;
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
        {
            Ok(f) => return f,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the script never opened {}: {e}",
                    fifo.display()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
}

/// The address in the listener's start-up line, once it is logged.
fn listening_addr(logs: &std::sync::Mutex<Vec<String>>) -> SocketAddr {
    let deadline = Instant::now() + WAIT;
    loop {
        let line = logs
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("admin HTTP listening"))
            .cloned();
        if let Some(line) = line {
            let at = line.find("addr=").expect("addr= in the line") + 5;
            return line[at..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
        }
        assert!(Instant::now() < deadline, "no admin HTTP line: {logs:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `/health` is 503 "starting" while the script loads (it waits on a
/// FIFO here), 200 "ok" with uptime and version once both listeners are
/// up, and 503 "stopping" while the program shuts down (an event client's
/// connection-closed callback waits on another FIFO).
#[test]
fn health_follows_start_and_stop() {
    let dir = TempDir::new("health");
    let (load_gate, stop_gate) = (dir.0.join("load"), dir.0.join("stop"));
    mkfifo(&load_gate);
    mkfifo(&stop_gate);
    let script = format!(
        r#"
local f = io.open("{load}", "r")
if f then f:close() end
function ksr_request_route() KSR.sl.send_reply(404, "Not Here") end
function ksr_evapi_event(evname)
    if evname == "evapi:connection-closed" then
        local g = io.open("{stop}", "r")
        if g then g:close() end
    end
end
"#,
        load = load_gate.display(),
        stop = stop_gate.display()
    );
    let mut loading = None;
    let mut ev = Evapi::start_watching(&config(""), &script, |logs| {
        let addr = listening_addr(logs);
        let a = curl(&[&url(addr, "/health")]);
        assert_eq!(a.status, 503, "{a:?}");
        assert_eq!(a.json()["status"], "starting", "{a:?}");
        assert_eq!(
            a.header("content-type").as_deref(),
            Some("application/json")
        );
        loading = Some(release(&load_gate));
    });
    let addr = http_of(&ev);
    let a = curl(&[&url(addr, "/health")]);
    assert_eq!(a.status, 200, "{a:?}");
    let body = a.json();
    assert_eq!(body["status"], "ok");
    assert!(body["uptime"].is_u64(), "{body}");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));

    let _client = EventClient::connect(ev.events);
    ev.wait_log("client connected conidx=0");
    drop(loading);
    signal_term(ev.pid());
    // Shutdown closes the client; its callback waits on the FIFO, so the
    // listener is still up and says so.
    let deadline = Instant::now() + WAIT;
    loop {
        let a = curl(&[&url(addr, "/health")]);
        if a.json()["status"] == "stopping" {
            assert_eq!(a.status, 503, "{a:?}");
            break;
        }
        assert_eq!(a.status, 200, "{a:?}");
        assert!(Instant::now() < deadline, "never stopping: {a:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(release(&stop_gate));
    let status = ev.terminate();
    assert!(status.success(), "{status}");
}

fn signal_term(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// JSON-RPC 2.0 through HTTP: a single call, a batch with a notification,
/// notifications only (204), and each standard error naming the problem.
#[test]
fn json_rpc_over_http() {
    let ev = Evapi::start(&config(""), IDLE_SCRIPT);
    let addr = http_of(&ev);

    let a = rpc(addr, r#"{"jsonrpc":"2.0","method":"core.version","id":7}"#);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/json")
    );
    let v = a.json();
    assert_eq!(v["id"], 7);
    let version = v["result"].as_str().unwrap();
    assert!(
        version.starts_with(&format!("evapi {} (", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );

    let a = rpc(
        addr,
        r#"[{"jsonrpc":"2.0","method":"core.uptime","id":1},
            {"jsonrpc":"2.0","method":"core.echo","params":[1]},
            {"jsonrpc":"2.0","method":"core.nosuch","id":"b"}]"#,
    );
    assert_eq!(a.status, 200, "{a:?}");
    let v = a.json();
    let answers = v.as_array().expect("a batch answer");
    assert_eq!(answers.len(), 2, "the notification gets no answer: {v}");
    assert_eq!(answers[0]["id"], 1);
    let up = &answers[0]["result"];
    assert!(
        up["now"].is_string() && up["up_since"].is_string() && up["uptime"].is_u64(),
        "{up}"
    );
    assert_eq!(answers[1]["id"], "b");
    assert_eq!(answers[1]["error"]["code"], -32601);

    for body in [
        r#"{"jsonrpc":"2.0","method":"core.echo","params":[1]}"#,
        r#"[{"jsonrpc":"2.0","method":"core.echo"},{"method":"core.uptime"}]"#,
    ] {
        let a = rpc(addr, body);
        assert_eq!(a.status, 204, "{body}: {a:?}");
        assert_eq!(a.body, "");
    }

    for (body, code, words) in [
        (r#"{"jsonrpc":"2.0","method":"#, -32700, "parse error"),
        ("[]", -32600, "empty batch"),
        (
            r#"{"jsonrpc":"2.0","method":5,"id":1}"#,
            -32600,
            "\"method\" must be a string",
        ),
        (
            r#"{"jsonrpc":"1.0","method":"core.uptime","id":1}"#,
            -32600,
            "\"jsonrpc\" must be \"2.0\"",
        ),
        (
            r#"{"jsonrpc":"2.0","method":"no.such","id":1}"#,
            -32601,
            "method not found: \"no.such\"",
        ),
        (
            r#"{"jsonrpc":"2.0","method":"system.methodHelp","params":[5],"id":1}"#,
            -32602,
            "parameter 1 (method name) must be a string, got 5",
        ),
        (
            r#"{"jsonrpc":"2.0","method":"core.uptime","params":["x"],"id":1}"#,
            -32602,
            "too many parameters",
        ),
    ] {
        let a = rpc(addr, body);
        assert_eq!(a.status, 200, "{body}: {a:?}");
        let v = a.json();
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{body}: {message}");
    }

    let a = curl(&[&url(addr, "/RPC")]);
    assert_eq!(a.status, 405, "GET /RPC: {a:?}");
    assert!(a.header("allow").unwrap().contains("POST"), "{a:?}");
    let a = curl(&["-X", "POST", &url(addr, "/health")]);
    assert_eq!(a.status, 405, "{a:?}");
    let a = curl(&[&url(addr, "/nope")]);
    assert_eq!(a.status, 404, "{a:?}");
    assert!(a.body.contains("POST /RPC"), "{a:?}");

    let a = curl(&[&url(addr, "/metrics")]);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(a.body.contains("# TYPE evapi_"), "{a:?}");
}

/// A body of exactly 1 MB is read and answered; one byte more is 413.
#[test]
fn bodies_over_one_megabyte_are_refused() {
    let ev = Evapi::start(&config(""), IDLE_SCRIPT);
    let addr = http_of(&ev);
    let dir = TempDir::new("body");
    let call = r#"{"jsonrpc":"2.0","method":"core.version","id":1}"#;
    let mut body = call.to_string();
    body.push_str(&" ".repeat(1024 * 1024 - call.len()));
    assert_eq!(body.len(), 1024 * 1024);
    let at_limit = dir.write("at-limit.json", &body);
    body.push(' ');
    let over = dir.write("over.json", &body);

    let post = |file: &Path| {
        curl(&[
            "-H",
            "Expect:",
            "--data-binary",
            &format!("@{}", file.display()),
            &url(addr, "/RPC"),
        ])
    };
    let a = post(&at_limit);
    assert_eq!(a.status, 200, "{:?}", a.head);
    assert!(a.json()["result"].is_string());
    let a = post(&over);
    assert_eq!(a.status, 413, "{:?}", a.head);
    // Chunked, without a length announced up front: refused all the same.
    let a = curl(&[
        "-H",
        "Expect:",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", over.display()),
        &url(addr, "/RPC"),
    ]);
    assert_eq!(a.status, 413, "{:?}", a.head);
    // The listener is still fine.
    assert_eq!(rpc(addr, call).status, 200);
}

/// A client that sends half a request line and then waits is closed once
/// `header_timeout_ms` passes, without an answer; so is one that sends
/// nothing. One that sends its head but not all of its body gets 408 once
/// `body_timeout_ms` passes. (No timing asserted: each read waits at most
/// WAIT.)
#[test]
fn slow_headers_and_bodies_are_cut() {
    let cfg = format!(
        "{}\n[http]\nlisten = \"127.0.0.1:0\"\nheader_timeout_ms = 200\nbody_timeout_ms = 200\n",
        config("")
    );
    let ev = Evapi::start(&cfg, IDLE_SCRIPT);
    let addr = http_of(&ev);
    for first in ["GET /hea", ""] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(first.as_bytes()).unwrap();
        let mut got = Vec::new();
        match s.read_to_end(&mut got) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("not closed by the server ({first:?}): {e}"),
        }
        assert!(
            got.is_empty(),
            "{first:?}: {}",
            String::from_utf8_lossy(&got)
        );
    }
    // A whole request still gets its answer.
    assert_eq!(curl(&[&url(addr, "/health")]).status, 200);
}

/// With `[http] token`, every path needs `Authorization: Bearer <token>`:
/// none or a wrong one is 401 with a challenge; `evapi ctl` sends it from
/// --token or EVAPI_HTTP_TOKEN.
#[test]
fn the_token_guards_every_path() {
    let cfg = format!(
        "{}\n[http]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret-Tok\"\n",
        config("")
    );
    let ev = Evapi::start(&cfg, IDLE_SCRIPT);
    let addr = http_of(&ev);
    let call = r#"{"jsonrpc":"2.0","method":"core.version","id":1}"#;
    for path in ["/RPC", "/health", "/metrics", "/nope"] {
        let a = curl(&["--data-binary", call, &url(addr, path)]);
        assert_eq!(a.status, 401, "{path}: {a:?}");
        assert_eq!(
            a.header("www-authenticate").as_deref(),
            Some("Bearer realm=\"evapi\""),
            "{path}"
        );
    }
    let a = curl(&[
        "-H",
        "Authorization: Bearer s3cret-Toc",
        "--data-binary",
        call,
        &url(addr, "/RPC"),
    ]);
    assert_eq!(a.status, 401, "{a:?}");
    assert!(a
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    let a = curl(&[
        "-H",
        "Authorization: Basic czNjcmV0LVRvaw==",
        &url(addr, "/health"),
    ]);
    assert_eq!(a.status, 401, "{a:?}");
    let a = curl(&[
        "-H",
        "Authorization: Bearer s3cret-Tok",
        "--data-binary",
        call,
        &url(addr, "/RPC"),
    ]);
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.json()["result"].is_string());
    let a = curl(&[
        "-H",
        "Authorization: Bearer s3cret-Tok",
        &url(addr, "/health"),
    ]);
    assert_eq!(a.status, 200, "{a:?}");
    ev.wait_log("401: wrong bearer token");
    assert!(
        !ev.logs.lock().unwrap().iter().any(|l| l.contains("s3cret")),
        "the token is never logged"
    );

    let u = url(addr, "/RPC");
    let (code, _, err) = ctl(&["--url", &u, "core.version"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("--token or EVAPI_HTTP_TOKEN"), "{err}");
    let (code, out, err) = ctl(&["--url", &u, "--token", "s3cret-Tok", "core.version"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("evapi "), "{out}");
    let (code, out, err) = ctl(
        &["core.version"],
        &[("EVAPI_URL", &u), ("EVAPI_HTTP_TOKEN", "s3cret-Tok")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("evapi "), "{out}");
}

/// `evapi ctl`: readable output like kamcmd, `--json` for scripts, numbers
/// sent as numbers and `s:` as strings, an RPC error on stderr with a
/// non-zero exit.
#[test]
fn ctl_calls_a_running_server() {
    let ev = Evapi::start(&config(""), IDLE_SCRIPT);
    let u = url(http_of(&ev), "/RPC");

    let (code, out, err) = ctl(&["--url", &u, "system.listMethods"], &[]);
    assert_eq!(code, 0, "{err}");
    let names: Vec<&str> = out.lines().collect();
    for m in [
        "core.echo",
        "core.uptime",
        "core.version",
        "system.listMethods",
        "system.methodHelp",
    ] {
        assert!(names.contains(&m), "{m} in {out}");
    }

    let (code, out, err) = ctl(
        &[
            "--url",
            &u,
            "--json",
            "core.echo",
            "5",
            "s:5",
            "abc",
            "-2",
            "1.5",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "[5,\"5\",\"abc\",-2,1.5]\n");

    // The parameter's type decides: a number is refused where a name is
    // wanted, the same digits as a string are looked up.
    let (code, out, err) = ctl(&["--url", &u, "system.methodHelp", "5"], &[]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("error -32602: parameter 1 (method name) must be a string, got 5"),
        "{err}"
    );
    let (code, _, err) = ctl(&["--url", &u, "system.methodHelp", "s:5"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("error 404: no method \"5\""), "{err}");

    let (code, out, err) = ctl(&["--url", &u, "core.uptime"], &[]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(lines[0], "{");
    assert!(lines[1].starts_with("\tnow: "), "{out}");
    assert!(lines[2].starts_with("\tup_since: "), "{out}");
    assert!(lines[3].starts_with("\tuptime: "), "{out}");
    assert_eq!(lines[4], "}");

    let (code, out, err) = ctl(&["--url", &u, "--json", "core.uptime"], &[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["uptime"].is_u64(), "{v}");

    let (code, out, err) = ctl(&["--url", &u, "core.nosuch"], &[]);
    assert_ne!(code, 0);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("core.nosuch: error -32601: method not found: \"core.nosuch\""),
        "{err}"
    );
}

/// With nothing listening, `evapi ctl` says so and fails.
#[test]
fn ctl_without_a_server() {
    // A free port: nothing listens on it.
    let port = sip::testing::free_port();
    let u = format!("http://127.0.0.1:{port}/RPC");
    let (code, out, err) = ctl(&["--url", &u, "core.uptime"], &[]);
    assert_ne!(code, 0);
    assert!(out.is_empty());
    assert!(
        err.contains(&format!("cannot connect to {u}: is evapi running?")),
        "{err}"
    );
    let (code, _, err) = ctl(&["--url", "https://127.0.0.1:9/RPC", "core.uptime"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("https:// is not supported"), "{err}");
}

/// An `[http] listen` that cannot be bound stops the start, naming it;
/// `enabled = false` starts no listener.
#[test]
fn listen_address_in_use_and_off() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap();
    let dir = TempDir::new("http-in-use");
    let cfg = dir.write(
        "evapi.toml",
        &format!("{}\n[http]\nlisten = \"{at}\"\n", config("")),
    );
    dir.write("router.lua", IDLE_SCRIPT);
    let (code, _, err) = evapi(&["run", "-c", &cfg.display().to_string()], "", &dir.0);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "cannot start the admin HTTP listener: cannot listen on [http] listen = \"{at}\" ({at})"
        )),
        "{err}"
    );

    let off = format!("{}\n[http]\nenabled = false\n", config(""));
    let ev = Evapi::start(&off, IDLE_SCRIPT);
    assert_eq!(ev.http, None);
    ev.wait_log("http=off");
}
