//! The location table, sans I/O: every entry point takes `now` (ms on the
//! caller's clock), so tests move time by hand.
//!
//! Expiry is lazy with bounded work: each call first removes at most
//! [`REAP_BUDGET`] expired contacts, oldest first, from an ordered index,
//! and a record being read or written drops its own expired contacts (at
//! most `max_contacts`). No timer task is needed, and no call does work
//! proportional to the table's size. An expired contact is never
//! returned, whether or not it was reaped yet; memory stays bounded by
//! `max_aors * max_contacts` either way.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use super::config::UsrlocConfig;
use super::error::RegError;
use crate::request::Transport;

/// Expired contacts removed per call, at most.
pub const REAP_BUDGET: usize = 64;

/// A REGISTER with the same Call-ID and CSeq as the stored contact within
/// this long (ms) of its last update is a retransmission and changes
/// nothing; later, it is refused (Kamailio's usrloc `cseq_delay`, 20 s).
const CSEQ_DELAY_MS: u64 = 20_000;

/// One contact of an AoR as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The contact URI, as written between `<` and `>`.
    pub uri: String,
    /// When it expires (ms, the table's clock).
    pub expires_at: u64,
    /// q-value in thousandths (0 to 1000); `None` when the REGISTER gave
    /// none (it then ranks below q=0, as in Kamailio).
    pub q: Option<u16>,
    /// The REGISTER's Call-ID.
    pub call_id: String,
    /// The REGISTER's CSeq number.
    pub cseq: u32,
    /// Where the REGISTER came from.
    pub received: SocketAddr,
    /// Over which transport.
    pub transport: Transport,
    /// Its User-Agent (`n/a` when absent or longer than 255 bytes).
    pub user_agent: String,
    /// When it was last saved (ms).
    pub last_modified: u64,
    /// Insertion order, for ties and for the expiry index.
    id: u64,
}

impl Binding {
    /// Seconds left, rounded up (what a 200 OK's `expires` says).
    pub fn expires_in(&self, now: u64) -> u64 {
        self.expires_at.saturating_sub(now).div_ceil(1000)
    }
}

/// One contact as a REGISTER gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactIn {
    /// The URI.
    pub uri: String,
    /// Expires asked for (seconds; 0 removes). `None`: the configured
    /// `default_expires`.
    pub expires: Option<u32>,
    /// q-value in thousandths.
    pub q: Option<u16>,
}

/// What a REGISTER asks of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    /// No Contact header: list the bindings.
    Fetch,
    /// `Contact: *` with `Expires: 0`: remove them all.
    Star,
    /// Add, refresh or remove these.
    List(Vec<ContactIn>),
}

/// A REGISTER, as the table needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// The address-of-record (normalised, see [`super::aor_of`]).
    pub aor: String,
    /// What to do.
    pub contacts: Contacts,
    /// Its Call-ID.
    pub call_id: String,
    /// Its CSeq number.
    pub cseq: u32,
    /// Its source address.
    pub received: SocketAddr,
    /// Its transport.
    pub transport: Transport,
    /// Its User-Agent.
    pub user_agent: String,
}

/// A successful save: Kamailio's return code and the AoR's contacts now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// 1 added (or nothing changed), 2 refreshed, 3 removed (the last
    /// change made decides, as in Kamailio), 3 also for `*`, 4 fetched.
    pub code: i64,
    /// The AoR's valid contacts, best first.
    pub bindings: Vec<Binding>,
}

/// The table: contacts per AoR, and an index of them by expiry time.
#[derive(Debug)]
pub struct Table {
    cfg: UsrlocConfig,
    aors: HashMap<Arc<str>, Vec<Binding>>,
    /// (expires_at, id) of every stored contact → its AoR: the oldest
    /// expiry first, so reaping is a walk from the front.
    expiry: BTreeMap<(u64, u64), Arc<str>>,
    next_id: u64,
}

