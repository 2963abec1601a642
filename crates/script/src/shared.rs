//! State shared by every worker: `$shv`, the `$sht` tables (Kamailio's
//! htable, with its `autoexpire`) and pike's per-address counters.

use crate::modparams::{HtableSection, PikeSection, TableDef};
use crate::pv::PvValue;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One `$sht` value and when it expires.
#[derive(Debug, Clone)]
struct Entry {
    value: PvValue,
    expires: Option<Instant>,
}

/// One `$sht` table.
#[derive(Debug, Default)]
struct Table {
    autoexpire: Option<Duration>,
    updateexpire: bool,
    entries: HashMap<String, Entry>,
}

impl Table {
    fn live(&self, key: &str, now: Instant) -> Option<&Entry> {
        self.entries
            .get(key)
            .filter(|e| e.expires.is_none_or(|t| t > now))
    }

    fn purge(&mut self, now: Instant) {
        self.entries
            .retain(|_, e| e.expires.is_none_or(|t| t > now));
    }
}

/// The `$sht` table asked for does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoTable;

/// Why a `$sht` write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableFull {
    pub max: usize,
}

/// Shared variables (`$shv(name)`), shared tables (`$sht(table=>key)`)
/// and pike's counters.
///
/// One lock each: scripts touch them a few times per message, far from the
/// cost that would justify sharding.
#[derive(Debug)]
pub(crate) struct SharedVars {
    shv: Mutex<HashMap<String, PvValue>>,
    sht: Mutex<HashMap<String, Table>>,
    max_entries: usize,
    pub pike: Pike,
}

impl Default for SharedVars {
    fn default() -> Self {
        SharedVars::new(&HtableSection::default(), PikeSection::default())
    }
}

impl SharedVars {
    /// With the tables and limits of `[htable]` (already validated) and
    /// the parameters of `[pike]`.
    pub fn new(htable: &HtableSection, pike: PikeSection) -> Self {
        let tables = htable.tables().unwrap_or_default();
        let sht = tables
            .into_iter()
            .map(
                |TableDef {
                     name,
                     autoexpire,
                     updateexpire,
                 }| {
                    (
                        name,
                        Table {
                            autoexpire,
                            updateexpire,
                            entries: HashMap::new(),
                        },
                    )
                },
            )
            .collect();
        SharedVars {
            shv: Mutex::default(),
            sht: Mutex::new(sht),
            max_entries: htable.max_entries,
            pike: Pike::new(pike),
        }
    }

    pub fn shv_get(&self, name: &str) -> Option<PvValue> {
        self.shv
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn shv_set(&self, name: &str, value: Option<PvValue>) {
        let mut m = self.shv.lock().unwrap_or_else(|e| e.into_inner());
        match value {
            Some(v) => {
                m.insert(name.to_string(), v);
            }
            None => {
                m.remove(name);
            }
        }
    }

    pub fn sht_get(&self, table: &str, key: &str) -> Option<PvValue> {
        let m = self.sht.lock().unwrap_or_else(|e| e.into_inner());
        m.get(table)?
            .live(key, Instant::now())
            .map(|e| e.value.clone())
    }

    /// Set (or with `None`, remove) `table=>key`; refused when the table is
    /// full of live entries.
    pub fn sht_set(&self, table: &str, key: &str, value: Option<PvValue>) -> Result<(), TableFull> {
        let now = Instant::now();
        let mut m = self.sht.lock().unwrap_or_else(|e| e.into_inner());
        let Some(value) = value else {
            if let Some(t) = m.get_mut(table) {
                t.entries.remove(key);
            }
            return Ok(());
        };
        let t = m.entry(table.to_string()).or_insert_with(|| Table {
            updateexpire: true,
            ..Table::default()
        });
        if !t.entries.contains_key(key) && t.entries.len() >= self.max_entries {
            t.purge(now);
            if t.entries.len() >= self.max_entries {
                return Err(TableFull {
                    max: self.max_entries,
                });
            }
        }
        let fresh = t.autoexpire.map(|d| now + d);
        let expires = match t.live(key, now) {
            Some(old) if !t.updateexpire => old.expires,
            _ => fresh,
        };
        t.entries.insert(key.to_string(), Entry { value, expires });
        Ok(())
    }

    /// Whether `table` exists (defined in `[htable]`, or written once).
    pub fn sht_exists(&self, table: &str) -> bool {
        self.sht
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(table)
    }

    /// The live value of `table=>key` and how long it has left (`None`:
    /// no expiry). `Err` when the table does not exist, `Ok(None)` when
    /// the key does not.
    pub fn sht_entry(
        &self,
        table: &str,
        key: &str,
    ) -> Result<Option<(PvValue, Option<Duration>)>, NoTable> {
        let now = Instant::now();
        let m = self.sht.lock().unwrap_or_else(|e| e.into_inner());
        let t = m.get(table).ok_or(NoTable)?;
        Ok(t.live(key, now)
            .map(|e| (e.value.clone(), e.expires.map(|x| x - now))))
    }

    /// Remove `table=>key`: whether a live one was there. `Err` when the
    /// table does not exist.
    pub fn sht_delete(&self, table: &str, key: &str) -> Result<bool, NoTable> {
        let now = Instant::now();
        let mut m = self.sht.lock().unwrap_or_else(|e| e.into_inner());
        let t = m.get_mut(table).ok_or(NoTable)?;
        let live = t.live(key, now).is_some();
        t.entries.remove(key);
        Ok(live)
    }

    /// The live entries of `table`, sorted by key. `Err` when the table
    /// does not exist.
    pub fn sht_dump(&self, table: &str) -> Result<Vec<(String, PvValue)>, NoTable> {
        let now = Instant::now();
        let m = self.sht.lock().unwrap_or_else(|e| e.into_inner());
        let t = m.get(table).ok_or(NoTable)?;
        let mut all: Vec<(String, PvValue)> = t
            .entries
            .iter()
            .filter(|(_, e)| e.expires.is_none_or(|x| x > now))
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }

    /// Whether any live key of `table` matches `f`.
    pub fn sht_any_key(&self, table: &str, f: impl Fn(&str) -> bool) -> bool {
        let now = Instant::now();
        let m = self.sht.lock().unwrap_or_else(|e| e.into_inner());
        m.get(table).is_some_and(|t| {
            t.entries
                .iter()
                .any(|(k, e)| e.expires.is_none_or(|x| x > now) && f(k))
        })
    }
}

/// Addresses pike follows at once; past it, idle ones are forgotten, and
/// if none is idle a new address is not followed (and not blocked), so a
/// spoofed flood cannot take all memory.
const PIKE_MAX_ADDRESSES: usize = 100_000;

/// Kamailio's pike: requests per source address per sampling unit; an
/// address above the density is blocked until it has stayed below it for
/// `remove_latency` units.
#[derive(Debug)]
pub(crate) struct Pike {
    params: PikeSection,
    seen: Mutex<HashMap<IpAddr, PikeEntry>>,
}

#[derive(Debug, Clone, Copy)]
struct PikeEntry {
    unit_start: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

impl Pike {
    fn new(params: PikeSection) -> Self {
        Pike {
            params,
            seen: Mutex::default(),
        }
    }

