//! The admin RPC method `nats.status`: whether this node is connected to
//! NATS, its name and subjects, and the counters.

use crate::NatsHandle;

/// Add `nats.status` to `registry`.
pub fn register(registry: &rpc::Registry, handle: NatsHandle) {
    registry.register(
        "nats.status",
        "NATS: connected (1/0), node, reply subject, servers, the counters and the last connection error",
        move |p: &rpc::Params| {
            p.no_more(0)?;
            let s = handle.stats();
            Ok(rpc::object([
                ("connected", serde_json::json!(s.connected as i64)),
                ("node", serde_json::json!(handle.node())),
                ("reply_subject", serde_json::json!(handle.reply_subject())),
                ("servers", serde_json::json!(handle.servers())),
                ("connects", serde_json::json!(s.connects)),
                ("disconnects", serde_json::json!(s.disconnects)),
                ("published", serde_json::json!(s.published)),
                ("send_failed", serde_json::json!(s.send_failed)),
                ("send_disconnected", serde_json::json!(s.send_disconnected)),
                ("no_responders", serde_json::json!(s.no_responders)),
                ("replies", serde_json::json!(s.replies)),
                ("messages", serde_json::json!(s.messages)),
                ("last_error", serde_json::json!(handle.last_error())),
            ]))
        },
    );
}
