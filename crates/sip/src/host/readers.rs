//! Which router threads read the UDP sockets, and when.
//!
//! Thread 0, the leader, always reads: it waits on the sockets and reads
//! each until it is empty. The others stand by, waiting on their own
//! queue only, so a datagram that arrives while the leader is busy wakes
//! no one: the leader reads it when it is done. On this kind of machine
//! a thread's sleep and wake-up costs more CPU than routing a stateless
//! request (BENCHMARKS.md, "One reader, helpers on demand"); when every
//! thread waited on the sockets, a second thread was woken by most
//! arrivals and mostly found the socket already read.
//!
//! A thread on standby reads in two cases:
//! - **help**: a reader that has not found its socket empty for
//!   [`HELP_AFTER`] (a backlog; it looks at the clock every
//!   [`HELP_CHECK`] datagrams in a row) asks one standby thread to read
//!   the sockets with it until they are empty;
//! - **cover**: one standby thread, the watcher, ticks every [`TICK`]
//!   while there is traffic; at a tick where every reader has been in the
//!   same item since the last one (a route that blocks), it reads and
//!   waits on the sockets like the leader until one of them moves on,
//!   and hands the watch to the next standby thread. So a route that
//!   blocks holds back the other calls for at most two ticks. A slow
//!   `Router::thread_started` counts as an item too, and a thread that
//!   stops other than by `Work::Stop` (a panic outside a route, or no
//!   `epoll`) counts as stuck for good.
//!
//! When a tick finds no thread has started an item since the last tick,
//! the watcher stops ticking until the next item starts (an idle router
//! costs no wake-ups).

use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use super::Shared;

/// Datagrams a reader takes in a row, its socket never empty, between
/// two looks at the clock.
pub(super) const HELP_CHECK: usize = 8;

/// How long a reader reads, its socket never empty, before it asks a
/// standby thread for help (counted from its first look at the clock,
/// so after [`HELP_CHECK`] datagrams). A burst the reader empties sooner
/// is not worth another thread's wake-up: on two cores beside the load
/// generator, asking after 8 datagrams (about 0.2 ms of the basic
/// script) brought thread 1 into 30 % of the work at 2,000 calls/s and
/// cost 5-9 % more CPU per call than this, and as much on stateless
/// requests at 20,000/s. What it costs: relaying every request to one
/// event client takes 6-11 % more, the event dispatcher waking for more
/// of a burst's frames when one thread relays them (BENCHMARKS.md, "Help
/// after 0.5 ms again").
pub(super) const HELP_AFTER: Duration = Duration::from_micros(500);

/// The watcher's tick while there is traffic.
pub(super) const TICK: Duration = Duration::from_millis(100);

/// What a router thread does about the UDP sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// Thread 0: waits on the sockets and reads them, always.
    Lead,
    /// Waits on its queue only (the watcher also ticks).
    Standby,
    /// Asked for help: reads every socket until all are empty.
    Help,
    /// Every reader was stuck: reads and waits on the sockets until the
    /// thread it covers for moves on.
    Cover,
}

/// A standby thread's state, as other threads see it.
const STANDBY: u8 = 0;
/// Help was asked of it; it has not started yet.
const ASKED: u8 = 1;
/// It reads the sockets now (helping or covering).
const READING: u8 = 2;

/// A router thread's part of the reading, seen by the others. On a cache
/// line of its own: its thread writes `busy` twice per item.
#[derive(Default)]
#[repr(align(64))]
pub(crate) struct Turn {
    /// Bumped when the thread starts an item and when it ends one: odd
    /// while it is in one.
    busy: AtomicU64,
    /// [`STANDBY`], [`ASKED`] or [`READING`] (thread 0: always reading).
    mode: AtomicU8,
}

/// The shared part: who watches, and whether it ticks.
pub(crate) struct Readers {
    /// The standby thread that ticks (`usize::MAX`: none).
    watcher: AtomicUsize,
    /// Whether it ticks: off after a tick that found the router idle, on
    /// again when a thread starts an item.
    watching: AtomicBool,
}

impl Readers {
    pub(crate) fn new(children: usize) -> Readers {
        Readers {
            watcher: AtomicUsize::new(if children > 1 { 1 } else { usize::MAX }),
            watching: AtomicBool::new(false),
        }
    }
}

impl Shared {
    /// Thread `n` starts an item: mark it busy, and have the watcher tick
    /// if it stopped.
    pub(super) fn item_starts(&self, n: usize) {
        self.children[n].turn.busy.fetch_add(1, SeqCst);
        // Pairs with the fence in `tick`: either the watcher sees this
        // item start, or this sees it stopped watching.
        if !self.readers.watching.load(SeqCst) && !self.readers.watching.swap(true, SeqCst) {
            if let Some(w) = self.children.get(self.readers.watcher.load(SeqCst)) {
                w.poke();
            }
        }
    }

