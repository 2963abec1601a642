//! Dialog tracking (Kamailio's dialog module): a call from its INVITE to
//! its BYE, so a router can know when a call it let through is answered
//! and when it is over, and end it.
//!
//! - The script asks for tracking on an initial INVITE
//!   ([`Dialogs::manage`], `KSR.dialog.dlg_manage()`): the dialog is
//!   created (state 1, unconfirmed), a `;did=` parameter goes into our
//!   Record-Route, and the INVITE's transaction carries the dialog.
//! - The INVITE's final reply, as it goes upstream, decides: a 2xx
//!   answers it (state 3, `dialog:start`, as Kamailio raises it: at the
//!   2xx, before the ACK), a reply >= 300 (a CANCEL's 487, a timeout's
//!   408 included) fails it (`dialog:failed`).
//! - In-dialog requests are matched when the script loose-routes them
//!   (`KSR.rr.loose_route()`, as Kamailio's rr callback) or calls
//!   `dlg_manage()` on them: by the `did` of the Route that named us,
//!   else by Call-ID and tags. Each side's CSeq is tracked; the ACK
//!   confirms (state 4); a BYE from either side ends it (`dialog:end`).
//!   Matching never refuses a request: an unknown one is routed or
//!   refused by the script alone, as with Kamailio.
//! - [`Dialogs::bye`] (`dlg_bye`, `dlg.end_dlg`) and the lifetime timer
//!   (`[dialog] default_timeout`, `dlg_set_timeout`) send BYE to the
//!   sides (the `bye` file): `dialog:end` at once, and the dialog leaves the
//!   table when every BYE got its final reply or timed out (64*T1).
//!
//! Every event is raised exactly once per dialog; it is delivered to the
//! router thread of the call's Call-ID ([`crate::Router::dialog_event`]),
//! after the message that caused it, with a snapshot of the dialog.
//!
//! Files: `table` (one shard, sans I/O, tested with a hand-moved clock),
//! `bye` (the BYE and its branch), `config` (`[dialog]`), `rpc` (the
//! `dlg.*` admin methods), `types` (the public types); this file holds
//! [`Dialogs`], the sharded table as the host holds it.

mod bye;
mod config;
pub mod rpc;
mod table;
#[cfg(test)]
mod tests;
mod types;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::message::SipMessage;
use crate::request::{Request, Transport};
use crate::tm::Dest;
use bye::ByeBranch;
pub use config::{DialogConfig, MAX_TIMEOUT_S};
use table::{Out, Shard};
pub use types::{
    DialogError, DialogEvent, DialogInfo, DlgId, DlgState, EndReason, Side, MAX_PROFILES, MAX_VARS,
    MAX_VAR_LEN,
};

/// Hash buckets of `h_entry`, as Kamailio's default `hash_size`.
pub const HASH_SIZE: u32 = 4096;

/// Shards of the table: a dialog's is `h_entry % SHARDS`, so lookups by
/// id and by Call-ID (whose hash gives `h_entry`) lock one shard.
const SHARDS: usize = 16;

/// What the shards need from the host: timers, sockets, its seed.
pub(crate) struct Env {
    pub(crate) cfg: DialogConfig,
    pub(crate) t1: u64,
    pub(crate) t2: u64,
    pub(crate) seed: u32,
    pub(crate) listeners: Vec<(Transport, SocketAddr)>,
    /// The address our Via advertises for a send to this address, when
    /// the listener is a wildcard one.
    pub(crate) via_ip: fn(SocketAddr) -> Option<IpAddr>,
}

/// Where a [`Dialogs`] sends its BYEs and delivers its events: the host,
/// or a recorder in tests.
pub(crate) trait Sink: Send + Sync {
    /// Send `data` to `dest`.
    fn send(&self, dest: Dest, data: Bytes);
    /// Deliver an event to the router thread of its Call-ID.
    fn event(&self, event: DialogEvent);
    /// A timer earlier than the timer task's sleep was armed.
    fn wake(&self);
}

/// Where the table reads the time.
enum Clock {
    Real(Instant),
    #[cfg(test)]
    Manual(AtomicU64),
}

/// The dialog table as the host holds it ([`crate::SipHandle::dialogs`]):
/// 16 shards behind one lock each, a clock, the profile counts,
/// and where BYEs and events go. Callable from any thread; sends and
/// events happen after the shard's lock is released.
pub struct Dialogs {
    shards: Box<[Mutex<Shard>]>,
    env: Env,
    clock: Clock,
    hasher: foldhash::fast::RandomState,
    sink: Box<dyn Sink>,
    /// Dialogs per (profile, value).
    profiles: Mutex<HashMap<table::ProfileKey, usize>>,
    /// Dialogs in the table.
    count: AtomicUsize,
    /// The deadline the timer task sleeps until (`u64::MAX`: none).
    armed_at: AtomicU64,
    /// Dialogs ever answered, failed, ended: for `dlg.stats_active`.
    answered: AtomicU64,
}

