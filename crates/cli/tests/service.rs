//! Running as a service, through the real binary: `[log] format = "json"`
//! (every stderr line one JSON object), the debug lines for each SIP
//! message in and out and each event frame (with the Call-ID, escaped so
//! nothing from the wire can break a line), and the hint for a config file
//! given without `-c`.

mod common;

use common::*;
use serde_json::Value;

/// Relays one event naming the call, then answers 200; logs each client.
const SCRIPT: &str = r#"
function ksr_request_route()
    KSR.evapi.relay('{"callid":"' .. KSR.pv.get("$ci") .. '"}')
    KSR.sl.send_reply(200, "OK")
end
function ksr_evapi_event(evname)
    if evname == "evapi:connection-new" then
        KSR.info("test client connected")
    end
end
"#;

/// An OPTIONS of call `call_id` from `agent`; its reply's status.
fn options(ev: &Evapi, agent: &mut Agent, call_id: &str) -> u16 {
    let call = sip::testing::Call::new(agent, call_id, &format!("sip:svc@{}", ev.udp));
    agent
        .send(ev.udp, call.request("OPTIONS", "z9hG4bK-log", 1, None, ""))
        .unwrap();
    let (code, _) = agent.recv_status(&[100], WAIT).expect("a reply");
    code
}

#[test]
fn debug_logs_show_each_sip_message_and_event_frame_with_its_call_id() {
    let ev = Evapi::start(&config(""), SCRIPT);
    let mut client = EventClient::connect(ev.events);
    ev.wait_log("test client connected");
    let mut agent = Agent::udp("127.0.0.1:0").unwrap();
    assert_eq!(options(&ev, &mut agent, "cid-log-1@test"), 200);

    let sip_in = ev.wait_log("SIP in");
    for want in [
        "transport=udp",
        &format!("peer={}", agent.addr()),
        "call_id=cid-log-1@test",
        &format!("line=OPTIONS sip:svc@{} SIP/2.0", ev.udp),
    ] {
        assert!(sip_in.contains(want), "{want:?} not in {sip_in}");
    }
    assert!(sip_in.contains("DEBUG"), "{sip_in}");
    let sip_out = ev.wait_log("SIP out");
    for want in [
        "transport=udp",
        &format!("peer={}", agent.addr()),
        "call_id=cid-log-1@test",
        "line=SIP/2.0 200 OK",
    ] {
        assert!(sip_out.contains(want), "{want:?} not in {sip_out}");
    }

    // The event the script relayed, and what the client says back: each
    // with the client's index and address, and the data escaped.
    assert_eq!(client.recv().unwrap(), r#"{"callid":"cid-log-1@test"}"#);
    let out = ev.wait_log("event frame out");
    assert!(out.contains("conidx=0"), "{out}");
    assert!(out.contains("cid-log-1@test"), "{out}");
    assert!(out.contains("peer=127.0.0.1:"), "{out}");
    client.send("hello\r\nINJECTED fake log line");
    let frame_in = ev.wait_log("event frame in");
    assert!(frame_in.contains("conidx=0"), "{frame_in}");
    assert!(
        frame_in.contains(r"data=hello\r\nINJECTED fake log line"),
        "{frame_in}"
    );

    // A datagram that tries to write a log line of its own stays in one.
    agent
        .send(ev.udp, "BOGUS\r\nINJECTED2 fake line\r\n\r\n")
        .unwrap();
    let bogus = ev.wait_log("line=BOGUS");
    assert!(bogus.contains("SIP in"), "{bogus}");
    let logs = ev.logs.lock().unwrap().clone();
    assert!(
        !logs.iter().any(|l| l.starts_with("INJECTED")),
        "a line from the wire: {logs:#?}"
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_the_fields() {
    let cfg = format!("{}format = \"json\"\n", config(""));
    let mut ev = Evapi::start(&cfg, SCRIPT);
    let mut agent = Agent::udp("127.0.0.1:0").unwrap();
    assert_eq!(options(&ev, &mut agent, "cid-json-1@test"), 200);
    ev.wait_log("SIP out");
    assert!(ev.terminate().success());
    // The last lines are written by the time the process has exited; the
    // reader thread may still be collecting them.
    ev.wait_log("stopped");

    let logs = ev.logs.lock().unwrap().clone();
    assert!(logs.len() > 3, "{logs:#?}");
    let objects: Vec<serde_json::Map<String, Value>> = logs
        .iter()
        .map(|l| match serde_json::from_str(l) {
            Ok(Value::Object(o)) => o,
            other => panic!("not one JSON object ({other:?}): {l}"),
        })
        .collect();
    for o in &objects {
        for key in ["timestamp", "level", "message"] {
            assert!(o.contains_key(key), "no {key} in {o:?}");
        }
    }
    let find = |message: &str| {
        objects
            .iter()
            .find(|o| o["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} in {logs:#?}"))
    };
    let running = find("evapi running");
    assert_eq!(running["level"], "INFO");
    assert_eq!(running["events"], ev.events.to_string());
    let sip_in = find("SIP in");
    assert_eq!(sip_in["level"], "DEBUG");
    assert_eq!(sip_in["call_id"], "cid-json-1@test");
    assert_eq!(sip_in["transport"], "udp");
    assert_eq!(sip_in["peer"], agent.addr().to_string());
    let sip_out = find("SIP out");
    assert_eq!(sip_out["call_id"], "cid-json-1@test");
    assert_eq!(sip_out["line"], "SIP/2.0 200 OK");
    assert!(sip_out["len"].as_u64().unwrap() > 100, "{sip_out:?}");
    assert_eq!(find("shutting down")["signal"], "SIGTERM");
}

/// Kamailio takes its config with `-f`; people try a bare file name too.
#[test]
fn a_config_file_without_dash_c_gets_the_command_that_works() {
    let dir = TempDir::new("hint");
    for (args, want) in [
        (&["check", "my.toml"][..], "use: evapi check -c my.toml"),
        (
            &["check", "-f", "my.toml"][..],
            "use: evapi check -c my.toml",
        ),
        (
            &["check", "--file", "my.toml"][..],
            "use: evapi check -c my.toml",
        ),
        (
            &["run", "etc/evapi.toml"][..],
            "use: evapi run -c etc/evapi.toml",
        ),
        (&["run", "-f", "x.toml"][..], "use: evapi run -c x.toml"),
    ] {
        let (code, out, err) = evapi(args, "", &dir.0);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(err.contains("the config file is given with -c"), "{err}");
    }
    // The hidden spellings stay out of the help.
    let (code, out, _) = evapi(&["check", "--help"], "", &dir.0);
    assert_eq!(code, 0);
    assert!(out.contains("--config"), "{out}");
    assert!(!out.contains("--file") && !out.contains("-f,"), "{out}");
}

#[test]
fn a_bad_log_format_is_a_config_error_naming_the_value() {
    let dir = TempDir::new("logformat");
    dir.write("router.lua", SCRIPT);
    let cfg = dir.write(
        "bad.toml",
        "[script]\nfile = \"router.lua\"\n[log]\nformat = \"yaml\"\n",
    );
    let cfg = cfg.to_str().unwrap();
    let want = format!("{cfg}:4: [log] format = \"yaml\": must be one of \"text\", \"json\"");
    let (code, _, err) = evapi(&["check", "-c", cfg], "", &dir.0);
    assert_eq!(code, 1);
    assert!(err.contains(&want), "{err}");
    // `run` refuses it the same way, before it listens on anything.
    let (code, _, err) = evapi(&["run", "-c", cfg], "", &dir.0);
    assert_eq!(code, 1);
    assert!(err.contains(&want), "{err}");
    let good = dir.write(
        "good.toml",
        "[script]\nfile = \"router.lua\"\n[evapi]\nevent_callback = \"ksr_evapi_event\"\n[log]\nformat = \"json\"\n",
    );
    let (code, out, err) = evapi(&["check", "-c", good.to_str().unwrap()], "", &dir.0);
    assert_eq!(code, 0, "{out}{err}");
}

/// Under systemd, stderr is the journal, which stamps each line itself:
/// the text lines then carry no time of their own.
#[test]
fn text_logs_into_the_journal_leave_the_time_to_it() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("journal");
    let cfg = dir.write("evapi.toml", &config(""));
    dir.write("router.lua", SCRIPT);
    let err_path = dir.0.join("stderr");
    for journal in [false, true] {
        let err = std::fs::File::create(&err_path).unwrap();
        let meta = err.metadata().unwrap();
        let mut cmd = std::process::Command::new(bin());
        cmd.args(["run", "-c", cfg.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(err);
        if journal {
            cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        let text = loop {
            let text = std::fs::read_to_string(&err_path).unwrap();
            if text.contains("evapi running") {
                break text;
            }
            assert!(
                std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none(),
                "evapi did not start: {text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        assert!(status.success(), "{status}");
        let running = text.lines().find(|l| l.contains("evapi running")).unwrap();
        let stamped = running.starts_with("20") && running.as_bytes().get(10) == Some(&b'T');
        assert_eq!(stamped, !journal, "journal={journal}: {running}");
        assert!(
            running.trim_start().starts_with("INFO") == journal,
            "{running}"
        );
    }
}
