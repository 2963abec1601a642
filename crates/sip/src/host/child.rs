//! A router thread (`sip-child-N`): it reads the UDP sockets itself and
//! routes each datagram on the spot, as Kamailio's workers do, and it
//! takes the work queued to it (TCP messages, dialog events, failure
//! routes), waiting for both in one `epoll`.
//!
//! Why: a reader task that parsed and handed every datagram to a router
//! thread cost a second thread wake-up and a queue per message, the cost
//! Kamailio does not have (BENCHMARKS.md, "Where a request's microseconds
//! go"). Thread 0 reads the sockets; the others read only when it finds
//! a backlog or every reader is stuck in a route (`readers.rs`), so a
//! datagram that arrives while thread 0 is busy wakes no other thread.
//!
//! Order: a thread reads, parses and claims each datagram's Call-ID
//! stripe (1,024 of them) under the socket's read gate, so stripes are
//! claimed in the order the socket delivered the datagrams; the handling
//! itself runs outside the gate, in parallel for different calls. A
//! datagram whose stripe another thread is handling is queued on the
//! stripe, and that thread runs it next. So the messages of one call
//! never run at the same time and run in the order they arrived, and a
//! route that blocks holds back its own stripe, and the other calls only
//! until another thread takes over the reading (`readers.rs`: at most two
//! ticks of 100 ms). A TCP connection's
//! messages, dialog events and failure routes come through the thread's
//! queue and claim their stripe the same way.

use std::os::fd::{AsFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use lograte::warn_limited;
use rustix::event::{epoll, eventfd, EventfdFlags};
use tracing::{debug, error};

use super::readers::{Role, Turn, Watch, HELP_AFTER, HELP_CHECK, TICK};
use super::{part_of_msg_reply, part_of_request, Shared, SipHandle, Work};
use crate::message::SipMessage;
use crate::request::Source;
use crate::router::Router;
use crate::tm::Incoming;
use crate::transport::{lock, Read};

/// Most queued items, or datagrams from one socket, taken in a row before
/// looking at the other source: neither starves the other.
const BATCH: usize = 32;

/// The `epoll` key of a thread's wake-up eventfd (sockets use their index).
const WAKE_KEY: u64 = u64::MAX;

/// A router thread's queue and the means to wake it while it waits on
/// the sockets.
pub(crate) struct Child {
    pub(crate) tx: flume::Sender<Work>,
    wake: Wake,
    /// Its part in reading the sockets (`readers.rs`).
    pub(super) turn: Turn,
}

impl Child {
    /// A queue of `capacity` items; the receiving half goes to the thread.
    pub(crate) fn new(capacity: usize) -> std::io::Result<(Child, flume::Receiver<Work>)> {
        let (tx, rx) = flume::bounded(capacity);
        Ok((
            Child {
                tx,
                wake: Wake::new()?,
                turn: Turn::default(),
            },
            rx,
        ))
    }

    /// Queue without blocking, waking the thread if it waits.
    pub(crate) fn try_send(&self, w: Work) -> Result<(), flume::TrySendError<Work>> {
        self.tx.try_send(w)?;
        self.wake.poke();
        Ok(())
    }

    /// Wake the thread if it waits (it has something to look at).
    pub(super) fn poke(&self) {
        self.wake.poke();
    }

    /// Queue, waiting for room (used to stop the thread).
    pub(crate) fn send(&self, w: Work) {
        if self.tx.send(w).is_ok() {
            self.wake.poke();
        }
    }
}

/// An eventfd written only when its thread says it is about to wait, so
/// a busy thread's queue costs no system call to fill.
struct Wake {
    sleeping: AtomicBool,
    fd: OwnedFd,
}

impl Wake {
    fn new() -> std::io::Result<Wake> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Wake {
            sleeping: AtomicBool::new(false),
            fd,
        })
    }

    /// After queueing: wake the thread if it may be waiting. The fence
    /// pairs with the one in [`Wake::about_to_wait`]: either the thread
    /// sees the queued item, or this sees it sleeping.
    fn poke(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
        }
    }

    fn about_to_wait(&self) {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    fn awake(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Reset the eventfd after it woke the thread.
    fn clear(&self) {
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut b);
    }
}

