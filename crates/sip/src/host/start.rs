//! Starting and stopping a host, in two phases: [`SipHost::bind`] checks
//! the settings and binds every socket (a [`BoundHost`], whose handle
//! already works), then [`BoundHost::start`] gives it a router and starts
//! reading. Also the timer tasks; the router threads' loop is in `child.rs`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{fnv, Shared, SipHandle, StartError, Up, Work};
use crate::config::HostConfig;
use crate::myself::Myself;
use crate::request::Transport;
use crate::router::Router;
use crate::tm::{TableConfig, Tm, PARTS};
use crate::transport::{bind_all, Net, Pending};

/// Call-ID stripes (see [`Shared::stripe`]): enough that two calls
/// rarely share one.
const STRIPES: usize = 1024;

/// A host whose sockets are bound but not yet read, and with no router
/// yet: hand its [`BoundHost::handle`] to whatever the router needs to be
/// built with, then [`BoundHost::start`].
pub struct BoundHost {
    shared: Arc<Shared>,
    addrs: Vec<(Transport, SocketAddr)>,
    pending: Pending,
    receivers: Vec<flume::Receiver<Work>>,
}

/// A running SIP host. Stop it with [`SipHost::shutdown`].
pub struct SipHost {
    shared: Arc<Shared>,
    addrs: Vec<(Transport, SocketAddr)>,
    tasks: Vec<JoinHandle<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl SipHost {
    /// Check the settings ([`HostConfig::validate`]) and bind every
    /// `listen` socket, on the current tokio runtime. Nothing is read and
    /// no thread runs until [`BoundHost::start`].
    pub async fn bind(config: HostConfig) -> Result<BoundHost, StartError> {
        config.validate()?;
        let sip = &config.sip;
        let bound = bind_all(sip).await.map_err(|e| StartError::Bind {
            entry: e.entry,
            reason: e.reason,
        })?;
        let addrs = bound.addrs.clone();
        let table = TableConfig {
            live: Default::default(),
            t1: config.tm.t1,
            t2: config.tm.t2,
            fr: config.tm.fr_timer,
            fr_inv: config.tm.fr_inv_timer,
            wait: config.tm.wait_timer,
            max: sip.max_transactions,
            listeners: addrs.clone(),
            myself: Myself::new(addrs.clone(), &sip.alias),
        };
        // Every part writes the same seed in its branches and tags.
        let seed = Tm::random_seed();
        let tm = (0..PARTS)
            .map(|part| Mutex::new(Tm::part(table.clone(), part, seed)))
            .collect();
        let mut senders = Vec::with_capacity(sip.children);
        let mut receivers = Vec::with_capacity(sip.children);
        for _ in 0..sip.children {
            let (c, rx) = super::child::Child::new(sip.queue_size).map_err(StartError::Thread)?;
            senders.push(c);
            receivers.push(rx);
        }
        let epoch = Instant::now();
        let sl_tag = format!(
            "{:08x}.sl",
            fnv(format!("{epoch:?}{:p}", &config).as_bytes()) as u32
        );
        let dns = super::dns::Dns::new(sip, &addrs);
        let udp_count = bound.udp.len();
        let (sockets, pending) = bound.split();
        let dialog_env = crate::dialog::Env {
            cfg: config.dialog.clone(),
            t1: config.tm.t1,
            t2: config.tm.t2,
            seed,
            listeners: addrs.clone(),
            via_ip: crate::transport::route_ip,
        };
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| Shared {
            dialogs: Arc::new(crate::Dialogs::new(
                dialog_env,
                Box::new(super::DialogSink(weak.clone())),
                epoch,
            )),
            dialog_wake: Notify::new(),
            tm,
            epoch,
            timer_wake: Notify::new(),
            timer_due: std::sync::atomic::AtomicU64::new(u64::MAX),
            children: senders,
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            read_gates: (0..udp_count).map(|_| Mutex::new(())).collect(),
            net: Arc::new(Net::new(sockets, sip, Arc::new(Up(weak.clone())))),
            sl_tag,
            dns,
            usrloc: Arc::new(crate::usrloc::Usrloc::new(config.usrloc.clone())),
            myself: Myself::new(addrs.clone(), &sip.alias),
            counters: Default::default(),
            readers: super::readers::Readers::new(sip.children),
        });
        Ok(BoundHost {
            shared,
            addrs,
            pending,
            receivers,
        })
    }

    /// Bind and start in one step: [`SipHost::bind`] then
    /// [`BoundHost::start`].
    pub async fn start(config: HostConfig, router: Arc<dyn Router>) -> Result<SipHost, StartError> {
        SipHost::bind(config).await?.start(router)
    }

    /// The bound sockets (ports resolved when 0 was asked for).
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        self.addrs.clone()
    }

    /// A handle for acting on transactions from any thread.
    pub fn handle(&self) -> SipHandle {
        SipHandle::from(Arc::clone(&self.shared))
    }

    /// Stop: answer every transaction still without a final reply with
    /// 503, stop reading sockets, stop the router threads (waiting up to
    /// 5 s for one busy in the router; one still busy then is named in a
    /// warning and left behind, so shutdown never hangs on a stuck route).
    /// Once they stopped, the router has been dropped by them, even while
    /// [`SipHandle`]s remain.
    pub async fn shutdown(mut self) {
        self.shared.tm_op_all(|tm, now, out| tm.shutdown(now, out));
        for c in &self.shared.children {
            c.send(Work::Stop);
        }
        let mut threads = std::mem::take(&mut self.threads);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            threads.retain(|t| !t.is_finished());
            if threads.is_empty() || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for t in &threads {
            warn!(
                thread = t.thread().name().unwrap_or("?"),
                "router thread still busy after 5 s at shutdown (a route that does not \
                 return); leaving it"
            );
        }
        // Let queued TCP replies go out: closing the queues ends each
        // writer after it wrote what it had.
        self.shared.net.close_conns();
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.shared.net.cancel.cancel();
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
        }
        info!("SIP host stopped");
    }
}

