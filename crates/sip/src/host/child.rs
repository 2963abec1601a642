//! A router thread (`sip-child-N`): it reads the UDP sockets itself and
//! routes each datagram on the spot, as Kamailio's workers do, and it
//! takes the work queued to it (TCP messages, dialog events, failure
//! routes), waiting for both in one `epoll`.
//!
//! Why: a reader task that parsed and handed every datagram to a router
//! thread cost a second thread wake-up and a queue per message, the cost
//! Kamailio does not have (BENCHMARKS.md, "Where a request's microseconds
//! go"). Every router thread waits on every UDP socket with
//! `EPOLLEXCLUSIVE`, so a datagram wakes one thread, not all.
//!
//! Order: a thread reads, parses and claims each datagram's Call-ID
//! stripe (1,024 of them) under the socket's read gate, so stripes are
//! claimed in the order the socket delivered the datagrams; the handling
//! itself runs outside the gate, in parallel for different calls. A
//! datagram whose stripe another thread is handling is queued on the
//! stripe, and that thread runs it next. So the messages of one call
//! never run at the same time and run in the order they arrived, and a
//! route that blocks holds back only its own stripe. A TCP connection's
//! messages, dialog events and failure routes come through the thread's
//! queue and claim their stripe the same way.

use std::os::fd::{AsFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use lograte::warn_limited;
use rustix::event::{epoll, eventfd, EventfdFlags};
use tracing::{debug, error};

use super::{fnv, part_of_msg_reply, part_of_request, Shared, SipHandle, Work};
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
}

impl Child {
    /// A queue of `capacity` items; the receiving half goes to the thread.
    pub(crate) fn new(capacity: usize) -> std::io::Result<(Child, flume::Receiver<Work>)> {
        let (tx, rx) = flume::bounded(capacity);
        Ok((
            Child {
                tx,
                wake: Wake::new()?,
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
    let ep = match wait_set(&sh, n) {
        Ok(ep) => ep,
        Err(e) => {
            // Without its wait set the thread cannot read; the others can.
            error!(child = n, error = %e, "router thread cannot wait on its sockets; it stops");
            return;
        }
    };
    let t = Thread { n, h, router };
    t.guarded("thread_started", &mut || t.router.thread_started(n));
    let wake = &sh.children[n].wake;
    let mut buf = vec![0u8; sh.net.udp_buffer_len()];
    let mut ready = Vec::<usize>::new();
    let mut events = Vec::<epoll::Event>::with_capacity(sh.net.udp_sockets().count() + 1);
    loop {
        // The queue first, a batch at a time.
        for _ in 0..BATCH {
            match rx.try_recv() {
                Ok(Work::Stop) | Err(flume::TryRecvError::Disconnected) => return,
                Ok(w) => {
                    if let Some(w) = sh.claim(w) {
                        t.handle(w);
                    }
                }
                Err(flume::TryRecvError::Empty) => break,
            }
        }
        // Sockets epoll said were readable: read each until it is empty
        // (or a batch was taken, then come back after the queue).
        let mut more = false;
        for &i in &ready {
            let mut taken = 0;
            loop {
                // Read, parse and claim under the socket's read gate, so
                // a call's stripe is claimed in the order its datagrams
                // were read; handle outside it.
                let gate = lock(&sh.read_gates[i]);
                let w = match sh.net.read_udp(i, &mut buf) {
                    Read::Datagram(data, src) => sh.accept(data, src).and_then(|w| sh.claim(w)),
                    Read::Dropped => None,
                    Read::Empty => break,
                };
                drop(gate);
                if let Some(w) = w {
                    t.handle(w);
                }
                taken += 1;
                if taken == BATCH {
                    more = true;
                    break;
                }
            }
        }
        if more || !rx.is_empty() {
            continue;
        }
        wake.about_to_wait();
        if !rx.is_empty() {
            wake.awake();
            continue;
        }
        events.clear();
        let r = epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), None);
        wake.awake();
        ready.clear();
        match r {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                error!(child = n, error = %e, "router thread cannot wait on its sockets; it stops");
                return;
            }
        }
        for ev in &events {
            match ev.data.u64() {
                WAKE_KEY => wake.clear(),
                i => ready.push(i as usize),
            }
        }
    }
}

/// An epoll set with every UDP socket (exclusive: one waiting thread is
/// woken per datagram) and this thread's eventfd.
fn wait_set(sh: &Shared, n: usize) -> rustix::io::Result<OwnedFd> {
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    for (i, s) in sh.net.udp_sockets().enumerate() {
        epoll::add(
            &ep,
            s.as_fd(),
            epoll::EventData::new_u64(i as u64),
            epoll::EventFlags::IN | epoll::EventFlags::EXCLUSIVE,
        )?;
    }
    epoll::add(
        &ep,
        sh.children[n].wake.fd.as_fd(),
        epoll::EventData::new_u64(WAKE_KEY),
        epoll::EventFlags::IN,
    )?;
    Ok(ep)
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
        let stripe = sh.stripe(w.call_id());
        let mut next = Some(w);
        while let Some(w) = next {
            self.run_one(w);
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
    /// `call_id`'s stripe.
    pub(crate) fn stripe(&self, call_id: &[u8]) -> &std::sync::Mutex<Stripe> {
        &self.stripes[(fnv(call_id) % self.stripes.len() as u64) as usize]
    }

    /// Claim `w`'s stripe for this thread (`Some(w)`: handle it now), or
    /// queue `w` behind the item another thread is handling there
    /// (`None`): so a call's messages never run at the same time and run
    /// in the order they were claimed.
    pub(crate) fn claim(&self, w: Work) -> Option<Work> {
        let mut st = lock(self.stripe(w.call_id()));
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
