//! The config file (TOML): `[sip]`, `[script]`, `[evapi]`, `[tm]`,
//! `[usrloc]`, `[log]`, `[http]`...
//!
//! Every key has a default; unknown keys are errors, so a typo does not
//! pass silently. Relative paths are relative to the config file.

use crate::config_errors::{render, Reader};
use anyhow::{bail, Context};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The embedded default config (`evapi run` with no `-c`).
pub const DEFAULT_CONFIG: &str = include_str!("../../../examples/default/evapi.toml");
/// The embedded default routing script, named `router.lua` by it.
pub const DEFAULT_SCRIPT: &str = include_str!("../../../examples/default/router.lua");

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// `[sip]`: owned, defaulted and checked by the sip crate.
    pub sip: sip::SipConfig,
    /// `[script]`: owned, defaulted and checked by the script crate.
    pub script: script::ScriptSection,
    /// `[evapi]`: the ten parameters of the original, and our limits; owned,
    /// defaulted and checked by the evapi crate.
    pub evapi: evapi::Config,
    /// `[tm]`: owned, defaulted and checked by the sip crate.
    pub tm: sip::TmConfig,
    /// `[maxfwd]`: owned, defaulted and checked by the script crate.
    pub maxfwd: script::MaxfwdSection,
    /// `[usrloc]`: the location table; owned, defaulted and checked by the
    /// sip crate.
    pub usrloc: sip::UsrlocConfig,
    /// `[log]`
    pub log: LogSection,
    /// `[htable]`: Kamailio's htable definitions; owned by the script crate.
    pub htable: script::HtableSection,
    /// `[pike]`: Kamailio's pike parameters; owned by the script crate.
    pub pike: script::PikeSection,
    /// `[http]`: the admin HTTP listener; owned by the admin crate.
    pub http: admin::HttpConfig,
    /// `[dialog]`: dialog tracking; owned, defaulted and checked by the
    /// sip crate.
    pub dialog: sip::DialogConfig,
    /// `[nats]`: scale-out over NATS (off unless `servers` is set); owned,
    /// defaulted and checked by the nats crate.
    pub nats: nats::NatsSection,
}

/// `[log]`: the binary's own section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `error`, `warn`, `info`, `debug` or `trace` (`-v`/`-q` move it).
    pub level: LogLevel,
    /// `text` for people, `json` for log shippers.
    pub format: LogFormat,
}

/// How log lines are written, as in `[log] format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event: time, level, message, `key=value`
    /// fields (the default).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`,
    /// `message` and each field as a key of its own.
    Json,
}

/// A log level, as written in `[log] level`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// One line per notable event (the default).
    #[default]
    Info,
    /// Every message in and out.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// Levels from quietest to loudest, as `tracing` filters name them.
    pub const ALL: [&'static str; 5] = ["error", "warn", "info", "debug", "trace"];

    /// This level's place in [`LogLevel::ALL`].
    pub fn rank(self) -> usize {
        self as usize
    }
}

/// A loaded configuration, with the script's text.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Where it came from: a path, or "(embedded default)".
    pub origin: String,
    /// The parsed file.
    pub file: FileConfig,
    /// The script path, resolved against the config file's folder.
    pub script_path: PathBuf,
    /// The script text when it is embedded (None: read `script_path`).
    pub script_source: Option<String>,
}

impl Loaded {
    /// The host's settings: `[sip]`, `[tm]`, `[usrloc]` and `[dialog]` as
    /// they are.
    pub fn host_config(&self) -> sip::HostConfig {
        sip::HostConfig {
            sip: self.file.sip.clone(),
            tm: self.file.tm.clone(),
            usrloc: self.file.usrloc.clone(),
            dialog: self.file.dialog.clone(),
        }
    }

    /// The script's settings.
    pub fn script_config(&self) -> script::ScriptConfig {
        script::ScriptConfig {
            file: self.script_path.clone(),
            source: self.script_source.clone(),
            event_callback: self.file.evapi.event_callback.clone(),
            dialog_event_callback: self.file.dialog.event_callback.clone(),
            limits: self.file.script.limits(),
            htable: self.file.htable.clone(),
            pike: self.file.pike,
            maxfwd: self.file.maxfwd,
            lua_path: self.file.script.lua_path.clone(),
            lua_cpath: self.file.script.lua_cpath.clone(),
            allow_c_modules: self.file.script.allow_c_modules,
        }
    }
}

/// The sections of the file, in the order the docs list them.
pub const SECTIONS: [&str; 12] = [
    "sip", "script", "evapi", "tm", "maxfwd", "log", "htable", "pike", "usrloc", "http", "dialog",
    "nats",
];

