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
}

impl Default for ScriptSection {
    fn default() -> Self {
        let limits = Limits::default();
        ScriptSection {
            file: PathBuf::from("router.lua"),
            max_route_ms: limits.max_route_ms,
            memory_limit_mb: limits.memory_limit_mb,
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
    /// Check every key.
    pub fn validate(&self) -> Result<(), SectionError> {
        if self.file.as_os_str().is_empty() {
            return Err(SectionError {
                section: "script",
                key: "file",
                value: "\"\"".into(),
                reason: "must name the Lua script".into(),
            });
        }
        if self.max_route_ms > MAX_ROUTE_MS {
            return Err(SectionError {
                section: "script",
                key: "max_route_ms",
                value: self.max_route_ms.to_string(),
                reason: format!(
                    "must be at most {MAX_ROUTE_MS} (an hour, in milliseconds); 0: no limit"
                ),
            });
        }
        if self.memory_limit_mb > MAX_MEMORY_MB {
            return Err(SectionError {
                section: "script",
                key: "memory_limit_mb",
                value: self.memory_limit_mb.to_string(),
                reason: format!("must be at most {MAX_MEMORY_MB} (MiB); 0: no limit"),
            });
        }
        Ok(())
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
        let s: ScriptSection = toml::from_str("file = \"\"").unwrap();
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "[script] file = \"\": must name the Lua script"
        );
    }
}
