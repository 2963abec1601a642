//! Starting and stopping a host, in two phases: [`SipHost::bind`] checks
//! the settings and binds every socket (a [`BoundHost`], whose handle
//! already works), then [`BoundHost::start`] gives it a router and starts
//! reading. Also the router threads and the timer task.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use lograte::warn_limited;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{fnv, Shared, SipHandle, StartError, Up, Work};
use crate::config::HostConfig;
use crate::message::SipMessage;
use crate::myself::Myself;
use crate::request::{Source, Transport};
use crate::router::Router;
use crate::tm::{Incoming, TableConfig, Tm};
use crate::transport::{bind_all, lock, Net, Pending};

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
        let tm = Tm::new(TableConfig {
            t1: config.tm.t1,
            t2: config.tm.t2,
            fr: config.tm.fr_timer,
            fr_inv: config.tm.fr_inv_timer,
            wait: config.tm.wait_timer,
            max: sip.max_transactions,
            listeners: addrs.clone(),
            myself: Myself::new(addrs.clone(), &sip.alias),
        });
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..sip.children)
            .map(|_| flume::bounded(sip.queue_size))
            .unzip();
        let epoch = Instant::now();
        let sl_tag = format!(
            "{:08x}.sl",
            fnv(format!("{epoch:?}{:p}", &config).as_bytes()) as u32
        );
        let dns = super::dns::Dns::new(sip, &addrs);
        let (sockets, pending) = bound.split();
        let dialog_env = crate::dialog::Env {
            cfg: config.dialog.clone(),
            t1: config.tm.t1,
            t2: config.tm.t2,
            seed: tm.seed(),
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
            tm: Mutex::new(tm),
            epoch,
            timer_wake: Notify::new(),
            children: senders,
            net: Arc::new(Net::new(sockets, sip, Arc::new(Up(weak.clone())))),
            sl_tag,
            dns,
            usrloc: Arc::new(crate::usrloc::Usrloc::new(config.usrloc.clone())),
            myself: Myself::new(addrs.clone(), &sip.alias),
            counters: Default::default(),
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
        self.shared.tm_op(|tm, now, out| tm.shutdown(now, out));
        for s in &self.shared.children {
            let _ = s.send(Work::Stop);
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
                .spawn(move || child_loop(n, h, r, rx));
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // Stop the threads already started before failing.
                    for s in &shared.children {
                        let _ = s.try_send(Work::Stop);
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
            for s in &self.shared.children {
                let _ = s.try_send(Work::Stop);
            }
        }
    }
}

async fn timer_task(sh: Arc<Shared>) {
    loop {
        let next = lock(&sh.tm).next_deadline();
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
            _ = sleep => sh.tm_op(|tm, now, out| tm.on_timer(now, out)),
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

fn child_loop(n: usize, h: SipHandle, router: Arc<dyn Router>, rx: flume::Receiver<Work>) {
    let sh = Arc::clone(&h.shared);
    let guarded = |what: &str, f: &mut dyn FnMut()| {
        if std::panic::catch_unwind(AssertUnwindSafe(f)).is_err() {
            warn_limited!(child = n, "router panicked in {what}; message dropped");
        }
    };
    guarded("thread_started", &mut || router.thread_started(n));
    while let Ok(w) = rx.recv() {
        match w {
            Work::Stop => break,
            Work::Request(mut req) => {
                let inc = sh.tm_op(|tm, now, out| tm.on_request(&req, now, out));
                if inc == Incoming::Route {
                    guarded("request", &mut || router.request(&h, &mut req));
                    sh.dialogs.discard(&req);
                }
            }
            Work::Reply(b) => {
                let (msg, src) = *b;
                if sh.dialogs.on_reply(&msg) {
                    continue;
                }
                let matched = lock(&sh.tm).match_reply(&msg);
                let Some((id, no)) = matched else {
                    stateless_reply(&sh, &h, &*router, &msg, &src, &guarded);
                    continue;
                };
                let mut pass = true;
                guarded("reply", &mut || pass = router.reply(&h, &msg, &src));
                let tx_route = if pass {
                    lock(&sh.tm).reply_route_of(id, &msg)
                } else {
                    None
                };
                if let Some((route, req)) = tx_route {
                    // Branches are numbered from 1 in our Via; Kamailio's
                    // $T_branch_idx counts from 0.
                    let branch = no.saturating_sub(1);
                    guarded("reply_route", &mut || {
                        pass = router.reply_route(&h, &msg, &src, &route, &req, branch)
                    });
                }
                if pass {
                    sh.tm_op(|tm, now, out| tm.on_reply(&msg, now, out));
                }
            }
            Work::Dialog(ev) => {
                guarded("dialog_event", &mut || router.dialog_event(&h, &ev));
            }
            Work::Failure { id, mut req, route } => {
                guarded("failure", &mut || router.failure(&h, &mut req, &route));
                sh.tm_op(|tm, now, out| tm.failure_done(id, now, out));
            }
        }
    }
}

/// A reply that matched no branch: forwarded by its Via when the top Via
/// is ours (after the router's reply phase, which may drop it), else
/// dropped with a rate-limited log line.
fn stateless_reply(
    sh: &Arc<Shared>,
    h: &SipHandle,
    router: &dyn Router,
    msg: &SipMessage,
    src: &Source,
    guarded: &dyn Fn(&str, &mut dyn FnMut()),
) {
    let target = lock(&sh.tm).stateless_dest(msg);
    let (dest, data) = match target {
        Ok(t) => t,
        Err(e) => {
            warn_limited!(peer = %src.remote, code = msg.status(), reason = %e, "dropping reply matching no transaction");
            return;
        }
    };
    let mut pass = true;
    guarded("reply", &mut || pass = router.reply(h, msg, src));
    if pass {
        debug!(peer = %src.remote, to = %dest.addr, code = msg.status(), "forwarding reply with no transaction by its Via");
        let code = msg.status().unwrap_or_default();
        sh.tm_op(|tm, _, out| tm.forward_stateless(dest, data, code, out));
    }
}