/// Parse config text, then let each section check itself (the same checks
/// the parts run when they start, so `check` and `run` say the same).
/// Every mistake is reported in one error, one per line, each as
/// `origin:line: [section] key = value: what is wrong`.
pub fn parse(text: &str, origin: &str) -> anyhow::Result<FileConfig> {
    let mut r = Reader::new(text).map_err(|p| anyhow::anyhow!("{}", render(origin, vec![p])))?;
    r.unknown_sections(&SECTIONS);
    let no_checks = |_: &LogSection| Ok::<(), String>(());
    let file = FileConfig {
        sip: r.section("sip", sip::SipConfig::validate),
        script: r.section("script", script::ScriptSection::validate),
        evapi: r.section("evapi", evapi::Config::validate),
        tm: r.section("tm", sip::TmConfig::validate),
        maxfwd: r.section("maxfwd", script::MaxfwdSection::validate),
        usrloc: r.section("usrloc", sip::UsrlocConfig::validate),
        log: r.section("log", no_checks),
        htable: r.section("htable", script::HtableSection::validate),
        pike: r.section("pike", script::PikeSection::validate),
        http: r.section("http", admin::HttpConfig::validate),
        dialog: r.section("dialog", sip::DialogConfig::validate),
        nats: r.section("nats", nats::NatsSection::validate),
    };
    if !r.problems.is_empty() {
        anyhow::bail!("{}", render(origin, r.problems));
    }
    Ok(file)
}

