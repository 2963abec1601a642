//! `evapi run` and `evapi check`.

use crate::config::Loaded;
use anyhow::Context;
use evapi::{EvapiHandle, EventSocket, SendError};
use script::{Engine, EventOps, SipOps};
use sip::{Request, SipHandle, SipHost, TmError, TxRef};
use std::sync::{Arc, OnceLock};
use tracing::{info, warn};

/// Load the script, start the event socket and the SIP host, run until
/// SIGINT or SIGTERM, then shut down: SIP first (no new calls; suspended
/// and pending transactions get their final reply), then the event socket
/// (queued events written, clients closed, connection-closed run).
pub fn run(loaded: Loaded) -> anyhow::Result<()> {
    let late = Arc::new(Late::default());
    let engine = Engine::new(&loaded.script_config(), late.clone(), late.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("evapi-io")
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;
    runtime.block_on(async {
        let events = EventSocket::bind(loaded.file.evapi.clone(), engine.evapi_handler())
            .await
            .context("cannot start the event socket")?;
        let _ = late.events.set(events.handle());
        let host = SipHost::start(loaded.host_config(), engine.sip_router())
            .await
            .context("cannot start the SIP host")?;
        let _ = late.sip.set(host.handle());
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
    loaded
        .host_config()
        .validate()
        .with_context(|| format!("{}: in [sip]/[tm]", loaded.origin))?;
    let script = loaded.script_config();
    Engine::check(&script)?;
    println!(
        "ok: config {} and script {}",
        loaded.origin,
        script.file.display()
    );
    Ok(())
}

/// The event socket and SIP host handles, filled in once each has started.
///
/// TODO(two-phase start): the engine takes its handles when it is built,
/// but today `EventSocket::bind` and `SipHost::start` need the engine's
/// hooks first and only then give a handle. Replace this adapter with the
/// handles of the bound-but-not-started socket and host once those crates
/// offer the two-phase start. Until then, a `KSR` call made before a
/// handle is set fails with a log line from the script layer.
#[derive(Default)]
struct Late {
    events: OnceLock<EvapiHandle>,
    sip: OnceLock<SipHandle>,
}

impl Late {
    fn events(&self) -> Result<&EvapiHandle, SendError> {
        self.events.get().ok_or_else(|| {
            warn!("the event socket is not started yet");
            SendError::Shutdown
        })
    }
    fn sip(&self) -> Result<&SipHandle, TmError> {
        self.sip.get().ok_or_else(|| {
            warn!("the SIP host is not started yet");
            TmError::ShuttingDown
        })
    }
}

impl EventOps for Late {
    fn relay(&self, data: &[u8]) -> Result<usize, SendError> {
        self.events()?.relay(data)
    }
    fn multicast(&self, data: &[u8], tag: &[u8]) -> Result<usize, SendError> {
        self.events()?.multicast(data, tag)
    }
    fn unicast(&self, data: &[u8], tag: &[u8]) -> Result<usize, SendError> {
        self.events()?.unicast(data, tag)
    }
    fn unicast_round_robin(&self, data: &[u8], tag: &[u8]) -> Result<usize, SendError> {
        self.events()?.unicast_round_robin(data, tag)
    }
    fn client_count(&self) -> usize {
        self.events().map_or(0, |h| h.client_count())
    }
    fn tag_count(&self, tag: &[u8]) -> usize {
        self.events().map_or(0, |h| h.tag_count(tag))
    }
}

impl SipOps for Late {
    fn sl_reply(&self, req: &Request, code: u16, reason: &str) -> Result<(), TmError> {
        self.sip()?.sl_reply(req, code, reason)
    }
    fn t_newtran(&self, req: &mut Request) -> Result<TxRef, TmError> {
        self.sip()?.t_newtran(req)
    }
    fn t_check_trans(&self, req: &Request) -> bool {
        self.sip().is_ok_and(|h| h.t_check_trans(req))
    }
    fn t_reply(&self, req: &mut Request, code: u16, reason: &str) -> Result<(), TmError> {
        self.sip()?.t_reply(req, code, reason)
    }
    fn t_relay(&self, req: &mut Request) -> Result<(), TmError> {
        self.sip()?.t_relay(req)
    }
    fn t_suspend(&self, req: &mut Request) -> Result<TxRef, TmError> {
        self.sip()?.t_suspend(req)
    }
    fn t_continue(&self, index: u32, label: u32) -> Result<Request, TmError> {
        self.sip()?.t_continue(index, label)
    }
}
