//! Log lines that summarise themselves under a flood.
//!
//! A peer that sends a million bad messages must not write a million log
//! lines: the log would cost more than the attack. Each call site of
//! [`warn_limited!`] or [`error_limited!`] logs at most [`BURST`] lines per
//! [`WINDOW_MS`] window; the lines past that are counted. The count is
//! reported once, as the field `suppressed`: on the site's next line, or,
//! if the site falls silent, by a summary line (`N more lines held back`,
//! with the site) written within about a second by a small background
//! thread, started the first time any site holds a line back. A site that
//! is within its budget costs two atomic operations per line and never
//! allocates or locks.
//!
//! Sites whose kind is only known at run time (a script's log call, keyed
//! by its file and line) use a [`RateLimit`] of their own.
//!
//! Bytes from the network go into a line as an [`Excerpt`]: escaped and
//! cut, so they can neither break the line nor forge another.
//!
//! This crate sits below every other crate of the workspace and depends on
//! nothing but `tracing`.

mod excerpt;

pub use excerpt::Excerpt;

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Lines one site may log per window before the rest are counted instead.
pub const BURST: u64 = 5;
/// The window, in milliseconds.
pub const WINDOW_MS: u64 = 1000;

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The budget of one kind of log line.
#[derive(Debug)]
pub struct RateLimit {
    /// Names the site in a summary line (source location or script line).
    site: Cow<'static, str>,
    /// Window number (`now / WINDOW_MS + 1`) and lines logged in it,
    /// packed as `window << 16 | count` so both change in one atomic step.
    state: AtomicU64,
    /// Lines held back and not yet reported.
    suppressed: AtomicU64,
    /// Whether the summary thread knows this site.
    registered: AtomicBool,
}

/// A site the summary thread reports on.
enum Entry {
    Static(&'static RateLimit),
    Shared(Arc<RateLimit>),
}

impl Entry {
    fn limit(&self) -> &RateLimit {
        match self {
            Entry::Static(l) => l,
            Entry::Shared(l) => l,
        }
    }
}

/// Sites that have held lines back, for the summary thread.
static SITES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn register(entry: Entry) {
    static THREAD: OnceLock<()> = OnceLock::new();
    SITES.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
    THREAD.get_or_init(|| {
        // If the thread cannot start, counts are still reported with each
        // site's next line.
        let _ = std::thread::Builder::new()
            .name("lograte".into())
            .spawn(|| loop {
                std::thread::sleep(Duration::from_millis(WINDOW_MS));
                report_held_back();
            });
    });
}

/// Write one summary line for each site that held lines back since its
/// last report, and forget shared sites nobody else holds any more.
fn report_held_back() {
    let mut sites = SITES.lock().unwrap_or_else(|e| e.into_inner());
    sites.retain(|entry| {
        let limit = entry.limit();
        let n = limit.suppressed.swap(0, Ordering::AcqRel);
        if n > 0 {
            tracing::warn!(site = %limit.site, suppressed = n, "{n} more lines held back");
        }
        !matches!(entry, Entry::Shared(l) if Arc::strong_count(l) == 1)
    });
}

impl RateLimit {
    /// A fresh budget for the site named `site` (usable in a `static`).
    pub const fn new(site: &'static str) -> RateLimit {
        RateLimit {
            site: Cow::Borrowed(site),
            state: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            registered: AtomicBool::new(false),
        }
    }

    /// A fresh budget for a site named at run time (a script line).
    pub fn shared(site: String) -> Arc<RateLimit> {
        Arc::new(RateLimit {
            site: Cow::Owned(site),
            ..RateLimit::new("")
        })
    }

    /// May a line be logged now? `Some(n)`: yes, and `n` lines held back
    /// since the last report go with it; `None`: no, it is counted.
    pub fn check(&'static self) -> Option<u64> {
        let r = self.check_at(now_ms());
        if r.is_none() && !self.registered.swap(true, Ordering::AcqRel) {
            register(Entry::Static(self));
        }
        r
    }

