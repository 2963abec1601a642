//! `[script]`, the script's section of the program's config file: owned
//! here, with its defaults and bounds, so the file format has one source of
//! truth. The program composes it with what comes from elsewhere (the
//! `[evapi] event_callback`, an embedded script's text) into a
//! [`crate::ScriptConfig`].

use crate::limits::{Limits, MAX_MEMORY_MB, MAX_ROUTE_MS};
use serde::Deserialize;
use std::path::PathBuf;

/// `[script]`. Every key has a default; unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptSection {
    /// The KEMI-style Lua routing script; a relative path is relative to
    /// the config file.
    pub file: PathBuf,
    /// Longest a route or event callback may run, ms (0: no limit); see
    /// [`Limits::max_route_ms`].
    pub max_route_ms: u64,
    /// Most memory of one Lua state, MiB (0: no limit); see
    /// [`Limits::memory_limit_mb`].
    pub memory_limit_mb: u64,
    /// `?.lua` patterns searched by `require` before Lua's own
    /// `package.path`; relative ones are relative to the config file.
    pub lua_path: Vec<String>,
    /// Patterns for C modules (`?.so`), before Lua's own `package.cpath`;
    /// only with `allow_c_modules`.
    pub lua_cpath: Vec<String>,
    /// Whether `require` may load C modules. Off by default: a C module
    /// runs with the process's rights, outside the Lua state's memory and
    /// time limits, and a fault in it ends the whole process.
    pub allow_c_modules: bool,
}

impl Default for ScriptSection {
    fn default() -> Self {
        let limits = Limits::default();
        ScriptSection {
            file: PathBuf::from("router.lua"),
            max_route_ms: limits.max_route_ms,
            memory_limit_mb: limits.memory_limit_mb,
            lua_path: Vec::new(),
            lua_cpath: Vec::new(),
            allow_c_modules: false,
        }
    }
}

/// A setting of a section owned here (`[script]`, `[maxfwd]`) that cannot
/// be used; the message names the key and the value: `[script] file = "":
/// must name the Lua script`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[{section}] {key} = {value}: {reason}")]
pub struct SectionError {
    /// The section.
    pub section: &'static str,
    /// The key.
    pub key: &'static str,
    /// The value as it would be written in the file.
    pub value: String,
    /// What is wrong, and what is accepted.
    pub reason: String,
}

impl ScriptSection {
    /// Check every key; the first problem.
    pub fn validate(&self) -> Result<(), SectionError> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Check every key; every problem, in the order of the keys.
    pub fn problems(&self) -> Vec<SectionError> {
        let mut all = Vec::new();
        if self.file.as_os_str().is_empty() {
            all.push(SectionError {
                section: "script",
                key: "file",
                value: "\"\"".into(),
                reason: "must name the Lua script".into(),
            });
        }
        if self.max_route_ms > MAX_ROUTE_MS {
            all.push(SectionError {
                section: "script",
                key: "max_route_ms",
                value: self.max_route_ms.to_string(),
                reason: format!(
                    "must be at most {MAX_ROUTE_MS} (an hour, in milliseconds); 0: no limit"
                ),
            });
        }
        if self.memory_limit_mb > MAX_MEMORY_MB {
            all.push(SectionError {
                section: "script",
                key: "memory_limit_mb",
                value: self.memory_limit_mb.to_string(),
                reason: format!("must be at most {MAX_MEMORY_MB} (MiB); 0: no limit"),
            });
        }
        for (key, patterns, ext) in [
            ("lua_path", &self.lua_path, "lua"),
            ("lua_cpath", &self.lua_cpath, "so"),
        ] {
            for p in patterns
                .iter()
                .filter(|p| !p.contains('?') || p.contains(';'))
            {
                all.push(SectionError {
                    section: "script",
                    key,
                    value: format!("{p:?}"),
                    reason: format!(
                        "each entry is one pattern with a ? for the module name, \
                         like \"lib/?.{ext}\" (no ;)"
                    ),
                });
            }
        }
        if !self.lua_cpath.is_empty() && !self.allow_c_modules {
            all.push(SectionError {
                section: "script",
                key: "lua_cpath",
                value: format!("{:?}", self.lua_cpath),
                reason: "C modules are off: set allow_c_modules = true to use it".into(),
            });
        }
        all
    }

    /// The limits of each Lua state.
    pub fn limits(&self) -> Limits {
        Limits {
            max_route_ms: self.max_route_ms,
            memory_limit_mb: self.memory_limit_mb,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_unknown_keys_and_bounds() {
        let s: ScriptSection = toml::from_str("").unwrap();
        assert_eq!(s.file, PathBuf::from("router.lua"));
        assert!(s.validate().is_ok());
        let e = toml::from_str::<ScriptSection>("fiel = \"x.lua\"").unwrap_err();
        assert!(e.to_string().contains("fiel"), "{e}");
        let s: ScriptSection =
            toml::from_str("lua_path = [\"lib/?.lua\", \"lib\"]\nlua_cpath = [\"c/?.so\"]")
                .unwrap();
        let all: Vec<String> = s.problems().iter().map(|e| e.to_string()).collect();
        assert_eq!(
            all,
            [
                "[script] lua_path = \"lib\": each entry is one pattern with a ? for the \
                 module name, like \"lib/?.lua\" (no ;)",
                "[script] lua_cpath = [\"c/?.so\"]: C modules are off: set \
                 allow_c_modules = true to use it",
            ]
        );
        let s: ScriptSection =
            toml::from_str("lua_cpath = [\"c/?.so\"]\nallow_c_modules = true").unwrap();
        assert!(s.validate().is_ok());
        let s: ScriptSection = toml::from_str("file = \"\"").unwrap();
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "[script] file = \"\": must name the Lua script"
        );
    }
}