impl std::fmt::Debug for Dialogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialogs")
            .field("count", &self.count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn check_text(what: &str, v: &str) -> Result<(), DialogError> {
    if v.len() > MAX_VAR_LEN {
        return Err(DialogError::BadValue(format!(
            "{what} of {} bytes (at most {MAX_VAR_LEN})",
            v.len()
        )));
    }
    Ok(())
}

impl Dialogs {
    /// An empty table whose clock counts from `epoch` (the host's, so its
    /// timer task reads the same time).
    pub(crate) fn new(env: Env, sink: Box<dyn Sink>, epoch: Instant) -> Dialogs {
        Dialogs {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            env,
            clock: Clock::Real(epoch),
            hasher: Default::default(),
            sink,
            profiles: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
            armed_at: AtomicU64::new(u64::MAX),
            answered: AtomicU64::new(0),
        }
    }

    #[cfg(test)]
    pub(crate) fn with_manual_clock(env: Env, sink: Box<dyn Sink>) -> Dialogs {
        Dialogs {
            clock: Clock::Manual(AtomicU64::new(0)),
            ..Dialogs::new(env, sink, Instant::now())
        }
    }

    /// Move a manual clock forward (tests).
    #[cfg(test)]
    pub(crate) fn advance(&self, ms: u64) {
        if let Clock::Manual(t) = &self.clock {
            t.fetch_add(ms, Ordering::SeqCst);
        }
    }

    fn now(&self) -> u64 {
        match &self.clock {
            Clock::Real(e) => e.elapsed().as_millis() as u64,
            #[cfg(test)]
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// The settings.
    pub fn config(&self) -> &DialogConfig {
        &self.env.cfg
    }

    fn hash(&self, callid: &[u8]) -> u64 {
        self.hasher.hash_one(callid)
    }

    fn shard_of(&self, h_entry: u32) -> &Mutex<Shard> {
        &self.shards[h_entry as usize % SHARDS]
    }

    /// Run a shard operation, then do what it asked, outside the lock.
    fn op<R>(&self, h_entry: u32, f: impl FnOnce(&mut Shard, u64, &mut Vec<Out>) -> R) -> R {
        let mut out = Vec::new();
        let r = {
            let mut s = lock(self.shard_of(h_entry));
            let before = s.len();
            let r = f(&mut s, self.now(), &mut out);
            let after = s.len();
            if after > before {
                self.count.fetch_add(after - before, Ordering::Relaxed);
            } else {
                self.count.fetch_sub(before - after, Ordering::Relaxed);
            }
            if let Some(at) = s.next_deadline() {
                if at < self.armed_at.load(Ordering::Relaxed) {
                    self.armed_at.store(at, Ordering::Relaxed);
                    self.sink.wake();
                }
            }
            r
        };
        self.execute(out);
        r
    }

    fn execute(&self, out: Vec<Out>) {
        for o in out {
            match o {
                Out::Send { dest, data } => self.sink.send(dest, data),
                Out::Event(ev) => {
                    if ev.name == "dialog:start" {
                        self.answered.fetch_add(1, Ordering::Relaxed);
                    }
                    self.sink.event(*ev)
                }
                Out::Unprofile(list) => {
                    let mut p = self.profiles.lock().unwrap_or_else(|e| e.into_inner());
                    for k in list {
                        if let Some(n) = p.get_mut(&k) {
                            *n -= 1;
                            if *n == 0 {
                                p.remove(&k);
                            }
                        }
                    }
                }
            }
        }
    }

    fn entry_of(&self, callid: &[u8]) -> (u32, u64) {
        let h = self.hash(callid);
        ((h % u64::from(HASH_SIZE)) as u32, h)
    }

    /// Dialogs in the table (ended ones whose BYEs are under way
    /// included).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Track the request's dialog (Kamailio's `dlg_manage`). An initial
    /// INVITE (no To tag) creates it: our Record-Route gets `;did=`, and
    /// the request (so its transaction) carries it. An in-dialog request
    /// is matched as [`Dialogs::sequential`] does. Calling it twice on a
    /// request is harmless.
    pub fn manage(&self, req: &mut Request) -> Result<DlgId, DialogError> {
        if let Some(id) = req.dialog {
            return Ok(id);
        }
        let has_to_tag = req.msg().to().is_ok_and(|t| t.tag.is_some());
        if has_to_tag {
            return self.sequential(req).ok_or(DialogError::Unknown);
        }
        let max = self.env.cfg.max_dialogs;
        if self.len() >= max {
            return Err(DialogError::Full(max));
        }
        let cid = req
            .msg()
            .call_id()
            .map_err(|_| DialogError::NotInitial("no Call-ID"))?;
        let (h_entry, h) = self.entry_of(cid);
        let id = self.op(h_entry, |s, now, _| {
            s.create(req, h_entry, h, &self.env, now)
        })?;
        // Checked text: hex digits only.
        let _ = req.add_rr_param(&table::did_param(id));
        req.dialog = Some(id);
        req.dialog_new = true;
        Ok(id)
    }

    /// Match an in-dialog request to its dialog (after loose routing, as
    /// Kamailio's rr callback) and update the dialog: CSeq, ACK, BYE
    /// (`dialog:end`), target refresh. Once per request; `None` when it
    /// belongs to no dialog we know (nothing is refused here).
    pub fn sequential(&self, req: &mut Request) -> Option<DlgId> {
        if req.dialog.is_some() || req.dialog_seen {
            return req.dialog;
        }
        req.dialog_seen = true;
        if self.is_empty() {
            return None;
        }
        let cid = req.msg().call_id().ok()?;
        let (h_entry, h) = self.entry_of(cid);
        let routed = req.routed_params().map(str::to_owned);
        let found = self.op(h_entry, |s, _, out| {
            let (id, side) = s.find(req.msg(), routed.as_deref(), h)?;
            s.on_sequential(id, side, req.msg(), h, out);
            Some(id)
        });
        req.dialog = found;
        found
    }

    /// Whether the request belongs to a known dialog (`is_known_dlg`):
    /// tracked by [`Dialogs::manage`] or matched, without changing it.
    pub fn is_known(&self, req: &Request) -> bool {
        if let Some(id) = req.dialog {
            return self.info(id).is_some();
        }
        let Ok(cid) = req.msg().call_id() else {
            return false;
        };
        let (h_entry, h) = self.entry_of(cid);
        lock(self.shard_of(h_entry))
            .find(req.msg(), req.routed_params(), h)
            .is_some()
    }

    /// A copy of the dialog's data.
    pub fn info(&self, id: DlgId) -> Option<DialogInfo> {
        lock(self.shard_of(id.h_entry)).get(id).map(|d| d.info())
    }

    /// A `$dlg_var` value.
    pub fn var(&self, id: DlgId, name: &str) -> Option<String> {
        let s = lock(self.shard_of(id.h_entry));
        let d = s.get(id)?;
        d.vars
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| v.to_string())
    }

    /// Set (`Some`) or remove (`None`) a `$dlg_var` value.
    pub fn set_var(&self, id: DlgId, name: &str, value: Option<&str>) -> Result<(), DialogError> {
        check_text("$dlg_var name", name)?;
        if let Some(v) = value {
            check_text("$dlg_var value", v)?;
        }
        let mut s = lock(self.shard_of(id.h_entry));
        let d = s.get_mut(id).ok_or(DialogError::NotFound(id))?;
        d.vars.retain(|(k, _)| &**k != name);
        if let Some(v) = value {
            if d.vars.len() >= MAX_VARS {
                return Err(DialogError::BadValue(format!(
                    "more than {MAX_VARS} $dlg_var values in one dialog"
                )));
            }
            d.vars.push((name.into(), v.into()));
            d.vars.shrink_to_fit();
        }
        Ok(())
    }

    /// Send BYE to `sides` of an answered dialog and end it (`dlg_bye`,
    /// `dlg.end_dlg`): `dialog:end` now; the dialog leaves the table when
    /// the BYEs are answered or timed out.
    pub fn bye(&self, id: DlgId, sides: &[Side]) -> Result<(), DialogError> {
        let h = self
            .info(id)
            .map(|d| self.hash(d.callid.as_bytes()))
            .ok_or(DialogError::NotFound(id))?;
        self.op(id.h_entry, |s, now, out| {
            s.bye(id, sides, EndReason::Command, h, &self.env, now, out)
        })
    }

    /// Set the dialog's lifetime (`dlg_set_timeout`): counted from its
    /// answer if it is not answered yet, else from now.
    pub fn set_timeout(&self, id: DlgId, secs: u32) -> Result<(), DialogError> {
        if !(1..=MAX_TIMEOUT_S).contains(&secs) {
            return Err(DialogError::BadValue(format!(
                "timeout {secs} s (1 to {MAX_TIMEOUT_S})"
            )));
        }
        self.op(id.h_entry, |s, now, _| s.set_timeout(id, secs, now))
    }

    /// Put the dialog in a profile (`set_dlg_profile`); again with the
    /// same name and value changes nothing.
    pub fn set_profile(&self, id: DlgId, name: &str, value: &str) -> Result<(), DialogError> {
        check_text("profile name", name)?;
        check_text("profile value", value)?;
        if name.is_empty() {
            return Err(DialogError::BadValue("an empty profile name".into()));
        }
        let key: table::ProfileKey = (name.into(), value.into());
        {
            let mut s = lock(self.shard_of(id.h_entry));
            let d = s.get_mut(id).ok_or(DialogError::NotFound(id))?;
            if d.profiles.contains(&key) {
                return Ok(());
            }
            if d.profiles.len() >= MAX_PROFILES {
                return Err(DialogError::BadValue(format!(
                    "more than {MAX_PROFILES} profiles for one dialog"
                )));
            }
            d.profiles.push(key.clone());
            d.profiles.shrink_to_fit();
            // Counted under the shard's lock, so a removal (which counts
            // out after it) cannot come first.
            let mut p = self.profiles.lock().unwrap_or_else(|e| e.into_inner());
            *p.entry(key).or_default() += 1;
        }
        Ok(())
    }

    /// Dialogs in a profile (`get_profile_size`): with that value, or with
    /// any value when `value` is `None`.
    pub fn profile_size(&self, name: &str, value: Option<&str>) -> usize {
        let p = self.profiles.lock().unwrap_or_else(|e| e.into_inner());
        match value {
            Some(v) => p
                .get(&(Box::<str>::from(name), Box::<str>::from(v)))
                .copied()
                .unwrap_or(0),
            None => p
                .iter()
                .filter(|((n, _), _)| &**n == name)
                .map(|(_, c)| c)
                .sum(),
        }
    }

    /// Copies of the dialogs, at most `max`, one shard locked at a time.
    pub fn list(&self, max: usize) -> Vec<DialogInfo> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let s = lock(shard);
            for d in s.iter() {
                if all.len() >= max {
                    return all;
                }
                all.push(d.info());
            }
        }
        all
    }

    /// Dialogs by state: (unconfirmed, early, answered, confirmed, ended
    /// with BYEs under way), for `dlg.stats_active`.
    pub fn states(&self) -> [usize; 5] {
        let mut n = [0usize; 5];
        for shard in self.shards.iter() {
            for d in lock(shard).iter() {
                n[d.state as usize - 1] += 1;
            }
        }
        n
    }

    /// The request that created its dialog ended its route with no
    /// transaction: the dialog is dropped without an event (Kamailio
    /// keeps no dialog for a request it did not handle statefully).
    pub(crate) fn discard(&self, req: &Request) {
        let (Some(id), true, None) = (req.dialog, req.dialog_new, req.tx) else {
            return;
        };
        let h = req.msg().call_id().map(|c| self.hash(c)).unwrap_or(0);
        self.op(id.h_entry, |s, _, out| s.discard(id, h, out));
    }

    /// The final reply of a tracked INVITE went upstream (`data`, as
    /// sent).
    pub(crate) fn on_final(&self, id: DlgId, code: u16, data: &Bytes) {
        let reply = SipMessage::parse(data.clone()).ok();
        let h = reply
            .as_ref()
            .and_then(|r| r.call_id().ok().map(|c| self.hash(c)))
            .or_else(|| self.info(id).map(|d| self.hash(d.callid.as_bytes())))
            .unwrap_or(0);
        let unix = unix_now();
        self.op(id.h_entry, |s, now, out| {
            s.on_final(id, h, code, reply.as_ref(), now, unix, out)
        });
    }

    /// A reply to one of our BYEs: consumed (true) when its branch is ours.
    pub(crate) fn on_reply(&self, msg: &SipMessage) -> bool {
        let Some(b) = msg
            .top_via()
            .ok()
            .and_then(|v| v.branch)
            .and_then(ByeBranch::parse)
        else {
            return false;
        };
        if b.seed != self.env.seed {
            return false;
        }
        let (Some(code), Ok(cid)) = (msg.status(), msg.call_id()) else {
            return true;
        };
        let h = self.hash(cid);
        self.op(b.id.h_entry, |s, now, out| {
            s.on_bye_reply(b, code, h, &self.env, now, out)
        });
        true
    }

    /// The earliest timer deadline (ms on the host's clock); records it
    /// as the one the timer task sleeps until.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        let next = self
            .shards
            .iter()
            .filter_map(|s| lock(s).next_deadline())
            .min();
        self.armed_at
            .store(next.unwrap_or(u64::MAX), Ordering::Relaxed);
        next
    }

    /// Fire the timers due now.
    pub(crate) fn on_timer(&self) {
        for (n, _) in self.shards.iter().enumerate() {
            let hash_of = |c: &str| self.hash(c.as_bytes());
            self.op(n as u32, |s, now, out| {
                s.on_timer(&self.env, now, &hash_of, out)
            });
        }
    }

    /// Counters for `dlg.stats_active`: dialogs answered since start.
    pub fn answered_total(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}
