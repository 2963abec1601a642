//! The transaction layer's admin RPC methods (Kamailio's tm module names):
//!
//! - `tm.list [state] [limit]`: the transactions in the table, oldest
//!   first: `tindex`, `tlabel` and `id` (`"index:label"`, as
//!   `KSR.tmx.t_continue` and `tm.reply` take them), `method`, `callid`,
//!   `from`, `to`, `cseq`, `ruri`, `state` (`suspended`, `relaying`,
//!   `failure-route`, `proceeding`, `completed`, `confirmed`), `age_ms`,
//!   `code` (last code sent upstream, 0: none), `branches`, `canceled`.
//!   `state` keeps only those in that state; `limit` (default 1000) caps
//!   the list.
//! - `tm.reply code reason trans_id to_tag [new_headers] [body]`: answer a
//!   transaction (a suspended one, typically) by hand, with Kamailio's
//!   parameters in Kamailio's order. The code, reason, header lines and
//!   body go through the same gate as the script's replies: refused
//!   (−32602, naming the value), nothing is sent.

use crate::request::TxRef;
use crate::tm::{ReplyExtra, TmError};
use crate::SipHandle;
use rpc::{object, Params, Registry, RpcError};
use serde_json::{json, Value};

/// `tm.list` lists at most this many unless told otherwise.
pub const DEFAULT_LIST_LIMIT: usize = 1000;
/// The largest `limit` `tm.list` accepts.
pub const MAX_LIST_LIMIT: usize = 100_000;

const STATES: [&str; 6] = [
    "suspended",
    "relaying",
    "failure-route",
    "proceeding",
    "completed",
    "confirmed",
];

/// Add `tm.list` and `tm.reply`, acting on `sip`'s transaction table.
pub fn register(registry: &Registry, sip: SipHandle) {
    let host = sip.clone();
    registry.register(
        "tm.list",
        "The transactions in the table, oldest first: tm.list [STATE] [LIMIT] \
         (STATE: suspended, relaying, failure-route, proceeding, completed, confirmed; \
         LIMIT: at most this many, default 1000).",
        move |p| tm_list(&host, p),
    );
    registry.register(
        "tm.reply",
        "Answer a transaction: tm.reply CODE REASON TRANS_ID TO_TAG [HEADERS] [BODY] \
         (TRANS_ID: \"index:label\"; TO_TAG \"\": ours; HEADERS: \"Name: value\\r\\n\" lines; \
         a BODY needs a Content-Type line).",
        move |p| tm_reply(&sip, p),
    );
}

fn tm_list(sip: &SipHandle, p: &Params) -> Result<Value, RpcError> {
    let state = match p.opt_str(0, "state")? {
        None | Some("" | "all") => None,
        Some(s) if STATES.contains(&s) => Some(s),
        Some(other) => {
            return Err(RpcError::invalid_params(format!(
                "parameter 1 (state) {other:?} is not one of all, {}",
                STATES.join(", ")
            )))
        }
    };
    let limit = match p.opt_int(1, "limit")? {
        None => DEFAULT_LIST_LIMIT,
        Some(n) if (1..=MAX_LIST_LIMIT as i64).contains(&n) => n as usize,
        Some(n) => {
            return Err(RpcError::invalid_params(format!(
                "parameter 2 (limit) {n} is outside 1 to {MAX_LIST_LIMIT}"
            )))
        }
    };
    p.no_more(2)?;
    let list = sip
        .list_transactions(state, limit)
        .into_iter()
        .map(|t| {
            object([
                ("id", json!(t.tref.to_string())),
                ("tindex", json!(t.tref.index)),
                ("tlabel", json!(t.tref.label)),
                ("method", json!(t.method)),
                ("callid", json!(t.call_id)),
                ("from", json!(t.from)),
                ("to", json!(t.to)),
                ("cseq", json!(t.cseq)),
                ("ruri", json!(t.ruri)),
                ("state", json!(t.state)),
                ("age_ms", json!(t.age_ms)),
                ("code", json!(t.code)),
                ("branches", json!(t.branches)),
                ("canceled", json!(t.canceled)),
            ])
        })
        .collect();
    Ok(Value::Array(list))
}

/// `"index:label"`, both unsigned 32-bit.
fn parse_trans_id(s: &str) -> Option<TxRef> {
    let (i, l) = s.trim().split_once(':')?;
    Some(TxRef {
        index: i.parse().ok()?,
        label: l.parse().ok()?,
    })
}

fn tm_reply(sip: &SipHandle, p: &Params) -> Result<Value, RpcError> {
    let code = p.int(0, "code")?;
    let reason = p.str(1, "reason")?;
    let id = p.str(2, "trans_id")?;
    let to_tag = p.str(3, "to_tag")?;
    let headers = p.opt_str(4, "new_headers")?.unwrap_or("");
    let body = p.opt_str(5, "body")?.unwrap_or("");
    p.no_more(6)?;
    let t = parse_trans_id(id).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "parameter 3 (trans_id) {id:?} is not \"index:label\""
        ))
    })?;
    let extra = ReplyExtra {
        to_tag,
        headers,
        body,
    };
    match sip.reply_by_id(t, code, reason, extra) {
        // Kamailio answers an empty structure.
        Ok(()) => Ok(json!({})),
        Err(e) => Err(reply_error(e)),
    }
}

/// Kamailio's codes where it has one: 481 for no such transaction, 500
/// for a reply that cannot be sent; our gate's refusals are bad
/// parameters.
fn reply_error(e: TmError) -> RpcError {
    match e {
        TmError::NoTransaction { .. } | TmError::NotSuspended { .. } => {
            RpcError::new(481, e.to_string())
        }
        TmError::BadStatus { .. } | TmError::BadReplyText { .. } => {
            RpcError::invalid_params(format!("{e}; nothing sent"))
        }
        other => RpcError::failed(format!("{other}; nothing sent")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trans_ids_are_two_u32() {
        assert_eq!(
            parse_trans_id("12:34"),
            Some(TxRef {
                index: 12,
                label: 34
            })
        );
        for bad in ["12", "a:1", "1:-2", "1:4294967296", "", ":"] {
            assert_eq!(parse_trans_id(bad), None, "{bad:?}");
        }
    }
}
