//! An application worker over NATS for the scale-out tests: subscribed to
//! `evapi.relay` in the queue group `workers`, it answers each invite
//! event of the default script with 486 "Busy <name>" on the event's reply
//! subject (or holds the event without answering while `hold` is set),
//! and notes, per node named by the reply subject (`evapi.node.<node>`),
//! the SIP port of the event's Request-URI (the node that was called; 0
//! when the Request-URI has no port).
//!
//! It reconnects as the program does (`nats::reconnect_delay`). `kill`
//! ends it the way a crashed process would: the connection just goes, no
//! unsubscribe, no drain.

use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Per node named by the reply subjects answered on: the ports called.
pub type Seen = Arc<Mutex<BTreeMap<String, BTreeSet<u16>>>>;

/// A running worker (see the module's doc).
pub struct Worker {
    answered: Arc<AtomicUsize>,
    /// While set, events are taken and left unanswered.
    pub hold: Arc<AtomicBool>,
    /// The nodes and ports of the events answered.
    pub seen: Seen,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Connect to the NATS server at `url` and serve until killed or
    /// dropped; returns once subscribed.
    pub fn start(url: &str, name: &str) -> Worker {
        Self::start_with(url, name, async_nats::ConnectOptions::new())
    }

    /// [`Worker::start`] with `opts` (credentials, TLS).
    pub fn start_with(url: &str, name: &str, opts: async_nats::ConnectOptions) -> Worker {
        let answered = Arc::new(AtomicUsize::new(0));
        let hold = Arc::new(AtomicBool::new(false));
        let seen: Seen = Arc::default();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (url, name) = (url.to_string(), name.to_string());
        let (a, h, notes) = (answered.clone(), hold.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = opts
                    .reconnect_delay_callback(nats::reconnect_delay)
                    .connect(url.as_str())
                    .await
                    .unwrap();
                let mut sub = client
                    .queue_subscribe("evapi.relay", "workers".into())
                    .await
                    .unwrap();
                // `flush` only writes: a request nobody answers comes
                // back once the server has read the subscription.
                let sync = client.request("evapi-test.sync", "".into()).await;
                assert!(sync.is_err(), "nobody answers evapi-test.sync");
                ready_tx.send(()).unwrap();
                let serve = async {
                    while let Some(m) = sub.next().await {
                        if h.load(Ordering::SeqCst) {
                            continue;
                        }
                        let ev: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                        let reply = m.reply.expect("a reply subject").to_string();
                        assert!(reply.starts_with("evapi.node."), "{reply}");
                        // evapi.node.<node>, or evapi.node.<node>.<n> for a
                        // watched send: the node is the third token.
                        let node = reply.split('.').take(3).collect::<Vec<_>>().join(".");
                        // "sip:service@127.0.0.1:PORT": the node called.
                        let port = ev["ruri"]
                            .as_str()
                            .and_then(|r| r.rsplit(':').next())
                            .and_then(|p| p.parse::<u16>().ok())
                            .unwrap_or(0);
                        notes.lock().unwrap().entry(node).or_default().insert(port);
                        let answer = serde_json::json!({
                            "tindex": ev["tindex"], "tlabel": ev["tlabel"],
                            "code": 486, "reason": format!("Busy {name}"),
                        });
                        client
                            .publish(reply, answer.to_string().into())
                            .await
                            .unwrap();
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                };
                let stopped = tokio::task::spawn_blocking(move || {
                    let _ = stop_rx.recv();
                });
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        ready_rx
            .recv_timeout(super::WAIT)
            .expect("the worker subscribed");
        Worker {
            answered,
            hold,
            seen,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Events answered so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// End it as a crashed process would (its connection just goes).
    pub fn kill(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}
