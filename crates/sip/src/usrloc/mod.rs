//! The in-memory location table (Kamailio's usrloc) and the registrar's
//! rules for filling it from a REGISTER.
//!
//! - [`Table`] is the state, sans I/O: every entry point takes `now`, so it
//!   is tested with a clock moved by hand; expired contacts are removed
//!   lazily, a bounded number per call (see `table.rs` for why no timer).
//! - [`Usrloc`] is the table behind one lock with a clock, as the host
//!   holds it ([`crate::SipHandle::usrloc`]); every call does bounded work
//!   under the lock (at most [`REAP_BUDGET`] expired contacts reaped, one
//!   AoR read or written), so one lock is enough.
//! - [`register_of`] reads a REGISTER, [`aor_of`] a URI's AoR, and
//!   [`contact_line`] writes the Contact line of the 200 OK.
//!
//! Memory is bounded by `[usrloc] max_aors * max_contacts` contacts of at
//! most 512 + 255 + 255 bytes of text each.

mod config;
mod error;
mod register;
mod table;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

pub use config::UsrlocConfig;
pub use error::RegError;
pub use register::{aor_of, contact_line, format_q, parse_q, register_of};
pub use table::{Binding, ContactIn, Contacts, Register, Saved, Table, REAP_BUDGET};

/// The table stays usable after a panic elsewhere: its state is valid
/// between calls.
fn lock(m: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a [`Usrloc`] reads the time.
#[derive(Debug)]
enum Clock {
    /// Milliseconds since this instant.
    Real(Instant),
    /// Milliseconds set by hand ([`Usrloc::advance`]).
    Manual(AtomicU64),
}

/// The location table behind one lock, with its clock: what the host holds
/// and the registrar functions use, from any thread.
#[derive(Debug)]
pub struct Usrloc {
    table: Mutex<Table>,
    clock: Clock,
}

impl Usrloc {
    /// An empty table on the real clock. `cfg` should have passed
    /// [`UsrlocConfig::validate`] (the host checks it when it binds).
    pub fn new(cfg: UsrlocConfig) -> Usrloc {
        Usrloc {
            table: Mutex::new(Table::new(cfg)),
            clock: Clock::Real(Instant::now()),
        }
    }

    /// An empty table whose clock stands still until
    /// [`Usrloc::advance`]: for tests of code that registers and expires
    /// contacts.
    pub fn with_manual_clock(cfg: UsrlocConfig) -> Usrloc {
        Usrloc {
            table: Mutex::new(Table::new(cfg)),
            clock: Clock::Manual(AtomicU64::new(0)),
        }
    }

    /// Move a manual clock forward by `ms`; false (and nothing done) on
    /// the real clock.
    pub fn advance(&self, ms: u64) -> bool {
        match &self.clock {
            Clock::Manual(t) => {
                t.fetch_add(ms, Ordering::SeqCst);
                true
            }
            Clock::Real(_) => false,
        }
    }

    /// The table's time (ms).
    pub fn now(&self) -> u64 {
        match &self.clock {
            Clock::Real(epoch) => epoch.elapsed().as_millis() as u64,
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// The settings.
    pub fn config(&self) -> UsrlocConfig {
        lock(&self.table).config().clone()
    }

    /// Apply a REGISTER ([`Table::save`]). Nothing is logged here: the
    /// caller (`KSR.registrar.save`) logs a refusal with the script line,
    /// the Call-ID and the sender.
    pub fn save(&self, reg: &Register, replace: bool) -> Result<Saved, RegError> {
        let now = self.now();
        lock(&self.table).save(reg, replace, now)
    }

    /// The AoR's valid contacts, best first ([`Table::lookup`]).
    pub fn lookup(&self, aor: &str) -> Vec<Binding> {
        let now = self.now();
        lock(&self.table).lookup(aor, now)
    }

    /// Remove every contact of the AoR; how many there were.
    pub fn remove(&self, aor: &str) -> usize {
        let now = self.now();
        lock(&self.table).remove(aor, now)
    }

    /// AoRs and contacts held (expired ones not yet reaped included).
    pub fn counts(&self) -> (usize, usize) {
        let t = lock(&self.table);
        (t.aor_count(), t.contact_count())
    }
}