/// The router thread's loop, until [`Work::Stop`].
pub(super) fn run(n: usize, h: SipHandle, router: Arc<dyn Router>, rx: flume::Receiver<Work>) {
    let sh = Arc::clone(&h.shared);
    let _gone = Gone(&sh, n);
    let sets = match WaitSets::new(&sh, n) {
        Ok(s) => s,
        Err(e) => {
            // Without its wait set the thread cannot read; another covers.
            error!(child = n, error = %e, "router thread cannot wait on its sockets; it stops");
            sh.reader_gone(n);
            return;
        }
    };
    let t = Thread { n, h, router };
    // An item like any other: if it takes long on thread 0, another
    // thread reads meanwhile.
    sh.item_starts(n);
    t.guarded("thread_started", &mut || t.router.thread_started(n));
    sh.item_ends(n);
    let mut l = Loop {
        role: if n == 0 { Role::Lead } else { Role::Standby },
        buf: vec![0u8; sh.net.udp_buffer_len()],
        ready: Vec::new(),
        events: Vec::with_capacity(sh.net.udp_sockets().count() + 1),
        watch: Watch::new(sh.children.len()),
        next_tick: None,
        backlog_since: None,
        t,
        sets,
    };
    let wake = &sh.children[n].wake;
    loop {
        // The queue first, a batch at a time.
        for _ in 0..BATCH {
            match rx.try_recv() {
                Ok(Work::Stop) | Err(flume::TryRecvError::Disconnected) => return,
                Ok(w) => {
                    if let Some(w) = sh.claim(w) {
                        l.t.handle(w);
                    }
                }
                Err(flume::TryRecvError::Empty) => break,
            }
        }
        let more = match l.role {
            Role::Lead | Role::Cover => l.read_ready(&sh),
            Role::Help => {
                // Every socket, until all are empty (then stand by).
                l.ready.clear();
                l.ready.extend(0..sh.net.udp_sockets().count());
                let more = l.read_ready(&sh);
                if !more {
                    sh.stand_by(n, false);
                    l.role = Role::Standby;
                }
                more
            }
            Role::Standby => false,
        };
        if l.role == Role::Cover && l.watch.cover_over(&sh) {
            sh.stand_by(n, true);
            l.role = Role::Standby;
        }
        if more || !rx.is_empty() {
            continue;
        }
        wake.about_to_wait();
        let waited = if !rx.is_empty() || sh.help_pending(n) {
            Ok(())
        } else {
            l.wait(&sh)
        };
        wake.awake();
        if let Err(e) = waited {
            error!(child = n, error = %e, "router thread cannot wait on its sockets; it stops");
            sh.reader_gone(n);
            return;
        }
        if l.role == Role::Standby && sh.take_help(n) {
            l.role = Role::Help;
        }
    }
}

/// Dropped when the thread ends: if it ends by a panic, it counts as gone
/// (another thread reads in its place).
struct Gone<'a>(&'a Shared, usize);

impl Drop for Gone<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            error!(
                child = self.1,
                "router thread panicked outside a route; it stops"
            );
            self.0.reader_gone(self.1);
        }
    }
}

/// A router thread's loop state.
struct Loop {
    role: Role,
    buf: Vec<u8>,
    /// Sockets to read (epoll said readable, or all when helping).
    ready: Vec<usize>,
    events: Vec<epoll::Event>,
    watch: Watch,
    /// When the watcher ticks next.
    next_tick: Option<Instant>,
    /// Since when the socket being read has not been empty (from the
    /// first look at the clock, [`HELP_CHECK`] datagrams into a run).
    backlog_since: Option<Instant>,
    t: Thread,
    sets: WaitSets,
}

impl Loop {
    /// Read the `ready` sockets, each until it is empty; true when one
    /// gave a batch and may hold more (come back after the queue).
    fn read_ready(&mut self, sh: &Arc<Shared>) -> bool {
        let n = self.t.n;
        let mut more = false;
        for &i in &self.ready {
            let mut taken = 0;
            loop {
                // Read, parse and claim under the socket's read gate, so
                // a call's stripe is claimed in the order its datagrams
                // were read; handle outside it.
                let gate = lock(&sh.read_gates[i]);
                let w = match sh.net.read_udp(i, &mut self.buf) {
                    Read::Datagram(data, src) => sh.accept(data, src).and_then(|w| sh.claim(w)),
                    Read::Dropped => None,
                    Read::Empty => {
                        self.backlog_since = None;
                        break;
                    }
                };
                drop(gate);
                taken += 1;
                if taken % HELP_CHECK == 0 {
                    // Not empty HELP_CHECK times in a row: a backlog, or a
                    // burst. Help once it has lasted HELP_AFTER.
                    let now = Instant::now();
                    if now - *self.backlog_since.get_or_insert(now) >= HELP_AFTER {
                        sh.ask_help(n);
                    }
                }
                if let Some(w) = w {
                    self.t.handle(w);
                }
                if taken == BATCH {
                    more = true;
                    break;
                }
            }
        }
        more
    }

