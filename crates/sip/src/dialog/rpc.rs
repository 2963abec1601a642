//! The dialog table's admin RPC methods (Kamailio's dialog module names):
//!
//! - `dlg.list`: every dialog: `h_entry`, `h_id`, `call-id`, `from_uri`,
//!   `to_uri`, `state` (Kamailio's numbers: 1 unconfirmed, 2 early, 3
//!   answered, 4 confirmed, 5 ended with our BYEs under way), `start_ts`,
//!   `timeout`, and `caller` / `callee` (`tag`, `contact`, `cseq`).
//! - `dlg.list_ctx`: the same with `profiles` and `variables`.
//! - `dlg.end_dlg h_entry h_id`: BYE to both sides, as `dlg_bye("all")`;
//!   an unknown pair is error 404 naming it, an unanswered dialog 500.
//! - `dlg.profile_get_size profile [value]`: dialogs in the profile (with
//!   that value, or with any).
//! - `dlg.stats_active`: dialogs by state (`starting`, `connecting`,
//!   `answering`, `ongoing`, `all`), as Kamailio's.

use super::{DialogError, DialogInfo, Dialogs, DlgId, Side};
use rpc::{object, Params, Registry, RpcError};
use serde_json::{json, Value};
use std::sync::Arc;

/// Most dialogs `dlg.list` lists.
pub const LIST_LIMIT: usize = 100_000;

/// Add the `dlg.*` methods, acting on `dialogs`.
pub fn register(registry: &Registry, dialogs: Arc<Dialogs>) {
    let d = dialogs.clone();
    registry.register(
        "dlg.list",
        "The dialogs: h_entry, h_id, call-id, from_uri, to_uri, state, start_ts, timeout, \
         caller and callee (tag, contact, cseq).",
        move |p| {
            p.no_more(0)?;
            Ok(list(&d, false))
        },
    );
    let d = dialogs.clone();
    registry.register(
        "dlg.list_ctx",
        "The dialogs as dlg.list, with their profiles and variables.",
        move |p| {
            p.no_more(0)?;
            Ok(list(&d, true))
        },
    );
    let d = dialogs.clone();
    registry.register(
        "dlg.end_dlg",
        "End a dialog with BYE to both sides: dlg.end_dlg H_ENTRY H_ID.",
        move |p| end_dlg(&d, p),
    );
    let d = dialogs.clone();
    registry.register(
        "dlg.profile_get_size",
        "Dialogs in a profile: dlg.profile_get_size PROFILE [VALUE].",
        move |p| {
            let name = p.str(0, "profile")?;
            let value = p.opt_str(1, "value")?;
            p.no_more(2)?;
            Ok(json!(d.profile_size(name, value)))
        },
    );
    registry.register(
        "dlg.stats_active",
        "Dialogs by state: starting (1), connecting (2), answering (3), ongoing (4), all.",
        move |p| {
            p.no_more(0)?;
            let n = dialogs.states();
            Ok(object([
                ("starting", json!(n[0])),
                ("connecting", json!(n[1])),
                ("answering", json!(n[2])),
                ("ongoing", json!(n[3])),
                ("all", json!(n.iter().sum::<usize>())),
            ]))
        },
    );
}

fn list(d: &Dialogs, ctx: bool) -> Value {
    Value::Array(d.list(LIST_LIMIT).iter().map(|i| one(i, ctx)).collect())
}

/// One dialog as `dlg.list` shows it.
pub fn one(i: &DialogInfo, ctx: bool) -> Value {
    let mut v = object([
        ("h_entry", json!(i.id.h_entry)),
        ("h_id", json!(i.id.h_id)),
        ("call-id", json!(i.callid)),
        ("from_uri", json!(i.from_uri)),
        ("to_uri", json!(i.to_uri)),
        ("state", json!(i.state as u8)),
        ("start_ts", json!(i.start_ts)),
        ("timeout", json!(i.timeout)),
        (
            "caller",
            object([
                ("tag", json!(i.from_tag)),
                ("contact", json!(i.caller_contact)),
                ("cseq", json!(i.caller_cseq)),
            ]),
        ),
        (
            "callee",
            object([
                ("tag", json!(i.to_tag)),
                ("contact", json!(i.callee_contact)),
                ("cseq", json!(i.callee_cseq)),
            ]),
        ),
    ]);
    if ctx {
        if let Value::Object(m) = &mut v {
            let pairs = |l: &[(String, String)]| {
                Value::Array(l.iter().map(|(k, val)| json!({ k.clone(): val })).collect())
            };
            m.insert("profiles".into(), pairs(&i.profiles));
            m.insert("variables".into(), pairs(&i.vars));
        }
    }
    v
}

fn u32_param(p: &Params, i: usize, what: &str) -> Result<u32, RpcError> {
    let n = p.int(i, what)?;
    u32::try_from(n).map_err(|_| {
        RpcError::invalid_params(format!(
            "parameter {} ({what}) {n} is not an unsigned 32-bit number",
            i + 1
        ))
    })
}

fn end_dlg(d: &Dialogs, p: &Params) -> Result<Value, RpcError> {
    let h_entry = u32_param(p, 0, "h_entry")?;
    let h_id = u32_param(p, 1, "h_id")?;
    // Kamailio's third parameter (extra headers) is not taken.
    p.no_more(2)?;
    let id = DlgId { h_entry, h_id };
    match d.bye(id, &[Side::Caller, Side::Callee]) {
        Ok(()) => Ok(json!({})),
        Err(e @ DialogError::NotFound(_)) => Err(RpcError::not_found(format!(
            "{e}: h_entry {h_entry}, h_id {h_id}"
        ))),
        Err(e) => Err(RpcError::failed(e.to_string())),
    }
}
