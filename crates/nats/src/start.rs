//! Setting up and running the NATS side: [`connect`] gives a [`Bound`]
//! client whose handle exists before anything runs; [`Bound::start`]
//! subscribes and starts the worker threads;
//! [`Nats`] is the running side, stopped by [`Nats::shutdown`].

use super::*;

/// A NATS client set up (it connects in the background), not yet
/// subscribed: its [`NatsHandle`] exists, so a script engine can be built
/// with it before the handler that runs its events.
pub struct Bound {
    handle: NatsHandle,
    section: NatsSection,
}

/// The delay before reconnection attempt `attempts` (0-based): 50 ms
/// doubling to 1.6 s.
pub fn reconnect_delay(attempts: usize) -> Duration {
    Duration::from_millis(50u64 << attempts.min(5))
}

/// How long a connection attempt may take (TCP, TLS and the server's
/// answer to CONNECT).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// While connections fail, each server is tried by hand
/// ([`diagnose`]) at most this often.
const DIAGNOSE_EVERY: Duration = Duration::from_secs(60);

/// The options every connection of this node uses: its name, the
/// credentials and TLS of `section`.
async fn options(section: &NatsSection, node: &str) -> Result<ConnectOptions, StartError> {
    let mut opts = ConnectOptions::new()
        .name(format!("evapi {node}"))
        .connection_timeout(CONNECT_TIMEOUT);
    if !section.user.is_empty() {
        opts = opts.user_and_password(section.user.clone(), section.password.0.clone());
    }
    if !section.token.0.is_empty() {
        opts = opts.token(section.token.0.clone());
    }
    if !section.creds_file.as_os_str().is_empty() {
        opts = opts
            .credentials_file(&section.creds_file)
            .await
            .map_err(|e| StartError::Creds {
                path: section.creds_file.display().to_string(),
                reason: e.to_string(),
            })?;
    }
    if !section.tls_ca.as_os_str().is_empty() {
        opts = opts
            .add_root_certificates(section.tls_ca.clone())
            .require_tls(true);
    }
    if !section.tls_cert.as_os_str().is_empty() {
        opts = opts.add_client_certificate(section.tls_cert.clone(), section.tls_key.clone());
    }
    Ok(opts)
}

/// One connection attempt to each server, by hand, logging why each one
/// fails. The client reports a failed attempt by its kind only
/// ("authorization violation", "TLS error"), without the server or the
/// underlying cause; this names both: `NATS cannot connect to
/// tls://nats1:4443: IO error: invalid peer certificate: UnknownIssuer`.
/// A connection that succeeds is closed at once.
async fn diagnose(section: &NatsSection, shared: &Shared) {
    for server in &section.servers {
        let attempt = async {
            let opts = options(section, &shared.node)
                .await
                .map_err(|e| e.to_string())?
                .reconnect_delay_callback(|_| Duration::ZERO);
            opts.connect(server.as_str())
                .await
                .map_err(|e| e.to_string())
        };
        let cause = match tokio::time::timeout(2 * CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(_client)) => continue,
            Ok(Err(e)) => e,
            Err(_) => "timed out".to_string(),
        };
        warn!(node = %shared.node, %server, %cause, "NATS cannot connect to {server}: {cause}");
        *shared.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(format!("{server}: {cause}"));
    }
}