    /// Wait for the next thing to do: the sockets (leading, covering) or
    /// the queue only (standby; the watcher until its tick).
    fn wait(&mut self, sh: &Shared) -> rustix::io::Result<()> {
        let n = self.t.n;
        let (set, timeout) = match self.role {
            Role::Lead => (&self.sets.sockets, None),
            Role::Cover => (&self.sets.sockets, Some(TICK)),
            Role::Help => return Ok(()),
            Role::Standby => {
                let timeout = sh.watch_timeout(n).map(|tick| {
                    let at = *self.next_tick.get_or_insert_with(|| Instant::now() + tick);
                    at.saturating_duration_since(Instant::now())
                });
                if timeout.is_none() {
                    self.next_tick = None;
                }
                (
                    self.sets.queue.as_ref().unwrap_or(&self.sets.sockets),
                    timeout,
                )
            }
        };
        self.events.clear();
        let ts = timeout.map(|d| rustix::event::Timespec {
            tv_sec: d.as_secs() as i64,
            tv_nsec: d.subsec_nanos() as i64,
        });
        let r = epoll::wait(
            set,
            rustix::buffer::spare_capacity(&mut self.events),
            ts.as_ref(),
        );
        self.ready.clear();
        match r {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
        for ev in &self.events {
            match ev.data.u64() {
                WAKE_KEY => sh.children[n].wake.clear(),
                i => self.ready.push(i as usize),
            }
        }
        if self.role == Role::Standby && self.next_tick.is_some_and(|at| Instant::now() >= at) {
            self.next_tick = None;
            if self.watch.tick(sh, n) {
                self.role = Role::Cover;
                // Read at once: the sockets may hold what arrived while
                // every reader was stuck.
                self.ready.clear();
                self.ready.extend(0..sh.net.udp_sockets().count());
            }
        }
        Ok(())
    }
}

/// A router thread's epoll sets.
struct WaitSets {
    /// Every UDP socket (exclusive: one waiting thread is woken per
    /// datagram) and this thread's eventfd.
    sockets: OwnedFd,
    /// This thread's eventfd alone, for standby (threads other than 0).
    queue: Option<OwnedFd>,
}

impl WaitSets {
    fn new(sh: &Shared, n: usize) -> rustix::io::Result<WaitSets> {
        let wake = sh.children[n].wake.fd.as_fd();
        let add_wake = |ep: &OwnedFd| {
            epoll::add(
                ep,
                wake,
                epoll::EventData::new_u64(WAKE_KEY),
                epoll::EventFlags::IN,
            )
        };
        let sockets = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        for (i, s) in sh.net.udp_sockets().enumerate() {
            epoll::add(
                &sockets,
                s.as_fd(),
                epoll::EventData::new_u64(i as u64),
                epoll::EventFlags::IN | epoll::EventFlags::EXCLUSIVE,
            )?;
        }
        add_wake(&sockets)?;
        let queue = if n == 0 {
            None
        } else {
            let q = epoll::create(epoll::CreateFlags::CLOEXEC)?;
            add_wake(&q)?;
            Some(q)
        };
        Ok(WaitSets { sockets, queue })
    }
}

/// What a router thread holds while it handles work.
struct Thread {
    n: usize,
    h: SipHandle,
    router: Arc<dyn Router>,
}

impl Thread {
    /// Run router code, catching a panic (the message is dropped).
    fn guarded(&self, what: &str, f: &mut dyn FnMut()) {
        if std::panic::catch_unwind(AssertUnwindSafe(f)).is_err() {
            warn_limited!(child = self.n, "router panicked in {what}; message dropped");
        }
    }

    /// Handle a message or queued item once its stripe is claimed (see
    /// [`Shared::claim`]), then whatever other threads queued on that
    /// stripe meanwhile, in the order they queued it.
    fn handle(&self, w: Work) {
        let sh = &self.h.shared;
        let stripe = sh.stripe(w.call_hash());
        let mut next = Some(w);
        while let Some(w) = next {
            sh.item_starts(self.n);
            self.run_one(w);
            sh.item_ends(self.n);
            let mut st = lock(stripe);
            next = st.queue.pop_front();
            if next.is_none() {
                st.busy = false;
            }
        }
    }

