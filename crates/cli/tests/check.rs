//! The program's command line, through the real binary: `evapi check`
//! (config mistakes, script lint, the same words as `run`), `--help`,
//! `--version` and `evapi defaults`.

mod common;

use common::*;

/// A script that loads: what `check` needs to say "ok".
const GOOD_SCRIPT: &str =
    "function ksr_request_route() end\nfunction ksr_evapi_event(evname) end\n";

/// `evapi check` on good and bad files.
#[test]
fn check_reports_errors_with_file_and_line() {
    let dir = TempDir::new("check");
    let cfg = dir.write("evapi.toml", &config(""));
    dir.write("router.lua", GOOD_SCRIPT);
    let (code, out, err) = evapi(&["check", "-c", cfg.to_str().unwrap()], "", &dir.0);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok:"), "{out}");

    // A syntax error: file and line.
    dir.write(
        "router.lua",
        "function ksr_request_route()\n  if then\nend\n",
    );
    let (code, _, err) = evapi(&["check", "-c", cfg.to_str().unwrap()], "", &dir.0);
    assert_ne!(code, 0);
    assert!(err.contains("router.lua:2:"), "{err}");

    // The event_callback is missing.
    dir.write("router.lua", "function ksr_request_route() end\n");
    let (code, _, err) = evapi(&["check", "-c", cfg.to_str().unwrap()], "", &dir.0);
    assert_ne!(code, 0);
    assert!(err.contains("ksr_evapi_event() is not defined"), "{err}");

    // An unknown key: its name and line.
    let bad = dir.write("bad.toml", "[evapi]\nworkers = 1\nmax_client = 4\n");
    let (code, _, err) = evapi(&["check", "-c", bad.to_str().unwrap()], "", &dir.0);
    assert_ne!(code, 0);
    assert!(
        err.contains("bad.toml:3: [evapi] max_client: unknown key"),
        "{err}"
    );

    // A bad value names the parameter and the value.
    let bad = dir.write("bad2.toml", "[evapi]\nbind_addr = \"[::1:8448\"\n");
    let (code, _, err) = evapi(&["check", "-c", bad.to_str().unwrap()], "", &dir.0);
    assert_ne!(code, 0);
    assert!(
        err.contains("bind_addr") && err.contains("[::1:8448"),
        "{err}"
    );

    // A listen entry that cannot be used, found without binding anything.
    let bad = dir.write(
        "bad3.toml",
        "[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"sctp:127.0.0.1:5060\"]\n",
    );
    let (code, _, err) = evapi(&["check", "-c", bad.to_str().unwrap()], "", &dir.0);
    assert_ne!(code, 0);
    assert!(
        err.contains("bad3.toml") && err.contains("sctp:127.0.0.1:5060"),
        "{err}"
    );

    // The embedded default is fine.
    let (code, out, err) = evapi(&["check"], "", &dir.0);
    assert_eq!(code, 0, "{out}{err}");
}

/// `evapi check` and `evapi run` load a config the same way, so each
/// mistake gets the same message from both, naming section, key and value,
/// and `run` starts nothing.
#[test]
fn check_and_run_say_the_same_for_the_same_mistake() {
    let dir = TempDir::new("same-error");
    dir.write("router.lua", "function ksr_request_route() end\n");
    for (section, expect) in [
        (
            "[sip]\nchildren = 5000",
            "[sip] children = 5000: must be 1 to 1024",
        ),
        (
            "[tm]\nfr_timer = 0",
            "[tm] fr_timer = 0: must be at least 1",
        ),
        ("[evapi]\nmax_clients = 0", "[evapi] max_clients = 0"),
        (
            "[script]\nfile = \"\"",
            "[script] file = \"\": must name the Lua script",
        ),
        (
            "[log]\nlevel = \"loud\"",
            "bad.toml:2: [log] level = \"loud\": must be one of \"error\"",
        ),
    ] {
        let cfg = dir.write("bad.toml", &format!("{section}\n"));
        let cfg = cfg.display().to_string();
        let (code, _, check_err) = evapi(&["check", "-c", &cfg], "", &dir.0);
        assert_ne!(code, 0, "{section}");
        let (code, _, run_err) = evapi(&["run", "-c", &cfg], "", &dir.0);
        assert_ne!(code, 0, "{section}");
        assert!(check_err.contains(expect), "check: {check_err}");
        assert_eq!(check_err, run_err, "{section}");
    }
}

/// `evapi check` reads the script's source: what this program does not
/// provide is a warning (exit 0), a guarded use a note; both on stdout,
/// one `file:line: level: ...` a line.
#[test]
fn check_warns_about_what_the_script_uses_and_we_lack() {
    let dir = TempDir::new("lint");
    let cfg = dir.write("evapi.toml", &config(""));
    dir.write(
        "router.lua",
        "function ksr_request_route()\n\
         \x20 KSR.nathelper.fix_nated_register()\n\
         \x20 KSR.tm.t_on_failure(\"nowhere\")\n\
         \x20 if not KSR.auth then return 1 end\n\
         \x20 KSR.auth.auth_challenge(\"example.com\", 0)\n\
         end\n\
         function ksr_evapi_event(e) end\n",
    );
    let (code, out, err) = evapi(&["check", "-c", cfg.to_str().unwrap()], "", &dir.0);
    assert_eq!(code, 0, "{out}{err}");
    let script = dir.0.join("router.lua").display().to_string();
    for want in [
        format!("{script}:2: warning: KSR.nathelper.fix_nated_register: module nathelper is absent here"),
        format!("{script}:3: warning: KSR.tm.t_on_failure: the script defines no function nowhere()"),
        format!("{script}:5: note: KSR.auth.auth_challenge: module auth is absent here, as in a Kamailio built without it; the script tests for it at line 4"),
    ] {
        assert!(out.lines().any(|l| l.starts_with(&want)), "{want}\n{out}");
    }
    assert!(out.contains("ok: config"), "{out}");
}

