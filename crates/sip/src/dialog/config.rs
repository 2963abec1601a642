//! `[dialog]`: dialog tracking (Kamailio's dialog module parameters),
//! owned here like `[sip]`, `[tm]` and `[usrloc]`.

use serde::Deserialize;

use crate::config::ConfigError;

/// Longest dialog lifetime accepted (seconds): a week. Kamailio has no
/// bound; ours keeps a typo from pinning a dead call's state for years.
pub const MAX_TIMEOUT_S: u32 = 7 * 86_400;

/// Most dialogs the config may allow at once.
const MAX_DIALOGS: usize = 10_000_000;

/// `[dialog]`: dialog tracking. Every key has a default; unknown keys are
/// refused.
///
/// Differences from Kamailio: `timeout_bye` is ours and on by default
/// (Kamailio sends BYE at the timeout only for dialogs flagged with
/// `$dlg_ctx(timeout_bye)`; without it the dialog is only forgotten, and
/// both phones stay in a call that nobody bills); `max_dialogs` is ours, so
/// an INVITE flood cannot take all memory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DialogConfig {
    /// Lifetime of an answered dialog (seconds, 1 to a week) unless the
    /// script sets another with `dlg_set_timeout`: Kamailio's
    /// `default_timeout`, 43200 (12 hours).
    pub default_timeout: u32,
    /// The KEMI function that gets the dialog events (`dialog:start`,
    /// `dialog:end`, `dialog:failed`), called with the event name as its
    /// argument: Kamailio's `event_callback`. Empty: no events.
    pub event_callback: String,
    /// Whether a dialog that reaches its timeout gets a BYE on both sides
    /// (true) or is only forgotten (false, Kamailio's default).
    pub timeout_bye: bool,
    /// Most dialogs tracked at once (1 to 10,000,000); `dlg_manage` beyond
    /// it fails (-1), and the call goes on untracked.
    pub max_dialogs: usize,
}

impl Default for DialogConfig {
    fn default() -> Self {
        DialogConfig {
            default_timeout: 43_200,
            event_callback: String::new(),
            timeout_bye: true,
            max_dialogs: 1_000_000,
        }
    }
}

impl DialogConfig {
    /// Check every key of `[dialog]`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_TIMEOUT_S).contains(&self.default_timeout) {
            return Err(ConfigError::new(
                "dialog",
                "default_timeout",
                self.default_timeout,
                format!("must be 1 to {MAX_TIMEOUT_S} (seconds: a week at most)"),
            ));
        }
        let cb = &self.event_callback;
        let ident = cb
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_alphabetic() || c == '_')
            && cb.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            return Err(ConfigError::new(
                "dialog",
                "event_callback",
                format!("{cb:?}"),
                "must be the name of a Lua function (letters, digits, _), or empty",
            ));
        }
        if !(1..=MAX_DIALOGS).contains(&self.max_dialogs) {
            return Err(ConfigError::new(
                "dialog",
                "max_dialogs",
                self.max_dialogs,
                format!("must be 1 to {MAX_DIALOGS}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_is_checked_and_named() {
        DialogConfig::default().validate().unwrap();
        let bad = |c: DialogConfig| c.validate().unwrap_err().to_string();
        let e = bad(DialogConfig {
            default_timeout: 0,
            ..Default::default()
        });
        assert!(e.contains("[dialog] default_timeout = 0"), "{e}");
        let e = bad(DialogConfig {
            event_callback: "a b".into(),
            ..Default::default()
        });
        assert!(e.contains("[dialog] event_callback = \"a b\""), "{e}");
        let e = bad(DialogConfig {
            max_dialogs: 0,
            ..Default::default()
        });
        assert!(e.contains("max_dialogs = 0"), "{e}");
        DialogConfig {
            event_callback: "ksr_dialog_event".into(),
            ..Default::default()
        }
        .validate()
        .unwrap();
    }
}
