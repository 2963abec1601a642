//! The event socket's admin RPC methods (ours: Kamailio's evapi has none,
//! and its users asked for a way to see and close dead clients):
//!
//! - `evapi.list`: each client, in connection index order: `conidx`,
//!   `connection_id`, `peer` (`"ip:port"`), `tag` (null when untagged),
//!   `connected_since` (Unix time, seconds), `connected_for` (seconds),
//!   `frames_in` / `bytes_in` (messages received and their payload
//!   bytes), `frames_out` / `bytes_out` (frames and bytes written), and
//!   `queued_bytes` (queued now, not yet written).
//! - `evapi.close CONIDX`: close that client; connection-closed runs for
//!   it as for any close. An index with no client is an error naming it.

use crate::EvapiHandle;
use rpc::{object, Params, Registry, RpcError};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// Add `evapi.list` and `evapi.close`, acting on `events`' clients.
pub fn register(registry: &Registry, events: EvapiHandle) {
    let h = events.clone();
    registry.register(
        "evapi.list",
        "The event clients: conidx, peer, tag, connected since, frames and bytes in and out, bytes queued.",
        move |p| list(&h, p),
    );
    registry.register(
        "evapi.close",
        "Close one event client: evapi.close CONIDX (connection-closed runs for it).",
        move |p| close(&events, p),
    );
}

fn list(events: &EvapiHandle, p: &Params) -> Result<Value, RpcError> {
    p.no_more(0)?;
    let now = SystemTime::now();
    let clients = events
        .clients()
        .into_iter()
        .map(|c| {
            let since = c
                .connected_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let age = now
                .duration_since(c.connected_at)
                .map_or(0, |d| d.as_secs());
            object([
                ("conidx", json!(c.conidx)),
                ("connection_id", json!(c.connection_id)),
                ("peer", json!(c.peer.to_string())),
                (
                    "tag",
                    c.tag
                        .map_or(Value::Null, |t| json!(String::from_utf8_lossy(&t))),
                ),
                ("connected_since", json!(since)),
                ("connected_for", json!(age)),
                ("frames_in", json!(c.frames_in)),
                ("bytes_in", json!(c.bytes_in)),
                ("frames_out", json!(c.frames_out)),
                ("bytes_out", json!(c.bytes_out)),
                ("queued_bytes", json!(c.queued_bytes)),
            ])
        })
        .collect();
    Ok(Value::Array(clients))
}

fn close(events: &EvapiHandle, p: &Params) -> Result<Value, RpcError> {
    let conidx = p.int(0, "conidx")?;
    p.no_more(1)?;
    let peer = usize::try_from(conidx)
        .ok()
        .and_then(|i| events.close_client(i))
        .ok_or_else(|| RpcError::not_found(format!("no event client with conidx {conidx}")))?;
    Ok(object([
        ("conidx", json!(conidx)),
        ("peer", json!(peer.to_string())),
    ]))
}
