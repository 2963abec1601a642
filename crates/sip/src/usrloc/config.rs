//! `[usrloc]`: the location table's limits and registration timers, under
//! Kamailio's names (its usrloc and registrar module parameters), owned
//! here like `[sip]` and `[tm]`.

use serde::Deserialize;

use crate::config::ConfigError;

/// Longest registration accepted in the config (seconds): a year. Kamailio
/// has no such bound; ours keeps `now + expires` far from overflowing and
/// a typo (an extra zero or three) from pinning contacts for ever.
const YEAR_S: u32 = 31_536_000;

/// Most contacts one AoR may be given in the config: the table holds up to
/// `max_aors * max_contacts` contacts, so both bounds are needed to keep
/// memory bounded.
const MAX_CONTACTS: usize = 1000;

/// Most AoRs the config may ask for (a contact costs a few hundred bytes,
/// so this is gigabytes).
const MAX_AORS: usize = 10_000_000;

/// `[usrloc]`: the in-memory location table (Kamailio's usrloc) and the
/// registrar's timers. Every key has a default; unknown keys are refused.
///
/// Differences from Kamailio: `max_contacts` defaults to 10 and cannot be
/// 0 (Kamailio's registrar default is 0 = unlimited), and `max_aors` is
/// ours: together they bound the table's memory, so a REGISTER flood is
/// refused (503) instead of taking all memory. `max_expires` cannot be 0
/// (Kamailio: 0 = no maximum).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsrlocConfig {
    /// Most contacts one address-of-record may hold (1 to 1000). A
    /// REGISTER that would go past it is refused with 503 (Kamailio's
    /// `max_contacts` and reply).
    pub max_contacts: usize,
    /// Most addresses-of-record held at once (1 to 10,000,000). A REGISTER
    /// for a new AoR beyond it is refused with 503 and a log line.
    pub max_aors: usize,
    /// Expires (seconds) given to a contact whose REGISTER names none,
    /// neither as a Contact `expires` parameter nor as an Expires header.
    /// From `min_expires` (at least 1) to `max_expires`.
    pub default_expires: u32,
    /// Shortest registration accepted (seconds); a shorter non-zero one is
    /// refused with 423 Interval Too Brief and `Min-Expires` (Kamailio's
    /// `min_expires_mode = 1`; its default mode raises it silently). 0
    /// accepts any.
    pub min_expires: u32,
    /// Longest registration (seconds, 1 to a year, at least
    /// `min_expires`); longer ones are cut to it.
    pub max_expires: u32,
    /// Whether the AoR is `user@host` (true) or the user part alone
    /// (false), as Kamailio's usrloc `use_domain` (default off).
    pub use_domain: bool,
}

impl Default for UsrlocConfig {
    fn default() -> Self {
        UsrlocConfig {
            max_contacts: 10,
            max_aors: 100_000,
            default_expires: 3600,
            min_expires: 60,
            max_expires: 3600,
            use_domain: false,
        }
    }
}

impl UsrlocConfig {
    /// Check every key of `[usrloc]`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, value: &dyn std::fmt::Display, reason: String| {
            Err(ConfigError {
                section: "usrloc",
                key,
                value: value.to_string(),
                reason,
            })
        };
        if !(1..=MAX_CONTACTS).contains(&self.max_contacts) {
            return bad(
                "max_contacts",
                &self.max_contacts,
                format!("must be 1 to {MAX_CONTACTS} (0, Kamailio's unlimited, is refused: memory must stay bounded)"),
            );
        }
        if !(1..=MAX_AORS).contains(&self.max_aors) {
            return bad(
                "max_aors",
                &self.max_aors,
                format!("must be 1 to {MAX_AORS}"),
            );
        }
        if !(1..=YEAR_S).contains(&self.max_expires) {
            return bad(
                "max_expires",
                &self.max_expires,
                format!("must be 1 to {YEAR_S} (seconds)"),
            );
        }
        if self.min_expires > self.max_expires {
            return bad(
                "min_expires",
                &self.min_expires,
                format!("must not exceed max_expires = {}", self.max_expires),
            );
        }
        let low = self.min_expires.max(1);
        if !(low..=self.max_expires).contains(&self.default_expires) {
            return bad(
                "default_expires",
                &self.default_expires,
                format!(
                    "must be {low} to {} (from min_expires, at least 1, to max_expires)",
                    self.max_expires
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(c: UsrlocConfig) -> String {
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn deserializes_with_defaults_and_refuses_unknown_keys() {
        let c: UsrlocConfig = toml::from_str("max_contacts = 3\nuse_domain = true").unwrap();
        assert_eq!(
            (c.max_contacts, c.max_aors, c.use_domain),
            (3, 100_000, true)
        );
        assert_eq!(
            (c.default_expires, c.min_expires, c.max_expires),
            (3600, 60, 3600)
        );
        assert!(toml::from_str::<UsrlocConfig>("max_contact = 3").is_err());
        assert!(UsrlocConfig::default().validate().is_ok());
        // Composed into the host's settings, checked with them.
        let h: crate::HostConfig = toml::from_str("[usrloc]\nmax_aors = 0").unwrap();
        assert_eq!(
            h.validate().unwrap_err().to_string(),
            "[usrloc] max_aors = 0: must be 1 to 10000000"
        );
    }

    #[test]
    fn bounds_name_section_key_and_value() {
        let d = UsrlocConfig::default;
        for (c, want) in [
            (
                UsrlocConfig { max_contacts: 0, ..d() },
                "[usrloc] max_contacts = 0: must be 1 to 1000 (0, Kamailio's unlimited, is refused: memory must stay bounded)",
            ),
            (
                UsrlocConfig { max_aors: 0, ..d() },
                "[usrloc] max_aors = 0: must be 1 to 10000000",
            ),
            (
                UsrlocConfig { max_expires: 0, ..d() },
                "[usrloc] max_expires = 0: must be 1 to 31536000 (seconds)",
            ),
            (
                UsrlocConfig { min_expires: 4000, ..d() },
                "[usrloc] min_expires = 4000: must not exceed max_expires = 3600",
            ),
            (
                UsrlocConfig { default_expires: 30, ..d() },
                "[usrloc] default_expires = 30: must be 60 to 3600 (from min_expires, at least 1, to max_expires)",
            ),
        ] {
            assert_eq!(err(c), want);
        }
        assert!(UsrlocConfig {
            min_expires: 0,
            default_expires: 1,
            max_expires: 1,
            max_contacts: 1000,
            ..d()
        }
        .validate()
        .is_ok());
    }
}
