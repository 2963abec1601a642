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
//! unsubscribe, no drain. [`WorkerProcess`] runs one in a process of its
//! own (this test binary again), for a real SIGKILL.

use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Per node named by the reply subjects answered on: the ports called.
pub type Seen = Arc<Mutex<BTreeMap<String, BTreeSet<u16>>>>;

/// A running worker (see the module's doc).
pub struct Worker {
    taken: Arc<AtomicUsize>,
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
        let taken = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let hold = Arc::new(AtomicBool::new(false));
        let seen: Seen = Arc::default();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (url, name) = (url.to_string(), name.to_string());
        let (t, a, h, notes) = (taken.clone(), answered.clone(), hold.clone(), seen.clone());
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
                        t.fetch_add(1, Ordering::SeqCst);
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
            taken,
            answered,
            hold,
            seen,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Events received so far (held or answered).
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::SeqCst)
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

/// The environment variable that makes [`serve_as_process`] run.
pub const PROCESS_URL: &str = "EVAPI_TEST_WORKER_URL";

/// The body of a worker process (see [`WorkerProcess`]): when
/// `EVAPI_TEST_WORKER_URL` is set, a [`Worker`] named
/// `EVAPI_TEST_WORKER_NAME`, holding every event when
/// `EVAPI_TEST_WORKER_HOLD=1`, which prints `worker ready` once
/// subscribed and `worker taken N` / `worker answered N` as they change;
/// it exits by itself after [`super::WAIT`] times 4 at most.
pub fn serve_as_process() {
    let Ok(url) = std::env::var(PROCESS_URL) else {
        return;
    };
    let name = std::env::var("EVAPI_TEST_WORKER_NAME").unwrap_or_else(|_| "w".into());
    let w = Worker::start(&url, &name);
    w.hold.store(
        std::env::var("EVAPI_TEST_WORKER_HOLD").as_deref() == Ok("1"),
        Ordering::SeqCst,
    );
    println!("worker ready");
    let (mut taken, mut answered) = (0, 0);
    let deadline = std::time::Instant::now() + 4 * super::WAIT;
    while std::time::Instant::now() < deadline {
        if w.taken() != taken {
            taken = w.taken();
            println!("worker taken {taken}");
        }
        if w.answered() != answered {
            answered = w.answered();
            println!("worker answered {answered}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A worker in a process of its own: this test binary started again to
/// run only the ignored test `test` (whose body is
/// [`serve_as_process`]). Killed (SIGKILL, by its PID) by [`kill`] or
/// when dropped.
///
/// [`kill`]: WorkerProcess::kill
pub struct WorkerProcess {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    taken: usize,
    answered: usize,
}

impl WorkerProcess {
    /// Start it against `url` and wait until it has subscribed.
    pub fn start(test: &str, url: &str, name: &str, hold: bool) -> WorkerProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                test,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PROCESS_URL, url)
            .env("EVAPI_TEST_WORKER_NAME", name)
            .env("EVAPI_TEST_WORKER_HOLD", if hold { "1" } else { "0" })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the worker process starts");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                // The first may follow libtest's "test worker_process ... ".
                let Some(at) = line.find("worker ") else {
                    continue;
                };
                if tx.send(line[at..].to_string()).is_err() {
                    break;
                }
            }
        });
        let mut p = WorkerProcess {
            child,
            lines,
            taken: 0,
            answered: 0,
        };
        p.wait_for(|l| l == "worker ready", "ready");
        p
    }

    /// The process's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn note(&mut self, line: &str) {
        if let Some(n) = line.strip_prefix("worker taken ") {
            self.taken = n.parse().unwrap();
        }
        if let Some(n) = line.strip_prefix("worker answered ") {
            self.answered = n.parse().unwrap();
        }
    }

    fn wait_for(&mut self, done: impl Fn(&str) -> bool, what: &str) {
        let deadline = std::time::Instant::now() + super::WAIT;
        loop {
            let left = deadline
                .checked_duration_since(std::time::Instant::now())
                .unwrap_or_else(|| panic!("the worker process is not {what}"));
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("the worker process is not {what}: {e}"));
            self.note(&line);
            if done(&line) {
                return;
            }
        }
    }

    /// Take in what it has reported so far, without waiting.
    pub fn update(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.note(&line);
        }
    }

    /// Events it has received (as last reported).
    pub fn taken(&self) -> usize {
        self.taken
    }

    /// Events it has answered (as last reported).
    pub fn answered(&self) -> usize {
        self.answered
    }

    /// SIGKILL it (by its PID: `Child::kill`) and reap it; returns the
    /// signal that ended it.
    pub fn kill(&mut self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        let _ = self.child.kill();
        let status = self.child.wait().expect("the worker process is reaped");
        // What it printed before it died.
        self.update();
        status.signal()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
