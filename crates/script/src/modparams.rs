//! The config sections of the modules whose state the script layer keeps:
//! `[htable]` (Kamailio's htable `htable` parameter) and `[pike]`
//! (Kamailio's pike parameters), with Kamailio's names and defaults, so a
//! ported cfg's `modparam` lines map to TOML one for one.

use serde::Deserialize;
use std::time::Duration;

/// `[htable]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HtableSection {
    /// One definition per table, as Kamailio's `modparam("htable",
    /// "htable", ...)`: `"ipban=>size=8;autoexpire=300;"`. Recognised:
    /// `size` (Kamailio's hash size; accepted, no effect here),
    /// `autoexpire` (seconds after which an entry is gone; 0: never) and
    /// `updateexpire` (1: a write restarts the entry's time, Kamailio's
    /// default; 0: it does not). Tables not defined here are created on
    /// first write, without expiry.
    pub htable: Vec<String>,
    /// Ours: most keys in one table; past it new keys are refused (the
    /// write returns -1 and is logged), so a script keyed by something a
    /// peer controls cannot take all memory.
    pub max_entries: usize,
}

impl Default for HtableSection {
    fn default() -> Self {
        HtableSection {
            htable: Vec::new(),
            max_entries: 100_000,
        }
    }
}

/// One table's definition, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableDef {
    pub name: String,
    pub autoexpire: Option<Duration>,
    pub updateexpire: bool,
}

/// `[pike]`: Kamailio's pike flood detection per source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PikeSection {
    /// Seconds of one sampling unit.
    pub sampling_time_unit: u64,
    /// Requests from one address within one unit above which it is
    /// blocked.
    pub reqs_density_per_unit: u32,
    /// Units an address stays blocked after its flood stops.
    pub remove_latency: u64,
}

impl Default for PikeSection {
    fn default() -> Self {
        // Kamailio's pike defaults.
        PikeSection {
            sampling_time_unit: 2,
            reqs_density_per_unit: 30,
            remove_latency: 120,
        }
    }
}

/// A module setting that cannot be used: `[htable] htable = "...": ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[{section}] {key} = {value}: {reason}")]
pub struct ModParamError {
    /// The section.
    pub section: &'static str,
    /// The key.
    pub key: &'static str,
    /// The value as written.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

impl HtableSection {
    /// Check every definition.
    pub fn validate(&self) -> Result<(), ModParamError> {
        self.tables().map(drop)
    }

    pub(crate) fn tables(&self) -> Result<Vec<TableDef>, ModParamError> {
        self.htable.iter().map(|d| parse_table(d)).collect()
    }
}

fn parse_table(def: &str) -> Result<TableDef, ModParamError> {
    let bad = |reason: String| ModParamError {
        section: "htable",
        key: "htable",
        value: format!("{def:?}"),
        reason,
    };
    let (name, params) = def
        .split_once("=>")
        .ok_or_else(|| bad("expected \"name=>param=value;...\"".into()))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(bad("the table has no name".into()));
    }
    let mut t = TableDef {
        name: name.to_string(),
        autoexpire: None,
        updateexpire: true,
    };
    for p in params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| bad(format!("{p:?}: expected param=value")))?;
        let k = k.trim();
        if !matches!(k, "size" | "autoexpire" | "updateexpire") {
            return Err(bad(format!(
                "{k}: not supported here (size, autoexpire and updateexpire are)"
            )));
        }
        let n: u64 = v
            .trim()
            .parse()
            .map_err(|_| bad(format!("{k} = {v:?}: expected a whole number")))?;
        match k {
            "size" => {}
            "autoexpire" => t.autoexpire = (n > 0).then(|| Duration::from_secs(n)),
            _ => t.updateexpire = n != 0,
        }
    }
    Ok(t)
}

impl PikeSection {
    /// Check every key.
    pub fn validate(&self) -> Result<(), ModParamError> {
        let bad = |key, value: u64, reason: &str| ModParamError {
            section: "pike",
            key,
            value: value.to_string(),
            reason: reason.into(),
        };
        if !(1..=3600).contains(&self.sampling_time_unit) {
            return Err(bad(
                "sampling_time_unit",
                self.sampling_time_unit,
                "must be 1 to 3600 (seconds)",
            ));
        }
        if self.reqs_density_per_unit == 0 {
            return Err(bad("reqs_density_per_unit", 0, "must be at least 1"));
        }
        if self.remove_latency > 86_400 {
            return Err(bad(
                "remove_latency",
                self.remove_latency,
                "must be at most 86400 (units)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kamailio_table_definitions() {
        let h = HtableSection {
            htable: vec!["ipban=>size=8;autoexpire=300;".into(), "t=>".into()],
            ..HtableSection::default()
        };
        let t = h.tables().unwrap();
        assert_eq!(t[0].name, "ipban");
        assert_eq!(t[0].autoexpire, Some(Duration::from_secs(300)));
        assert!(t[0].updateexpire);
        assert_eq!(t[1].autoexpire, None);
        for (def, why) in [
            ("ipban", "name=>"),
            ("=>size=8", "no name"),
            ("x=>autoexpire=soon", "whole number"),
            ("x=>dbtable=t", "not supported"),
        ] {
            let e = HtableSection {
                htable: vec![def.into()],
                ..HtableSection::default()
            }
            .validate()
            .unwrap_err()
            .to_string();
            assert!(
                e.starts_with("[htable] htable = ") && e.contains(why),
                "{e}"
            );
        }
    }

    #[test]
    fn pike_bounds() {
        assert!(PikeSection::default().validate().is_ok());
        let e = PikeSection {
            sampling_time_unit: 0,
            ..PikeSection::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "[pike] sampling_time_unit = 0: must be 1 to 3600 (seconds)"
        );
    }
}
