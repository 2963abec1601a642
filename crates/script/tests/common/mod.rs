//! The real handles for engines in these tests: an event socket and a SIP
//! host, both bound on loopback with free ports, given to the engine
//! before either starts (the two-phase start). The SIP host is never
//! started: these tests route no SIP.

use evapi::{BoundSocket, Config, EventSocket};
use script::{Engine, ScriptConfig, ScriptError};
use sip::{BoundHost, HostConfig, SipConfig, SipHost};
use std::path::PathBuf;
use std::sync::Arc;

/// An engine for `source` with its event socket bound (not yet started)
/// with `config`, and a SIP host bound on loopback.
pub async fn engine(
    source: &str,
    callback: &str,
    config: Config,
) -> Result<(Arc<Engine>, BoundSocket, BoundHost), ScriptError> {
    let events = EventSocket::listen(Config {
        bind_addr: "127.0.0.1:0".into(),
        ..config
    })
    .await
    .expect("event socket binds");
    let sip = SipHost::bind(HostConfig {
        sip: SipConfig {
            listen: vec!["udp:127.0.0.1:0".into()],
            children: 1,
            ..SipConfig::default()
        },
        ..HostConfig::default()
    })
    .await
    .expect("SIP host binds");
    let engine = Engine::new(
        &ScriptConfig {
            file: PathBuf::from("test.lua"),
            source: Some(source.to_string()),
            event_callback: callback.to_string(),
            ..Default::default()
        },
        Arc::new(events.handle()),
        Arc::new(sip.handle()),
        rpc::Registry::new(),
    )?;
    Ok((engine, events, sip))
}