/// Validate `section` and set up the client. It connects in the
/// background (a server that is down at start is retried as after a
/// disconnection), so this returns at once; sends fail until it is
/// connected. A server that refuses the node (wrong credentials, a
/// certificate not trusted) is retried the same way; each failing server
/// and its cause are logged (at most once a minute while it fails) and
/// kept for `nats.status` ([`NatsHandle::last_error`]).
pub async fn connect(section: &NatsSection) -> Result<Bound, StartError> {
    section.validate()?;
    section.check_files()?;
    let node = section.node_name();
    let reply = section.reply_subject(&node);
    let counters = Counters::default();
    let mut opts = options(section, &node)
        .await?
        .retry_on_initial_connect()
        .max_reconnects(None)
        .client_capacity(OUT_QUEUE)
        .reconnect_delay_callback(reconnect_delay);
    let (events_tx, events_rx) = flume::unbounded::<async_nats::Event>();
    opts = opts.event_callback(move |e| {
        let tx = events_tx.clone();
        async move {
            let _ = tx.send(e);
        }
    });
    let addrs: Vec<ServerAddr> = section
        .servers
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|e: std::io::Error| StartError::Connect(format!("{s}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let client = opts
        .connect(addrs)
        .await
        .map_err(|e| StartError::Connect(e.to_string()))?;
    let shared = Arc::new(Shared {
        client,
        servers: section.servers.clone(),
        prefix: section.subject_prefix.clone(),
        node,
        reply,
        watched: Mutex::new(HashMap::new()),
        next_watch: AtomicU64::new(1),
        counters,
        last_error: Mutex::new(None),
    });
    let weak = Arc::downgrade(&shared);
    let diagnosed = section.clone();
    tokio::spawn(async move {
        let mut last_diagnosis: Option<Instant> = None;
        while let Ok(e) = events_rx.recv_async().await {
            let Some(s) = weak.upgrade() else { break };
            match e {
                async_nats::Event::Connected => {
                    bump(&s.counters.connects);
                    last_diagnosis = None;
                    info!(node = %s.node, "NATS connected");
                }
                async_nats::Event::Disconnected => {
                    bump(&s.counters.disconnects);
                    warn!(node = %s.node, "NATS disconnected; sends over NATS fail until it reconnects");
                }
                // A connection attempt failed (the client says only of what
                // kind): find out which server and why, now and then.
                async_nats::Event::ClientError(async_nats::ClientError::Other(kind)) => {
                    tracing::debug!(node = %s.node, %kind, "NATS connection attempt failed");
                    if last_diagnosis.is_none_or(|t| t.elapsed() >= DIAGNOSE_EVERY) {
                        last_diagnosis = Some(Instant::now());
                        let section = diagnosed.clone();
                        tokio::spawn(async move { diagnose(&section, &s).await });
                    }
                }
                other => warn_limited!(node = %s.node, event = %other, "NATS client event"),
            }
        }
    });
    Ok(Bound {
        handle: NatsHandle { shared },
        section: section.clone(),
    })
}

/// The running NATS side: the subscriptions and the worker threads.
pub struct Nats {
    handle: NatsHandle,
    tasks: Vec<JoinHandle<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Bound {
    /// The handle the running NATS side will use; valid from now on.
    pub fn handle(&self) -> NatsHandle {
        self.handle.clone()
    }

    /// Subscribe to this node's reply subjects and the configured
    /// subjects, and start `threads` (at least 1) worker threads running
    /// `handler`.
    pub async fn start(
        self,
        handler: Arc<dyn NatsHandler>,
        threads: usize,
    ) -> Result<Nats, StartError> {
        let Bound { handle, section } = self;
        let shared = handle.shared.clone();
        let client = shared.client.clone();
        let (in_tx, in_rx) = flume::bounded::<Incoming>(IN_QUEUE);
        let sub = |subject: String, queue: String| {
            let client = client.clone();
            async move {
                let r = if queue.is_empty() {
                    client.subscribe(subject.clone()).await
                } else {
                    client.queue_subscribe(subject.clone(), queue).await
                };
                r.map_err(|e| StartError::Subscribe {
                    subject,
                    reason: e.to_string(),
                })
            }
        };
        let mut tasks = Vec::new();
        // Answers: `<reply>` and, for watched sends, `<reply>.<n>`.
        for subject in [shared.reply.clone(), format!("{}.*", shared.reply)] {
            let mut subscriber = sub(subject, String::new()).await?;
            let (tx, shared) = (in_tx.clone(), shared.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(m) = subscriber.next().await {
                    let watch = m
                        .subject
                        .strip_prefix(shared.reply.as_str())
                        .and_then(|rest| rest.strip_prefix('.'))
                        .and_then(|n| n.parse::<u64>().ok());
                    let data = match watch {
                        Some(n) => {
                            let mut w = shared.watched.lock().unwrap_or_else(|e| e.into_inner());
                            w.remove(&n).map(|(d, _)| d)
                        }
                        None => None,
                    };
                    let event = match m.status {
                        Some(async_nats::StatusCode::NO_RESPONDERS) => match data {
                            Some(d) => {
                                bump(&shared.counters.no_responders);
                                Incoming::NoResponders(d)
                            }
                            None => continue,
                        },
                        Some(status) => {
                            warn_limited!(subject = %m.subject, %status, "NATS status message on the reply subject ignored");
                            continue;
                        }
                        None => {
                            bump(&shared.counters.replies);
                            Incoming::Reply(m.payload)
                        }
                    };
                    if tx.send_async(event).await.is_err() {
                        break;
                    }
                }
            }));
        }
        for s in &section.subscribe {
            let mut subscriber = sub(s.subject.clone(), s.queue.clone()).await?;
            let (tx, shared) = (in_tx.clone(), shared.clone());
            let name: Arc<str> = s.subject.as_str().into();
            tasks.push(tokio::spawn(async move {
                while let Some(m) = subscriber.next().await {
                    if m.status.is_some() {
                        continue;
                    }
                    bump(&shared.counters.messages);
                    if tx
                        .send_async(Incoming::Message(name.clone(), m.payload))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }));
        }
        // Forget watched sends nobody said anything about.
        {
            let weak = Arc::downgrade(&shared);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let Some(s) = weak.upgrade() else { break };
                    let now = Instant::now();
                    s.watched
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|_, (_, at)| now.duration_since(*at) < WATCH_TTL);
                }
            }));
        }
        drop(in_tx);
        let mut joins = Vec::new();
        for n in 0..threads.max(1) {
            let (rx, handler) = (in_rx.clone(), handler.clone());
            let name = format!("nats-worker-{n}");
            let t = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    handler.thread_started(n);
                    for event in rx.iter() {
                        let run = std::panic::AssertUnwindSafe(|| match &event {
                            Incoming::Reply(p) => handler.reply(p),
                            Incoming::NoResponders(d) => handler.no_responders(d),
                            Incoming::Message(s, p) => handler.message(s, p),
                        });
                        if std::panic::catch_unwind(run).is_err() {
                            lograte::error_limited!("NATS event handler panicked");
                        }
                    }
                })
                .map_err(|e| StartError::Thread(name, e))?;
            joins.push(t);
        }
        info!(node = %shared.node, servers = ?shared.servers, reply = %shared.reply, subscriptions = section.subscribe.len(), "NATS started");
        Ok(Nats {
            handle,
            tasks,
            threads: joins,
        })
    }
}

impl Nats {
    /// The handle to send with.
    pub fn handle(&self) -> NatsHandle {
        self.handle.clone()
    }

    /// Publish what is queued (at most 1 s), stop the subscriptions and
    /// the worker threads (each event in hand finishes; at most 5 s), and
    /// close the connection.
    pub async fn shutdown(mut self) {
        let client = self.handle.shared.client.clone();
        let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
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
        let _ = tokio::time::timeout(Duration::from_secs(1), client.drain()).await;
        info!(node = %self.handle.shared.node, "NATS stopped");
    }
}
