//! `[maxfwd]`, Kamailio's maxfwd module parameter: owned here beside the
//! `KSR.maxfwd` functions that use it, composed into the program's config
//! file by the program like `[script]`.

use serde::Deserialize;

/// Kamailio's default `max_limit`.
pub const DEFAULT_MAX_LIMIT: u16 = 70;

/// `[maxfwd]`. Every key has a default; unknown keys are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaxfwdSection {
    /// Highest Max-Forwards relayed: `KSR.maxfwd.process_maxfwd` lowers a
    /// received value above it to it (Kamailio's `max_limit`, 0 to 255,
    /// default 70).
    pub max_limit: u16,
}

impl Default for MaxfwdSection {
    fn default() -> Self {
        MaxfwdSection {
            max_limit: DEFAULT_MAX_LIMIT,
        }
    }
}

impl MaxfwdSection {
    /// Check every key.
    pub fn validate(&self) -> Result<(), crate::SectionError> {
        if self.max_limit > 255 {
            return Err(crate::SectionError {
                section: "maxfwd",
                key: "max_limit",
                value: self.max_limit.to_string(),
                reason: "must be 0 to 255 (Max-Forwards is one byte in Kamailio)".into(),
            });
        }
        Ok(())
    }

    /// `max_limit` as the value the functions use.
    pub fn limit(&self) -> u8 {
        self.max_limit.min(255) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_bounds_and_unknown_keys() {
        let s: MaxfwdSection = toml::from_str("").unwrap();
        assert_eq!(s.limit(), 70);
        let s: MaxfwdSection = toml::from_str("max_limit = 256").unwrap();
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "[maxfwd] max_limit = 256: must be 0 to 255 (Max-Forwards is one byte in Kamailio)"
        );
        assert!(toml::from_str::<MaxfwdSection>("max_limt = 3").is_err());
    }
}