    /// Count one request from `ip` at `now`: false when `ip` is blocked.
    pub fn check(&self, ip: IpAddr, now: Instant) -> bool {
        let unit = Duration::from_secs(self.params.sampling_time_unit);
        let latency = unit * self.params.remove_latency.max(1) as u32;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains_key(&ip) && seen.len() >= PIKE_MAX_ADDRESSES {
            seen.retain(|_, e| {
                now.duration_since(e.unit_start) < latency
                    || e.blocked_until.is_some_and(|b| b > now)
            });
            if seen.len() >= PIKE_MAX_ADDRESSES {
                return true;
            }
        }
        let e = seen.entry(ip).or_insert(PikeEntry {
            unit_start: now,
            count: 0,
            blocked_until: None,
        });
        if now.duration_since(e.unit_start) >= unit {
            e.unit_start = now;
            e.count = 0;
        }
        e.count = e.count.saturating_add(1);
        if e.count > self.params.reqs_density_per_unit {
            e.blocked_until = Some(now + latency);
        }
        e.blocked_until.is_none_or(|b| b <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autoexpire_and_the_entry_cap() {
        let h = HtableSection {
            htable: vec!["ban=>autoexpire=1;".into()],
            max_entries: 2,
        };
        let s = SharedVars::new(&h, PikeSection::default());
        s.sht_set("ban", "a", Some(PvValue::Int(1))).unwrap();
        s.sht_set("ban", "b", Some(PvValue::Int(1))).unwrap();
        assert_eq!(
            s.sht_set("ban", "c", Some(PvValue::Int(1))),
            Err(TableFull { max: 2 })
        );
        assert!(s.sht_any_key("ban", |k| k == "a"));
        // Entries past their time are gone for readers, and make room.
        {
            let mut m = s.sht.lock().unwrap();
            for e in m.get_mut("ban").unwrap().entries.values_mut() {
                e.expires = Some(Instant::now() - Duration::from_millis(1));
            }
        }
        assert_eq!(s.sht_get("ban", "a"), None);
        assert!(!s.sht_any_key("ban", |_| true));
        s.sht_set("ban", "c", Some(PvValue::Int(1))).unwrap();
        assert_eq!(s.sht_get("ban", "c"), Some(PvValue::Int(1)));
    }

    #[test]
    fn pike_blocks_a_flood_then_forgives() {
        let p = Pike::new(PikeSection {
            sampling_time_unit: 2,
            reqs_density_per_unit: 16,
            remove_latency: 4,
        });
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..16).all(|_| p.check(ip, t0)));
        assert!(!p.check(ip, t0), "the 17th in one unit is blocked");
        assert!(p.check(other, t0), "another address is not");
        // Still blocked while within remove_latency units of the flood.
        assert!(!p.check(ip, t0 + Duration::from_secs(7)));
        // Quiet long enough: allowed again.
        assert!(p.check(ip, t0 + Duration::from_secs(16)));
    }
}
