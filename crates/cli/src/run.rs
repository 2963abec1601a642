//! `evapi run` and `evapi check`.

use crate::config::Loaded;
use anyhow::Context;
use evapi::EventSocket;
use script::Engine;
use sip::SipHost;
use tracing::info;

/// Load the script, start the event socket and the SIP host, run until
/// SIGINT or SIGTERM, then shut down: SIP first (no new calls; suspended
/// and pending transactions get their final reply), then the event socket
/// (queued events written, clients closed, connection-closed run).
pub fn run(loaded: Loaded) -> anyhow::Result<()> {
    let engine = Engine::load(&loaded.script_config())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("evapi-io")
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;
    runtime.block_on(async {
        let events = EventSocket::bind(loaded.file.evapi.clone(), engine.evapi_handler())
            .await
            .context("cannot start the event socket")?;
        engine.set_evapi(events.handle());
        // The engine gets its handle before any message can reach it.
        let bound = SipHost::bind(loaded.host_config())
            .await
            .context("cannot start the SIP host")?;
        engine.set_sip(bound.handle());
        let host = bound
            .start(engine.sip_router())
            .context("cannot start the SIP host")?;
        let sip_addrs: Vec<String> = host
            .local_addrs()
            .iter()
            .map(|(t, a)| format!("{t}:{a}"))
            .collect();
        info!(
            config = %loaded.origin,
            script = %loaded.script_path.display(),
            sip = %sip_addrs.join(" "),
            events = %events.local_addr(),
            "evapi running"
        );
        let signal = wait_for_signal().await?;
        let (tm, ev) = (host.handle().stats(), events.handle().stats());
        info!(
            signal,
            transactions_created = tm.created,
            transactions_live = tm.live,
            suspended = tm.suspended,
            resumed = tm.resumed,
            timeouts = tm.timeouts,
            absorbed = tm.absorbed,
            relays = ev.relays,
            frames_queued = ev.frames_queued,
            slow_cut = ev.slow_cut,
            "shutting down"
        );
        host.shutdown().await;
        events.shutdown().await;
        info!("stopped");
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Check the config and the script without starting anything.
pub fn check(loaded: Loaded) -> anyhow::Result<()> {
    // [sip] and [tm] were checked when the file was loaded, by the same
    // `HostConfig::validate` that `SipHost::bind` runs for `evapi run`.
    let engine = Engine::load(&loaded.script_config())?;
    println!(
        "ok: config {} and script {}",
        loaded.origin,
        engine.path().display()
    );
    Ok(())
}