    /// [`RateLimit::check`] for a budget made by [`RateLimit::shared`].
    pub fn check_shared(self: &Arc<Self>) -> Option<u64> {
        let r = self.check_at(now_ms());
        if r.is_none() && !self.registered.swap(true, Ordering::AcqRel) {
            register(Entry::Shared(self.clone()));
        }
        r
    }

    fn check_at(&self, now_ms: u64) -> Option<u64> {
        let window = (now_ms / WINDOW_MS + 1) & 0xFFFF_FFFF_FFFF;
        let allowed = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                let (w, n) = (s >> 16, s & 0xFFFF);
                if w != window {
                    Some(window << 16 | 1)
                } else if n < BURST {
                    Some(s + 1)
                } else {
                    None
                }
            })
            .is_ok();
        if allowed {
            Some(self.suppressed.swap(0, Ordering::AcqRel))
        } else {
            self.suppressed.fetch_add(1, Ordering::AcqRel);
            None
        }
    }
}

/// `tracing::warn!`, at most [`BURST`] lines per second from this call
/// site; a line after suppressed ones carries `suppressed = N`. Takes the
/// same fields and message as `tracing::warn!` (no `target:`/`parent:`).
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::RateLimit =
            $crate::RateLimit::new(concat!(module_path!(), ":", line!()));
        match LIMIT.check() {
            Some(0) => $crate::__tracing::warn!($($arg)+),
            Some(suppressed) => $crate::__tracing::warn!(suppressed, $($arg)+),
            None => {}
        }
    }};
}

/// `tracing::error!` with the budget of [`warn_limited!`].
#[macro_export]
macro_rules! error_limited {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::RateLimit =
            $crate::RateLimit::new(concat!(module_path!(), ":", line!()));
        match LIMIT.check() {
            Some(0) => $crate::__tracing::error!($($arg)+),
            Some(suppressed) => $crate::__tracing::error!(suppressed, $($arg)+),
            None => {}
        }
    }};
}

#[doc(hidden)]
pub use tracing as __tracing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_silence_then_the_count() {
        let l = RateLimit::new("test");
        for _ in 0..BURST {
            assert_eq!(l.check_at(10), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(l.check_at(500), None);
        }
        // Next window: the first line carries what was held back.
        assert_eq!(l.check_at(1000), Some(1000));
        assert_eq!(l.check_at(1001), Some(0));
    }

    #[test]
    fn sites_have_their_own_budget() {
        let (a, b) = (RateLimit::new("a"), RateLimit::new("b"));
        for _ in 0..BURST {
            a.check_at(0);
        }
        assert_eq!(a.check_at(0), None);
        assert_eq!(b.check_at(0), Some(0));
    }

    #[test]
    fn threads_share_one_budget_exactly() {
        let l = std::sync::Arc::new(RateLimit::new("test"));
        let allowed = std::sync::Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (l, allowed) = (l.clone(), allowed.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if l.check_at(42).is_some() {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(allowed.load(Ordering::Relaxed), BURST);
        assert_eq!(l.suppressed.load(Ordering::Relaxed), 4000 - BURST);
    }

    #[test]
    fn a_silent_site_is_reported_by_the_summary() {
        let l = RateLimit::shared("quiet.lua:7".into());
        for _ in 0..(BURST + 3) {
            l.check_shared();
        }
        assert_eq!(l.suppressed.load(Ordering::Relaxed), 3);
        report_held_back();
        assert_eq!(l.suppressed.load(Ordering::Relaxed), 0, "reported once");
        // Dropped by its owner: the summary forgets it.
        let weak = Arc::downgrade(&l);
        drop(l);
        report_held_back();
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn the_macro_compiles_with_fields() {
        let peer = "127.0.0.1:1";
        for _ in 0..10 {
            warn_limited!(%peer, n = 3, "bad thing");
            error_limited!("worse thing {}", 1);
        }
    }
}
