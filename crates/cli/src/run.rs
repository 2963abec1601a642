//! `evapi run` and `evapi check`.

use crate::config::Loaded;
use crate::{core_rpc, metrics, stats_rpc};
use anyhow::Context;
use evapi::EventSocket;
use script::Engine;
use sip::SipHost;
use std::sync::{Arc, OnceLock};
use tracing::info;

/// Bind the event socket and the SIP host, build the script engine with
/// their handles and the admin RPC registry, start both, run until SIGINT
/// or SIGTERM (SIGHUP reloads the script), then shut down:
/// SIP first (no new calls; suspended and pending transactions get their
/// final reply), then the event socket (queued events written, clients
/// closed, connection-closed run).
///
/// The two-phase start (bind, then start with the engine's hooks) means the
/// engine has both handles before any message or event can reach it, and
/// every config error is reported before any thread runs.
///
/// The admin HTTP listener starts first and stops last, so `GET /health`
/// answers "starting" until both listeners are up and "stopping" from the
/// signal on.
pub fn run(loaded: Loaded) -> anyhow::Result<()> {
    let started = core_rpc::Started::now();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(loaded.file.sip.io_threads(cpus))
        .thread_name("evapi-io")
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;
    let result = runtime.block_on(async {
        let registry = rpc::Registry::new();
        core_rpc::register(&registry, started);
        let scrape = Arc::new(OnceLock::new());
        let http = start_http(&loaded.file.http, &registry, started, &scrape).await?;
        let bound_events = EventSocket::listen(loaded.file.evapi.clone())
            .await
            .context("cannot start the event socket")?;
        let bound_sip = SipHost::bind(loaded.host_config())
            .await
            .context("cannot start the SIP host")?;
        // [nats]: the client connects in the background; its handle is
        // the engine's before any event can reach the script.
        let bound_nats = match loaded.file.nats.enabled() {
            true => Some(
                nats::connect(&loaded.file.nats)
                    .await
                    .context("cannot start NATS")?,
            ),
            false => None,
        };
        let engine = Engine::with_nats(
            &loaded.script_config(),
            Arc::new(bound_events.handle()),
            Arc::new(bound_sip.handle()),
            registry.clone(),
            bound_nats
                .as_ref()
                .map(|b| Arc::new(b.handle()) as Arc<dyn script::NatsOps>),
        )?;
        if let Some(b) = &bound_nats {
            nats::rpc::register(&registry, b.handle());
        }
        sip::rpc::register(&registry, bound_sip.handle());
        sip::dialog::rpc::register(&registry, bound_sip.handle().dialogs().clone());
        evapi::rpc::register(&registry, bound_events.handle());
        script::rpc::register(&registry, &engine);
        let sources = metrics::Sources::new(bound_sip.handle(), bound_events.handle(), &engine)
            .with_nats(bound_nats.as_ref().map(|b| b.handle()));
        stats_rpc::register(&registry, sources.clone());
        let _ = scrape.set(metrics::Metrics::new(sources));
        let events = bound_events
            .start(engine.evapi_handler())
            .context("cannot start the event socket")?;
        let host = bound_sip
            .start(engine.sip_router())
            .context("cannot start the SIP host")?;
        let nats = match bound_nats {
            Some(b) => Some(
                b.start(engine.nats_handler(), loaded.file.evapi.workers.max(1))
                    .await
                    .context("cannot start NATS")?,
            ),
            None => None,
        };
        let nats_node = nats.as_ref().map(|n| n.handle().node().to_string());
        let sip_addrs: Vec<String> = host
            .local_addrs()
            .iter()
            .map(|(t, a)| format!("{t}:{a}"))
            .collect();
        let http_addr = http.as_ref().map(|h| h.local_addr().to_string());
        // Before "running": a SIGHUP from then on reloads, never kills.
        let mut signals = Signals::new()?;
        info!(
            config = %loaded.origin,
            script = %loaded.script_path.display(),
            sip = %sip_addrs.join(" "),
            events = %events.local_addr(),
            http = %http_addr.as_deref().unwrap_or("off"),
            nats = %nats_node.as_deref().unwrap_or("off"),
            "evapi running"
        );
        if let Some(h) = &http {
            h.health().set_ready();
        }
        let signal = signals.wait(&engine).await;
        if let Some(h) = &http {
            h.health().set_stopping();
        }
        let (tm, ev) = (host.handle().stats(), events.handle().stats());
        info!(
            signal,
            transactions_created = tm.created,
            transactions_live = tm.live,
            suspended = tm.suspended,
            resumed = tm.resumed,
            timeouts = tm.timeouts,
            absorbed = tm.absorbed,
            events_sent = ev.relays,
            event_frames_queued = ev.frames_queued,
            event_clients_cut = ev.slow_cut,
            "shutting down"
        );
        host.shutdown().await;
        if let Some(n) = nats {
            n.shutdown().await;
        }
        events.shutdown().await;
        // The hooks hold only a weak reference to the engine: it lives
        // until here, past the last message either side can deliver.
        drop(engine);
        if let Some(h) = http {
            h.shutdown().await;
        }
        info!("stopped");
        Ok(())
    });
    // A thread left behind by a shutdown (a script stuck in a C call) must
    // not keep the process alive: returning from main ends it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// What `GET /metrics` renders, set once the parts are built (until then
/// it answers an empty exposition).
type Scrape = Arc<OnceLock<metrics::Metrics>>;

/// The admin HTTP listener, unless `[http] enabled = false`.
async fn start_http(
    config: &admin::HttpConfig,
    registry: &Arc<rpc::Registry>,
    started: core_rpc::Started,
    scrape: &Scrape,
) -> anyhow::Result<Option<admin::HttpServer>> {
    if !config.enabled {
        return Ok(None);
    }
    let services = admin::Services {
        rpc: registry.clone(),
        metrics: {
            let scrape = scrape.clone();
            Arc::new(move || scrape.get().map(|m| m.render()).unwrap_or_default())
        },
        version: env!("CARGO_PKG_VERSION"),
        started: started.instant,
    };
    admin::HttpServer::start(config, services)
        .await
        .map(Some)
        .context("cannot start the admin HTTP listener")
}

/// SIGTERM and SIGINT stop the program; SIGHUP reloads the script.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot watch SIGHUP")?,
        })
    }

    /// Wait for SIGTERM or SIGINT (its name); reload the script on each
    /// SIGHUP meanwhile, as `app_lua.reload` does (the outcome is logged).
    async fn wait(&mut self, engine: &Arc<Engine>) -> &'static str {
        loop {
            tokio::select! {
                _ = self.term.recv() => return "SIGTERM",
                _ = self.int.recv() => return "SIGINT",
                _ = self.hup.recv() => {
                    // The check runs Lua: not on an I/O thread.
                    let engine = engine.clone();
                    let _ = tokio::task::spawn_blocking(move || engine.reload("SIGHUP")).await;
                }
            }
        }
    }
}

/// Check the config and the script without starting anything; then print
/// what the script's source tells (KSR functions and pseudo-variables this
/// program does not provide, routes named but not defined...), one
/// `file:line: warning: ...` or `note:` a line on stdout. Only errors make
/// it fail: warnings are for the porter to read.
pub fn check(loaded: Loaded) -> anyhow::Result<()> {
    // Every section was checked when the file was loaded, by the same
    // validate functions that `evapi run` reaches through the same load.
    let script = loaded.script_config();
    Engine::check(&script)?;
    let findings = script::lint(&script);
    for f in &findings {
        println!("{f}");
    }
    let warnings = findings
        .iter()
        .filter(|f| f.severity == script::Severity::Warning)
        .count();
    if warnings > 0 {
        println!(
            "{warnings} warning(s), {} note(s)",
            findings.len() - warnings
        );
    }
    println!(
        "ok: config {} and script {}",
        loaded.origin,
        script.file.display()
    );
    Ok(())
}