    /// Run one item (its stripe claimed by this thread).
    fn run_one(&self, w: Work) {
        let sh = &self.h.shared;
        let router = &*self.router;
        let h = &self.h;
        match w {
            Work::Stop => {}
            Work::Request(mut req) => {
                let part = part_of_request(&req);
                let inc = sh.tm_op(part, |tm, now, out| tm.on_request(&req, now, out));
                if inc == Incoming::Route {
                    self.guarded("request", &mut || router.request(h, &mut req));
                    sh.dialogs.discard(&req);
                }
            }
            Work::Reply(b) => {
                let (msg, src) = *b;
                self.reply(&msg, &src);
            }
            Work::Dialog(ev) => {
                self.guarded("dialog_event", &mut || router.dialog_event(h, &ev));
            }
            Work::Failure { id, mut req, route } => {
                self.guarded("failure", &mut || router.failure(h, &mut req, &route));
                sh.tm_op_id(id, |tm, now, out| tm.failure_done(id, now, out));
            }
        }
    }

    fn reply(&self, msg: &SipMessage, src: &Source) {
        let sh = &self.h.shared;
        let router = &*self.router;
        let h = &self.h;
        if sh.dialogs.on_reply(msg) {
            return;
        }
        let part = part_of_msg_reply(msg);
        let matched = sh.part(part).match_reply(msg);
        let Some((id, no)) = matched else {
            self.stateless_reply(msg, src);
            return;
        };
        let mut pass = true;
        self.guarded("reply", &mut || pass = router.reply(h, msg, src));
        let tx_route = if pass {
            sh.part(part).reply_route_of(id, msg)
        } else {
            None
        };
        if let Some((route, req)) = tx_route {
            // Branches are numbered from 1 in our Via; Kamailio's
            // $T_branch_idx counts from 0.
            let branch = no.saturating_sub(1);
            self.guarded("reply_route", &mut || {
                pass = router.reply_route(h, msg, src, &route, &req, branch)
            });
        }
        if pass {
            sh.tm_op(part, |tm, now, out| tm.on_reply(msg, now, out));
        }
    }

    /// A reply that matched no branch: forwarded by its Via when the top
    /// Via is ours (after the router's reply phase, which may drop it),
    /// else dropped with a rate-limited log line.
    fn stateless_reply(&self, msg: &SipMessage, src: &Source) {
        let sh = &self.h.shared;
        let part = part_of_msg_reply(msg);
        let target = sh.part(part).stateless_dest(msg);
        let (dest, data) = match target {
            Ok(t) => t,
            Err(e) => {
                warn_limited!(peer = %src.remote, code = msg.status(), reason = %e, "dropping reply matching no transaction");
                return;
            }
        };
        let mut pass = true;
        self.guarded("reply", &mut || pass = self.router.reply(&self.h, msg, src));
        if pass {
            debug!(peer = %src.remote, to = %dest.addr, code = msg.status(), "forwarding reply with no transaction by its Via");
            let code = msg.status().unwrap_or_default();
            sh.tm_op(part, |tm, _, out| {
                tm.forward_stateless(dest, data, code, out)
            });
        }
    }
}

/// Most items queued on one stripe behind the one being handled: past it
/// new ones are dropped (logged), so a route that never returns cannot
/// make one call's stripe take all memory.
const STRIPE_QUEUE: usize = 4096;

/// A Call-ID stripe: whether a thread is handling one of its items, and
/// what other threads queued behind it, in order.
#[derive(Default)]
pub(crate) struct Stripe {
    busy: bool,
    queue: std::collections::VecDeque<Work>,
}

impl Shared {
    /// The stripe of the Call-ID whose [`fnv`](super::fnv) hash is `call_hash`.
    pub(crate) fn stripe(&self, call_hash: u64) -> &std::sync::Mutex<Stripe> {
        &self.stripes[(call_hash % self.stripes.len() as u64) as usize]
    }

    /// Claim `w`'s stripe for this thread (`Some(w)`: handle it now), or
    /// queue `w` behind the item another thread is handling there
    /// (`None`): so a call's messages never run at the same time and run
    /// in the order they were claimed.
    pub(crate) fn claim(&self, w: Work) -> Option<Work> {
        let mut st = lock(self.stripe(w.call_hash()));
        if !st.busy {
            st.busy = true;
            return Some(w);
        }
        if st.queue.len() >= STRIPE_QUEUE {
            warn_limited!(
                "a call's messages are queued behind a route that has not returned; dropping one"
            );
            return None;
        }
        st.queue.push_back(w);
        None
    }
}
