//! `$shv` and `$sht`: variables shared by every worker.

use crate::pv::PvValue;
use std::collections::HashMap;
use std::sync::Mutex;

/// Shared variables (`$shv(name)`) and shared tables (`$sht(table=>key)`).
///
/// One lock each: scripts touch them a few times per message, far from the
/// cost that would justify sharding.
#[derive(Debug, Default)]
pub(crate) struct SharedVars {
    shv: Mutex<HashMap<String, PvValue>>,
    sht: Mutex<HashMap<String, HashMap<String, PvValue>>>,
}

impl SharedVars {
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
        self.sht
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(table)?
            .get(key)
            .cloned()
    }

    pub fn sht_set(&self, table: &str, key: &str, value: Option<PvValue>) {
        let mut m = self.sht.lock().unwrap_or_else(|e| e.into_inner());
        match value {
            Some(v) => {
                m.entry(table.to_string())
                    .or_default()
                    .insert(key.to_string(), v);
            }
            None => {
                if let Some(t) = m.get_mut(table) {
                    t.remove(key);
                    if t.is_empty() {
                        m.remove(table);
                    }
                }
            }
        }
    }
}