impl Table {
    /// An empty table with these limits (validated by the caller).
    pub fn new(cfg: UsrlocConfig) -> Table {
        Table {
            cfg,
            aors: HashMap::new(),
            expiry: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// The limits.
    pub fn config(&self) -> &UsrlocConfig {
        &self.cfg
    }

    /// AoRs held (some may hold only expired contacts not yet reaped).
    pub fn aor_count(&self) -> usize {
        self.aors.len()
    }

    /// Contacts held, expired ones not yet reaped included.
    pub fn contact_count(&self) -> usize {
        self.expiry.len()
    }

    /// Remove at most `budget` expired contacts, oldest first.
    pub fn reap(&mut self, now: u64, budget: usize) -> usize {
        let mut n = 0;
        while n < budget {
            let Some(entry) = self.expiry.first_entry() else {
                break;
            };
            if entry.key().0 > now {
                break;
            }
            let ((_, id), aor) = entry.remove_entry();
            if let Some(list) = self.aors.get_mut(&aor) {
                list.retain(|b| b.id != id);
                if list.is_empty() {
                    self.aors.remove(&aor);
                }
            }
            n += 1;
        }
        n
    }

    /// Drop the expired contacts of one AoR (and the AoR when none is
    /// left).
    fn purge(&mut self, aor: &str, now: u64) {
        let Some(list) = self.aors.get_mut(aor) else {
            return;
        };
        let expiry = &mut self.expiry;
        list.retain(|b| {
            let keep = b.expires_at > now;
            if !keep {
                expiry.remove(&(b.expires_at, b.id));
            }
            keep
        });
        if list.is_empty() {
            self.aors.remove(aor);
        }
    }

    /// The AoR's valid contacts, best first: highest q, then the most
    /// recently saved.
    pub fn lookup(&mut self, aor: &str, now: u64) -> Vec<Binding> {
        self.reap(now, REAP_BUDGET);
        self.purge(aor, now);
        let mut list = self.aors.get(aor).cloned().unwrap_or_default();
        sort_best_first(&mut list);
        list
    }

    /// Remove every contact of the AoR; how many there were.
    pub fn remove(&mut self, aor: &str, now: u64) -> usize {
        self.reap(now, REAP_BUDGET);
        self.purge(aor, now);
        let Some(list) = self.aors.remove(aor) else {
            return 0;
        };
        for b in &list {
            self.expiry.remove(&(b.expires_at, b.id));
        }
        list.len()
    }

    /// Apply a REGISTER (Kamailio's `save`), all or nothing: every check
    /// (expires, CSeq, limits) passes before anything changes. `replace`:
    /// the AoR keeps only the first contact added or refreshed (Kamailio's
    /// save flag 0x04).
    pub fn save(&mut self, reg: &Register, replace: bool, now: u64) -> Result<Saved, RegError> {
        self.reap(now, REAP_BUDGET);
        self.purge(&reg.aor, now);
        let list = match &reg.contacts {
            Contacts::Fetch => {
                return Ok(Saved {
                    code: 4,
                    bindings: self.lookup(&reg.aor, now),
                })
            }
            Contacts::Star => {
                self.remove(&reg.aor, now);
                return Ok(Saved {
                    code: 3,
                    bindings: Vec::new(),
                });
            }
            Contacts::List(list) => list,
        };
        // The same URI twice in one REGISTER: the last one counts.
        let mut asked: Vec<(&str, u32, Option<u16>)> = Vec::with_capacity(list.len());
        for c in list {
            let e = self.expires_of(c.expires)?;
            match asked.iter_mut().find(|a| a.0 == c.uri) {
                Some(a) => (a.1, a.2) = (e, c.q),
                None => asked.push((&c.uri, e, c.q)),
            }
        }
        let current = self.aors.get(reg.aor.as_str());
        // What each asked contact does to the record.
        let mut ops = Vec::with_capacity(asked.len());
        for &(uri, e, q) in &asked {
            let found = current.and_then(|l| l.iter().enumerate().find(|(_, b)| b.uri == uri));
            let op = match found {
                Some((i, b)) => {
                    if b.call_id == reg.call_id && reg.cseq <= b.cseq {
                        let retransmission =
                            reg.cseq == b.cseq && now < b.last_modified + CSEQ_DELAY_MS;
                        if !retransmission {
                            return Err(RegError::InvalidCseq {
                                uri: uri.to_owned(),
                                cseq: reg.cseq,
                                stored: b.cseq,
                            });
                        }
                        Op::Skip
                    } else if e == 0 {
                        Op::Delete(i)
                    } else {
                        Op::Update(i)
                    }
                }
                None if e == 0 => Op::Skip,
                None => Op::Insert,
            };
            ops.push((uri, e, q, op));
        }
        let have = current.map_or(0, Vec::len);
        if !replace {
            let added = ops.iter().filter(|o| matches!(o.3, Op::Insert)).count();
            let deleted = ops.iter().filter(|o| matches!(o.3, Op::Delete(_))).count();
            let want = have + added - deleted;
            if want > self.cfg.max_contacts {
                return Err(RegError::TooManyContacts {
                    aor: reg.aor.clone(),
                    want,
                    max: self.cfg.max_contacts,
                });
            }
        }
        let inserts = ops.iter().any(|o| matches!(o.3, Op::Insert));
        if current.is_none() && inserts && self.aors.len() >= self.cfg.max_aors {
            return Err(RegError::TableFull {
                aor: reg.aor.clone(),
                max: self.cfg.max_aors,
            });
        }
        // Every check passed: apply.
        let key: Arc<str> = match self.aors.get_key_value(reg.aor.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(reg.aor.as_str()),
        };
        let mut record = self.aors.remove(&key).unwrap_or_default();
        let mut code = 0;
        let mut deleted = Vec::new();
        for (uri, e, q, op) in ops {
            let expires_at = now + u64::from(e) * 1000;
            let kept = match op {
                Op::Skip => continue,
                Op::Delete(i) => {
                    deleted.push(i);
                    code = 3;
                    continue;
                }
                Op::Update(i) => {
                    let b = &mut record[i];
                    self.expiry.remove(&(b.expires_at, b.id));
                    b.expires_at = expires_at;
                    b.q = q;
                    b.call_id.clone_from(&reg.call_id);
                    b.cseq = reg.cseq;
                    b.received = reg.received;
                    b.transport = reg.transport;
                    b.user_agent.clone_from(&reg.user_agent);
                    b.last_modified = now;
                    self.expiry.insert((expires_at, b.id), key.clone());
                    code = 2;
                    b.id
                }
                Op::Insert => {
                    let id = self.next_id;
                    self.next_id += 1;
                    record.push(Binding {
                        uri: uri.to_owned(),
                        expires_at,
                        q,
                        call_id: reg.call_id.clone(),
                        cseq: reg.cseq,
                        received: reg.received,
                        transport: reg.transport,
                        user_agent: reg.user_agent.clone(),
                        last_modified: now,
                        id,
                    });
                    self.expiry.insert((expires_at, id), key.clone());
                    code = 1;
                    id
                }
            };
            if replace {
                // One contact per AoR: the first one saved stays.
                deleted.clear();
                for (i, b) in record.iter().enumerate() {
                    if b.id != kept {
                        deleted.push(i);
                    }
                }
                break;
            }
        }
        deleted.sort_unstable();
        deleted.dedup();
        for i in deleted.into_iter().rev() {
            let b = record.remove(i);
            self.expiry.remove(&(b.expires_at, b.id));
        }
        let mut bindings = record.clone();
        if !record.is_empty() {
            self.aors.insert(key, record);
        }
        sort_best_first(&mut bindings);
        Ok(Saved {
            code: if code == 0 { 1 } else { code },
            bindings,
        })
    }

    /// The expires a contact gets: the default when it names none, refused
    /// below `min_expires` (0 passes: it removes), cut to `max_expires`.
    fn expires_of(&self, asked: Option<u32>) -> Result<u32, RegError> {
        let e = asked.unwrap_or(self.cfg.default_expires);
        if e != 0 && e < self.cfg.min_expires {
            return Err(RegError::IntervalTooBrief {
                asked: e,
                min: self.cfg.min_expires,
            });
        }
        Ok(e.min(self.cfg.max_expires))
    }
}

/// What one asked contact does to the stored record.
enum Op {
    Skip,
    Insert,
    Update(usize),
    Delete(usize),
}

/// Highest q first (an unspecified q last), then the most recently saved.
fn sort_best_first(list: &mut [Binding]) {
    list.sort_by_key(|b| std::cmp::Reverse((b.q, b.last_modified, b.id)));
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
