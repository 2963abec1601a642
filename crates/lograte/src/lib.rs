//! Log lines that summarise themselves under a flood.
//!
//! A peer that sends a million bad messages must not write a million log
//! lines: the log would cost more than the attack. Each call site of
//! [`warn_limited!`] or [`error_limited!`] logs at most [`BURST`] lines per
//! [`WINDOW_MS`] window; the lines past that are counted, and the next line
//! that site logs carries the count as the field `suppressed`. A quiet site
//! costs one atomic load per line; nothing here allocates or locks.
//!
//! Sites whose kind is only known at run time (a script's log call, keyed
//! by its file and line) use a [`RateLimit`] of their own.
//!
//! This crate sits below every other crate of the workspace and depends on
//! nothing but `tracing`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Lines one site may log per window before the rest are counted instead.
pub const BURST: u64 = 5;
/// The window, in milliseconds.
pub const WINDOW_MS: u64 = 1000;

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The budget of one kind of log line.
#[derive(Debug, Default)]
pub struct RateLimit {
    /// Window number (`now / WINDOW_MS`) and lines logged in it, packed as
    /// `window << 16 | count` so both change in one atomic step.
    state: AtomicU64,
    /// Lines refused since the last one logged.
    suppressed: AtomicU64,
}

impl RateLimit {
    /// A fresh budget (usable in a `static`).
    pub const fn new() -> RateLimit {
        RateLimit {
            state: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// May a line be logged now? `Some(n)`: yes, and `n` lines were
    /// suppressed since the last one (report them with it); `None`: no, it
    /// is counted.
    pub fn check(&self) -> Option<u64> {
        self.check_at(now_ms())
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
        static LIMIT: $crate::RateLimit = $crate::RateLimit::new();
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
        static LIMIT: $crate::RateLimit = $crate::RateLimit::new();
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
        let l = RateLimit::new();
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
        let (a, b) = (RateLimit::new(), RateLimit::new());
        for _ in 0..BURST {
            a.check_at(0);
        }
        assert_eq!(a.check_at(0), None);
        assert_eq!(b.check_at(0), Some(0));
    }

    #[test]
    fn threads_share_one_budget_exactly() {
        let l = std::sync::Arc::new(RateLimit::new());
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
    fn the_macro_compiles_with_fields() {
        let peer = "127.0.0.1:1";
        for _ in 0..10 {
            warn_limited!(%peer, n = 3, "bad thing");
            error_limited!("worse thing {}", 1);
        }
    }
}