impl BoundHost {
    /// A handle usable before the host starts (see [`SipHandle`]).
    pub fn handle(&self) -> SipHandle {
        SipHandle::from(Arc::clone(&self.shared))
    }

    /// The bound sockets (ports resolved when 0 was asked for).
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        self.addrs.clone()
    }

    /// Start the router threads (each owns a clone of `router`, dropped
    /// when it stops), the socket tasks and the timer task, on the runtime
    /// the host was bound on. Callable from any thread.
    pub fn start(self, router: Arc<dyn Router>) -> Result<SipHost, StartError> {
        let BoundHost {
            shared,
            addrs,
            pending,
            receivers,
        } = self;
        let children = receivers.len();
        let mut threads = Vec::new();
        for (n, rx) in receivers.into_iter().enumerate() {
            let h = SipHandle::from(Arc::clone(&shared));
            let r = Arc::clone(&router);
            let t = std::thread::Builder::new()
                .name(format!("sip-child-{n}"))
                .spawn(move || super::child::run(n, h, r, rx));
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // Stop the threads already started before failing.
                    for c in &shared.children {
                        let _ = c.try_send(Work::Stop);
                    }
                    return Err(StartError::Thread(e));
                }
            }
        }
        drop(router);
        let mut tasks = shared.net.start(pending);
        tasks.push(shared.net.spawn(timer_task(Arc::clone(&shared))));
        tasks.push(shared.net.spawn(dialog_timer_task(Arc::clone(&shared))));
        info!(?addrs, children, "SIP host started");
        Ok(SipHost {
            shared,
            addrs,
            tasks,
            threads,
        })
    }
}

impl Drop for SipHost {
    fn drop(&mut self) {
        // Dropped without shutdown: at least stop the tasks and threads.
        self.shared.net.cancel.cancel();
        if !self.threads.is_empty() {
            for c in &self.shared.children {
                let _ = c.try_send(Work::Stop);
            }
        }
    }
}

/// The transaction timers' resolution: the timer task sleeps to the next
/// multiple of this past the earliest deadline, so timers due within one
/// tick are fired in one wake-up instead of one each: timers falling due
/// wake it at most 20 times a second however many transactions end (an
/// earlier timer armed while it sleeps wakes it too, see
/// [`Shared::timer_due`]). Every call ends by a timer
/// (its transaction's Wait, 5 s after the ACK on UDP), so with a 10 ms
/// tick a router at 100 calls/s woke this task 0.7-0.8 times per call,
/// about 70 µs of CPU each on this kind of VM: a tenth of the call's CPU
/// (BENCHMARKS.md, "The timer task's tick"). A timer fires up to 50 ms
/// late; Kamailio's tm ticks at 1/16 s (62.5 ms); RFC 3261's shortest
/// timer is T1, 500 ms.
const TIMER_TICK_MS: u64 = 50;

/// `ms` rounded up to the timer tick.
pub(super) fn tick_up(ms: u64) -> u64 {
    ms.div_ceil(TIMER_TICK_MS).saturating_mul(TIMER_TICK_MS)
}

/// The transaction table's timers: sleeps until the earliest deadline of
/// any part (rounded up to the tick), woken when a timer due before that
/// is armed (see [`Shared::timer_due`]).
async fn timer_task(sh: Arc<Shared>) {
    use std::sync::atomic::Ordering::SeqCst;
    loop {
        // Awake: any timer armed while the parts are read wakes the
        // task again, so none is missed between reading a part and sleeping.
        sh.timer_due.store(u64::MAX, SeqCst);
        let next = (0..sh.tm.len())
            .filter_map(|part| sh.part(part).next_deadline())
            .min()
            .map(tick_up);
        sh.timer_due.store(next.unwrap_or(u64::MAX), SeqCst);
        let sleep = async {
            match next {
                Some(t) => {
                    tokio::time::sleep_until((sh.epoch + Duration::from_millis(t)).into()).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sh.net.cancel.cancelled() => break,
            _ = sh.timer_wake.notified() => {}
            _ = sleep => sh.tm_op_all(|tm, now, out| tm.on_timer(now, out)),
        }
    }
}

/// The dialog table's timers (lifetimes, our BYEs' retransmissions):
/// sleeps until the earliest, woken when an earlier one is armed.
async fn dialog_timer_task(sh: Arc<Shared>) {
    loop {
        let next = sh.dialogs.next_deadline();
        let sleep = async {
            match next {
                Some(t) => {
                    tokio::time::sleep_until((sh.epoch + Duration::from_millis(t)).into()).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sh.net.cancel.cancelled() => break,
            _ = sh.dialog_wake.notified() => {}
            _ = sleep => sh.dialogs.on_timer(),
        }
    }
}