/// Write the embedded default config and script into `dir` as
/// `evapi.toml` and `router.lua` (the name the config gives its script).
/// Refuses, before writing anything, when either file exists.
pub fn write_defaults(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let files = [
        (dir.join("evapi.toml"), DEFAULT_CONFIG),
        (dir.join("router.lua"), DEFAULT_SCRIPT),
    ];
    for (path, _) in &files {
        if path.exists() {
            bail!(
                "{} exists: not overwritten (remove it, or choose another folder)",
                path.display()
            );
        }
    }
    let mut written = Vec::new();
    for (path, text) in files {
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Load `path`, or the embedded default when `None`.
pub fn load(path: Option<&Path>) -> anyhow::Result<Loaded> {
    match path {
        None => {
            let origin = "(embedded default config)".to_string();
            let file = parse(DEFAULT_CONFIG, &origin)?;
            Ok(Loaded {
                origin,
                script_path: PathBuf::from("(embedded)").join(&file.script.file),
                script_source: Some(DEFAULT_SCRIPT.to_string()),
                file,
            })
        }
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let origin = path.display().to_string();
            let file = parse(&text, &origin)?;
            let mut file = file;
            let base = path.parent().unwrap_or(Path::new("."));
            let script_path = if file.script.file.is_absolute() {
                file.script.file.clone()
            } else {
                base.join(&file.script.file)
            };
            let s = &mut file.script;
            for p in s.lua_path.iter_mut().chain(s.lua_cpath.iter_mut()) {
                if Path::new(p.as_str()).is_relative() {
                    *p = base.join(p.as_str()).display().to_string();
                }
            }
            let e = &mut file.evapi;
            for p in [&mut e.tls_cert, &mut e.tls_key, &mut e.tls_client_ca] {
                if !p.is_empty() && Path::new(p.as_str()).is_relative() {
                    *p = base.join(p.as_str()).display().to_string();
                }
            }
            file.nats.resolve_paths(base);
            Ok(Loaded {
                origin,
                file,
                script_path,
                script_source: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_loads() {
        let l = load(None).unwrap();
        assert_eq!(l.file.evapi.event_callback, "ksr_evapi_event");
        assert!(l.script_source.is_some());
        assert_eq!(l.host_config().tm.fr_inv_timer, 120_000);
        let f = parse(
            "[sip]\nudp_recv_buffer = 2097152\nmax_tcp_connections = 10\n",
            "x.toml",
        )
        .unwrap();
        let l = Loaded { file: f, ..l };
        assert_eq!(l.host_config().sip.udp_recv_buffer, 2_097_152);
        assert_eq!(l.host_config().sip.max_tcp_connections, 10);
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let e = parse("[evapi]\nworkers = 2\nmax_client = 4\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("x.toml:3: [evapi] max_client: unknown key (did you mean max_clients?)"),
            "{e}"
        );
        let e = parse("[sip]\nchildren = 0\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("children = 0"), "{e}");
        let e = format!(
            "{:#}",
            parse("[evapi]\nnetstring_format = 3\n", "x.toml").unwrap_err()
        );
        assert!(e.contains("netstring_format = 3"), "{e}");
        let e = parse("[tm]\nfr_timer = 0\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fr_timer = 0"), "{e}");
        let e = parse("[usrloc]\nmax_contacts = 0\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml:2: [usrloc] max_contacts = 0"), "{e}");
        let f = parse("[usrloc]\nmax_aors = 5\n", "x.toml").unwrap();
        assert_eq!(f.usrloc.max_aors, 5);
        let e = parse("[log]\nlevel = \"loud\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "x.toml:2: [log] level = \"loud\": must be one of \"error\", \"warn\", \"info\", \
             \"debug\", \"trace\""
        );
        let e = parse("[log]\nformat = \"yaml\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "x.toml:2: [log] format = \"yaml\": must be one of \"text\", \"json\""
        );
        let e = parse("[log]\nformat = 1\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.toml:2: [log] format = 1: must be"), "{e}");
        let f = parse("[log]\nformat = \"json\"\nlevel = \"debug\"\n", "x.toml").unwrap();
        assert_eq!(
            (f.log.format, f.log.level),
            (LogFormat::Json, LogLevel::Debug)
        );
        assert_eq!(load(None).unwrap().file.log.format, LogFormat::Text);
        let e = parse("[nope]\n", "x.toml").unwrap_err().to_string();
        assert!(e.starts_with("x.toml:1: [nope]: unknown section"), "{e}");
        let e = parse("[sip]\nchildren = [\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.toml:3: not valid TOML"), "{e}");
    }

    #[test]
    fn every_mistake_in_one_run_in_words_a_user_knows() {
        let text = "\
[sip]
children = \"four\"
max_message_size = 10
listen = \"udp:127.0.0.1:5060\"

[evapi]
workers = -1
wait_idle = true
max_client = 4
event_callback = 3

[tm]
fr_timer = 0
fr_inv_timer = 0

[script]
lua_path = [1, 2]

[maxfwd]
max_limit = 300

[lgo]
level = \"info\"
";
        let e = parse(text, "x.toml").unwrap_err().to_string();
        let lines: Vec<&str> = e.lines().collect();
        let expect = [
            "12 mistakes in x.toml:",
            "x.toml:2: [sip] children = \"four\": must be a whole number, 0 or more, not text in quotes",
            "x.toml:3: [sip] max_message_size = 10: must be 512 to 67108864",
            "x.toml:4: [sip] listen = \"udp:127.0.0.1:5060\": must be a list like [\"a\", \"b\"], not text in quotes",
            "x.toml:7: [evapi] workers = -1: must be a whole number, 0 or more",
            "x.toml:8: [evapi] wait_idle = true: must be a whole number, 0 or more, not true or false",
            "x.toml:9: [evapi] max_client: unknown key (did you mean max_clients?)",
            "x.toml:10: [evapi] event_callback = 3: must be text in quotes, not a whole number",
            "x.toml:13: [tm] fr_timer = 0: must be at least 1",
            "x.toml:14: [tm] fr_inv_timer = 0: must be at least 1",
            "x.toml:17: [script] lua_path = [1, 2]: each entry must be text in quotes, not a whole number",
            "x.toml:20: [maxfwd] max_limit = 300: must be 0 to 255",
            "x.toml:22: [lgo]: unknown section (did you mean log?)",
        ];
        assert_eq!(lines.len(), expect.len(), "{e}");
        for (line, want) in lines.iter().zip(expect) {
            assert!(line.starts_with(want), "{line}\nwanted: {want}\nall:\n{e}");
        }
    }

    #[test]
    fn http_mistakes_are_all_reported_with_their_lines() {
        let f = parse(
            "[http]\nlisten = \"127.0.0.1:0\"\ntoken = \"t\"\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(f.http.listen, "127.0.0.1:0");
        assert!(f.http.token.matches(b"t") && f.http.enabled);
        let text = "[http]\nlisten = \"admin.example:9060\"\nmax_connections = 0\n\
                    tokn = \"x\"\nheader_timeout_ms = \"5\"\nallow_networks = [\"10.0.0.1/8\"]\n";
        let e = parse(text, "x.toml").unwrap_err().to_string();
        for want in [
            "5 mistakes in x.toml:",
            "x.toml:2: [http] listen = \"admin.example:9060\": the host must be an IP address or localhost",
            "x.toml:3: [http] max_connections = 0: must be 1 to 100000",
            "x.toml:4: [http] tokn: unknown key (did you mean token?)",
            "x.toml:5: [http] header_timeout_ms = \"5\": must be a whole number, 0 or more, not text in quotes",
            "x.toml:6: [http] allow_networks = [\"10.0.0.1/8\"]: \"10.0.0.1/8\" is not a network: host bits",
        ] {
            assert!(e.contains(want), "{want}\n{e}");
        }
    }

    #[test]
    fn relative_script_path_is_beside_the_config() {
        let dir = std::env::temp_dir().join(format!("evapi-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("my.toml");
        std::fs::write(
            &cfg,
            "[script]\nfile = \"r.lua\"\nlua_path = [\"lib/?.lua\", \"/usr/share/lua/5.4/?.lua\"]\n[evapi]\ntls_cert = \"tls/c.pem\"\ntls_key = \"/abs/k.pem\"\n",
        )
        .unwrap();
        let l = load(Some(&cfg)).unwrap();
        assert_eq!(l.script_path, dir.join("r.lua"));
        assert_eq!(
            l.file.evapi.tls_cert,
            dir.join("tls/c.pem").display().to_string()
        );
        assert_eq!(l.file.evapi.tls_key, "/abs/k.pem");
        assert_eq!(
            l.script_config().lua_path,
            [
                dir.join("lib/?.lua").display().to_string(),
                "/usr/share/lua/5.4/?.lua".to_string()
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
