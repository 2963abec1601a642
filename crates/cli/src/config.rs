//! The config file (TOML): `[sip]`, `[script]`, `[evapi]`, `[tm]`,
//! `[usrloc]`, `[log]`.
//!
//! Every key has a default; unknown keys are errors, so a typo does not
//! pass silently. Relative paths are relative to the config file.

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
    /// `[usrloc]`: the location table; owned, defaulted and checked by the
    /// sip crate.
    pub usrloc: sip::UsrlocConfig,
    /// `[log]`
    pub log: LogSection,
}

/// `[log]`: the binary's own section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `error`, `warn`, `info`, `debug` or `trace` (`-v`/`-q` move it).
    pub level: LogLevel,
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
    /// The host's settings: `[sip]`, `[tm]` and `[usrloc]` as they are.
    pub fn host_config(&self) -> sip::HostConfig {
        sip::HostConfig {
            sip: self.file.sip.clone(),
            tm: self.file.tm.clone(),
            usrloc: self.file.usrloc.clone(),
        }
    }

    /// The script's settings.
    pub fn script_config(&self) -> script::ScriptConfig {
        script::ScriptConfig {
            file: self.script_path.clone(),
            source: self.script_source.clone(),
            event_callback: self.file.evapi.event_callback.clone(),
            limits: self.file.script.limits(),
        }
    }
}

/// Parse config text, then let each section check itself (the same checks
/// the parts run when they start, so `check` and `run` say the same);
/// errors name `origin`, and the line for a syntax error or an unknown key.
pub fn parse(text: &str, origin: &str) -> anyhow::Result<FileConfig> {
    let file: FileConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    let in_origin = |e: &dyn std::fmt::Display| anyhow::anyhow!("{origin}: {e}");
    file.sip.validate().map_err(|e| in_origin(&e))?;
    file.tm.validate().map_err(|e| in_origin(&e))?;
    file.usrloc.validate().map_err(|e| in_origin(&e))?;
    file.script.validate().map_err(|e| in_origin(&e))?;
    file.evapi.validate().map_err(|e| in_origin(&e))?;
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
            let e = &mut file.evapi;
            for p in [&mut e.tls_cert, &mut e.tls_key, &mut e.tls_client_ca] {
                if !p.is_empty() && Path::new(p.as_str()).is_relative() {
                    *p = base.join(p.as_str()).display().to_string();
                }
            }
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
            e.contains("x.toml") && e.contains("line 3") && e.contains("max_client"),
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
        assert!(e.contains("x.toml: [usrloc] max_contacts = 0"), "{e}");
        let f = parse("[usrloc]\nmax_aors = 5\n", "x.toml").unwrap();
        assert_eq!(f.usrloc.max_aors, 5);
        let e = parse("[log]\nlevel = \"loud\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("loud"), "{e}");
        let e = parse("[nope]\n", "x.toml").unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn relative_script_path_is_beside_the_config() {
        let dir = std::env::temp_dir().join(format!("evapi-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("my.toml");
        std::fs::write(
            &cfg,
            "[script]\nfile = \"r.lua\"\n[evapi]\ntls_cert = \"tls/c.pem\"\ntls_key = \"/abs/k.pem\"\n",
        )
        .unwrap();
        let l = load(Some(&cfg)).unwrap();
        assert_eq!(l.script_path, dir.join("r.lua"));
        assert_eq!(
            l.file.evapi.tls_cert,
            dir.join("tls/c.pem").display().to_string()
        );
        assert_eq!(l.file.evapi.tls_key, "/abs/k.pem");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