/// `localhost` is accepted in every address setting, and any other name
/// refused in the same words; a host started on localhost answers there.
#[test]
fn localhost_the_same_in_every_address_setting() {
    let dir = TempDir::new("localhost");
    dir.write(
        "router.lua",
        "function ksr_request_route() KSR.sl.send_reply(404, \"Not Here\") end\n",
    );
    let good = dir.write(
        "good.toml",
        "[sip]\nlisten = [\"udp:localhost:0\"]\n[evapi]\nbind_addr = \"localhost:0\"\n",
    );
    let (code, out, err) = evapi(&["check", "-c", good.to_str().unwrap()], "", &dir.0);
    assert_eq!(code, 0, "{out}{err}");
    let bad = dir.write(
        "bad.toml",
        "[sip]\nlisten = [\"udp:sip.example.com:5060\"]\n[evapi]\nbind_addr = \"events.example.com:8448\"\n",
    );
    let (code, _, err) = evapi(&["check", "-c", bad.to_str().unwrap()], "", &dir.0);
    assert_ne!(code, 0);
    let words = "the host must be an IP address or localhost";
    assert!(
        err.contains(&format!(
            "bad.toml:2: [sip] listen = \"udp:sip.example.com:5060\": {words}"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "bad.toml:4: [evapi] bind_addr = \"events.example.com:8448\": {words}"
        )),
        "{err}"
    );

    let cfg = config("").replace("udp:127.0.0.1:0", "udp:localhost:0");
    let ev = Evapi::start(&cfg, "function ksr_request_route() KSR.sl.send_reply(404, \"Not Here\") end\nfunction ksr_evapi_event(e) end\n");
    assert!(ev.udp.ip().is_loopback(), "{}", ev.udp);
    let mut uac = Agent::udp(&std::net::SocketAddr::new(ev.udp.ip(), 0).to_string()).unwrap();
    uac.invite(ev.udp, "on-localhost", "onlocalhost").unwrap();
    assert_eq!(
        uac.recv_status(&[100], WAIT).expect("a reply in time").0,
        404
    );
}

/// Every mistake of a config file in one run, each with its line, from
/// `check` and `run` alike.
#[test]
fn every_config_mistake_in_one_run() {
    let dir = TempDir::new("all-errors");
    dir.write("router.lua", "function ksr_request_route() end\n");
    let cfg = dir.write(
        "bad.toml",
        "[sip]\nchildren = \"four\"\n[evapi]\nmax_client = 4\nworkers = 5000\n[tm]\nt1 = true\n",
    );
    let cfg = cfg.display().to_string();
    let (code, out, check_err) = evapi(&["check", "-c", &cfg], "", &dir.0);
    assert_ne!(code, 0);
    assert!(out.is_empty(), "{out}");
    for want in [
        "bad.toml:2: [sip] children = \"four\": must be a whole number",
        "bad.toml:4: [evapi] max_client: unknown key (did you mean max_clients?)",
        "bad.toml:5: [evapi] workers = 5000",
        "bad.toml:7: [tm] t1 = true: must be a whole number, 0 or more, not true or false",
    ] {
        assert!(check_err.contains(want), "{want}\n{check_err}");
    }
    let (code, _, run_err) = evapi(&["run", "-c", &cfg], "", &dir.0);
    assert_ne!(code, 0);
    assert_eq!(check_err, run_err);
}

/// `--help` and `--version` work; a wrong command is refused.
#[test]
fn help_and_version() {
    let dir = TempDir::new("help");
    let (code, out, _) = evapi(&["--help"], "", &dir.0);
    assert_eq!(code, 0);
    for word in ["run", "check", "tap", "defaults"] {
        assert!(out.contains(word), "{out}");
    }
    let (code, out, _) = evapi(&["--version"], "", &dir.0);
    assert_eq!(code, 0);
    // The commit built: the checkout's HEAD when git can tell (benchmark
    // records name the binary they ran by it).
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        out.trim(),
        format!("evapi {} (commit {head})", env!("CARGO_PKG_VERSION")),
        "{out}"
    );
    let (code, _, err) = evapi(&["frobnicate"], "", &dir.0);
    assert_ne!(code, 0);
    assert!(err.contains("frobnicate"), "{err}");
    let (code, out, _) = evapi(&["defaults", "--script"], "", &dir.0);
    assert_eq!(code, 0);
    assert!(out.contains("function ksr_request_route()"));
}

/// `evapi defaults --config` alone is not a whole setup (it names
/// router.lua): it says so on stderr; `--write DIR` writes both files, which
/// pass `evapi check`, and never overwrites.
#[test]
fn defaults_write_gives_a_config_that_checks() {
    let dir = TempDir::new("defaults-write");
    let (code, out, err) = evapi(&["defaults", "--config"], "", &dir.0);
    assert_eq!(code, 0);
    assert!(
        out.contains("[evapi]") && !out.contains("ksr_request_route"),
        "{out}"
    );
    assert!(
        err.contains("router.lua") && err.contains("--write"),
        "{err}"
    );
    let (code, out, err) = evapi(&["defaults", "--write", "mine"], "", &dir.0);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("evapi.toml") && out.contains("router.lua"),
        "{out}"
    );
    let (code, out, err) = evapi(&["check", "-c", "mine/evapi.toml"], "", &dir.0);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok:"), "{out}");
    let (code, _, err) = evapi(&["defaults", "--write", "mine"], "", &dir.0);
    assert_ne!(code, 0);
    assert!(
        err.contains("exists") && err.contains("evapi.toml"),
        "{err}"
    );
}