    /// Thread `n` stopped for good, not by [`super::Work::Stop`] (it could
    /// not wait on the sockets, or it panicked): it looks stuck in an item
    /// from now on, so the watcher covers for it, and ticks from now on.
    pub(super) fn reader_gone(&self, n: usize) {
        let busy = &self.children[n].turn.busy;
        if busy.load(SeqCst) % 2 == 0 {
            busy.fetch_add(1, SeqCst);
        }
        self.readers.watching.store(true, SeqCst);
        if let Some(w) = self.children.get(self.readers.watcher.load(SeqCst)) {
            w.poke();
        }
    }

    /// Thread `n` ended its item.
    pub(super) fn item_ends(&self, n: usize) {
        self.children[n].turn.busy.fetch_add(1, SeqCst);
    }

    /// A reader found a backlog: ask one standby thread (not `n`) to read.
    pub(super) fn ask_help(&self, n: usize) {
        for (i, c) in self.children.iter().enumerate().skip(1) {
            if i != n
                && c.turn
                    .mode
                    .compare_exchange(STANDBY, ASKED, SeqCst, SeqCst)
                    .is_ok()
            {
                c.poke();
                return;
            }
        }
    }

    /// Thread `n` (standby) was woken: was it asked to help? Then it
    /// reads from now on.
    pub(super) fn take_help(&self, n: usize) -> bool {
        self.children[n]
            .turn
            .mode
            .compare_exchange(ASKED, READING, SeqCst, SeqCst)
            .is_ok()
    }

    /// Whether thread `n` must not sleep: help was asked of it.
    pub(super) fn help_pending(&self, n: usize) -> bool {
        self.children[n].turn.mode.load(SeqCst) == ASKED
    }

    /// Thread `n` stops reading (help or cover done) and stands by; it
    /// takes the watch back if it comes before the current watcher.
    pub(super) fn stand_by(&self, n: usize, covered: bool) {
        self.children[n].turn.mode.store(STANDBY, SeqCst);
        if covered {
            self.readers.watcher.fetch_min(n, SeqCst);
        }
    }

    /// How long thread `n` may wait on its queue: until its next tick if
    /// it is the watcher and traffic was seen, else for ever.
    pub(super) fn watch_timeout(&self, n: usize) -> Option<Duration> {
        (self.readers.watcher.load(SeqCst) == n && self.readers.watching.load(SeqCst))
            .then_some(TICK)
    }
}

/// The watcher's memory between ticks.
pub(super) struct Watch {
    /// Each thread's `busy` at the last tick.
    last: Vec<u64>,
    /// While covering: the readers' `busy` values when the cover began.
    pub(super) covering: Vec<(usize, u64)>,
}

impl Watch {
    pub(super) fn new(children: usize) -> Watch {
        Watch {
            last: vec![0; children],
            covering: Vec::new(),
        }
    }

    /// A tick of thread `n`, the watcher. Returns true when it must cover:
    /// every reader has been in the same item since the last tick.
    pub(super) fn tick(&mut self, sh: &Shared, n: usize) -> bool {
        let now: Vec<u64> = sh
            .children
            .iter()
            .map(|c| c.turn.busy.load(SeqCst))
            .collect();
        let readers: Vec<usize> = (0..now.len())
            .filter(|&i| i == 0 || sh.children[i].turn.mode.load(SeqCst) == READING)
            .collect();
        let stuck = |i: usize| now[i] % 2 == 1 && now[i] == self.last[i];
        let cover = readers.iter().all(|&i| stuck(i));
        let idle = now
            .iter()
            .zip(&self.last)
            .all(|(b, l)| b == l && b % 2 == 0);
        self.last.clone_from(&now);
        if cover {
            self.covering = readers.iter().map(|&i| (i, now[i])).collect();
            sh.children[n].turn.mode.store(READING, SeqCst);
            // The next standby thread watches in its place.
            let next = (n + 1..sh.children.len())
                .find(|&i| sh.children[i].turn.mode.load(SeqCst) == STANDBY)
                .unwrap_or(usize::MAX);
            sh.readers.watcher.store(next, SeqCst);
            if let Some(c) = sh.children.get(next) {
                c.poke();
            }
            return true;
        }
        if idle {
            sh.readers.watching.store(false, SeqCst);
            fence(SeqCst);
            // An item that started meanwhile: keep watching (its thread
            // may have seen `watching` still on and not woken us).
            let moved = sh
                .children
                .iter()
                .zip(&self.last)
                .any(|(c, l)| c.turn.busy.load(SeqCst) != *l);
            if moved {
                sh.readers.watching.store(true, SeqCst);
            }
        }
        false
    }

    /// While covering: has a covered reader moved on? Then stop.
    pub(super) fn cover_over(&self, sh: &Shared) -> bool {
        self.covering
            .iter()
            .any(|&(i, b)| sh.children[i].turn.busy.load(SeqCst) != b)
    }
}
