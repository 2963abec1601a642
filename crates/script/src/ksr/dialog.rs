//! Dialog tracking (Kamailio's dialog module), `KSR.dialog.*`, on the
//! host's dialog table ([`sip::Dialogs`]):
//!
//! - `dlg_manage()`: track the current initial INVITE's dialog (our
//!   Record-Route gets `;did=`), or match an in-dialog request to its
//!   dialog; 1, or -1 (not an INVITE, no From tag, table full, unknown).
//! - `is_known_dlg()`: 1 when the current request belongs to a tracked
//!   dialog, else -1.
//! - `dlg_bye(side)`: BYE to `"all"`, `"caller"` or `"callee"` of the
//!   current dialog (answered), which ends: 1, or -1.
//! - `dlg_set_timeout(seconds[, h_entry, h_id])`,
//!   `dlg_set_timeout_id(seconds, h_entry, h_id)`: the lifetime of the
//!   current (or named) dialog, from its answer, or from now if answered.
//! - `set_dlg_profile(name[, value])`, `get_profile_size(name, value,
//!   pv)`: concurrent-call counting; the size is written to `pv` (`$var`,
//!   `$avp`...), value "" counts every value.
//! - `var_get(name)`, `var_sets(name, value)`, `var_rm(name)`: the
//!   current dialog's `$dlg_var` values.
//!
//! "The current dialog" is the one `dlg_manage()` or `loose_route()` found
//! for the request being routed (in a failure route: the INVITE's), or in
//! the `[dialog] event_callback` the dialog of the event.

use super::module::{lua_int, Cx, Fail, Module};
use super::out::Out;
use crate::context;
use crate::pv::{DlgField, PvValue};
use mlua::Value;
use sip::dialog::{DialogInfo, DlgId, Side};
use sip::Dialogs;
use std::cell::RefCell;
use std::rc::Rc;

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func("dlg_manage", |cx, ()| {
        let d = dialogs(cx)?;
        cx.request(|req| d.manage(req))?.map_err(Fail::new)?;
        Ok(1)
    })?;
    m.func("is_known_dlg", |cx, ()| {
        let d = dialogs(cx)?;
        let known = match context::dialog_event(cx.lua) {
            Some(ev) => d.info(ev.borrow().id).is_some(),
            None => cx.request(|req| d.is_known(req))?,
        };
        Ok(if known { 1 } else { -1 })
    })?;
    m.func("dlg_bye", |cx, side: String| {
        let sides: &[Side] = match side.as_str() {
            "all" => &[Side::Caller, Side::Callee],
            "caller" => &[Side::Caller],
            "callee" => &[Side::Callee],
            other => {
                return Err(Fail::new(format_args!(
                    "unknown side {other:?}: use \"all\", \"caller\" or \"callee\""
                )))
            }
        };
        let id = current_id(cx)?;
        dialogs(cx)?.bye(id, sides).map_err(Fail::new)?;
        Ok(1)
    })?;
    m.func(
        "dlg_set_timeout",
        |cx, (secs, h_entry, h_id): (Value, Option<Value>, Option<Value>)| {
            set_timeout(cx, &secs, h_entry.as_ref(), h_id.as_ref())
        },
    )?;
    m.func(
        "dlg_set_timeout_id",
        |cx, (secs, h_entry, h_id): (Value, Value, Value)| {
            set_timeout(cx, &secs, Some(&h_entry), Some(&h_id))
        },
    )?;
    m.func(
        "set_dlg_profile",
        |cx, (name, value): (String, Option<String>)| {
            let id = current_id(cx)?;
            dialogs(cx)?
                .set_profile(id, &name, value.as_deref().unwrap_or(""))
                .map_err(Fail::new)?;
            Ok(1)
        },
    )?;
    m.func(
        "get_profile_size",
        |cx, (name, value, pv): (String, String, String)| {
            let n = dialogs(cx)?.profile_size(&name, (!value.is_empty()).then_some(value.as_str()));
            let pv = super::pv::named(cx, &pv)?;
            super::pv::set(cx, &pv, Some(PvValue::Int(n as i64)))?;
            Ok(1)
        },
    )?;
    m.func("var_get", |cx, name: String| {
        Ok(match var(cx, &name) {
            Some(v) => cx.text(v.as_bytes())?,
            None => Out::Value(Value::Nil),
        })
    })?;
    m.func("var_sets", |cx, (name, value): (String, String)| {
        set_var(cx, &name, Some(&value))?;
        Ok(1)
    })?;
    m.func("var_rm", |cx, name: String| {
        set_var(cx, &name, None)?;
        Ok(1)
    })
}

/// The dialog table.
fn dialogs<'a>(cx: &Cx<'a>) -> Result<&'a Dialogs, Fail> {
    cx.sip()?
        .dialogs()
        .ok_or_else(|| Fail::new("the SIP host has no dialog table"))
}

/// The current dialog: the event's, or the routed request's.
enum Current {
    Event(Rc<RefCell<DialogInfo>>),
    Id(DlgId),
}

fn current(cx: &Cx<'_>) -> Option<Current> {
    if let Some(ev) = context::dialog_event(cx.lua) {
        return Some(Current::Event(ev));
    }
    cx.here()
        .with_request(|r| r.dialog())
        .ok()
        .flatten()
        .map(Current::Id)
}

fn current_id(cx: &Cx<'_>) -> Result<DlgId, Fail> {
    match current(cx) {
        Some(Current::Event(ev)) => Ok(ev.borrow().id),
        Some(Current::Id(id)) => Ok(id),
        None => Err(Fail::new(
            "no dialog here (call KSR.dialog.dlg_manage() first, or loose_route() an in-dialog request)",
        )),
    }
}

fn id_arg(what: &str, v: &Value) -> Result<u32, Fail> {
    lua_int(v)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            Fail::new(format_args!(
                "{what} {v:?} is not an unsigned 32-bit number"
            ))
        })
}

fn set_timeout(
    cx: &Cx<'_>,
    secs: &Value,
    h_entry: Option<&Value>,
    h_id: Option<&Value>,
) -> Result<i64, Fail> {
    let secs = lua_int(secs)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| Fail::new(format_args!("timeout {secs:?} is not a number of seconds")))?;
    let id = match (h_entry, h_id) {
        (Some(e), Some(i)) => DlgId {
            h_entry: id_arg("h_entry", e)?,
            h_id: id_arg("h_id", i)?,
        },
        (None, None) => current_id(cx)?,
        _ => return Err(Fail::new("give both h_entry and h_id, or neither")),
    };
    dialogs(cx)?.set_timeout(id, secs).map_err(Fail::new)?;
    Ok(1)
}

fn var(cx: &Cx<'_>, name: &str) -> Option<String> {
    match current(cx)? {
        Current::Event(ev) => ev.borrow().var(name).map(str::to_owned),
        Current::Id(id) => dialogs(cx).ok()?.var(id, name),
    }
}

fn set_var(cx: &Cx<'_>, name: &str, value: Option<&str>) -> Result<(), Fail> {
    let d = dialogs(cx)?;
    match current(cx) {
        Some(Current::Event(ev)) => {
            let id = ev.borrow().id;
            // The dialog may have left the table (a BYE ended it): the
            // event's copy still changes, for the rest of the callback.
            match d.set_var(id, name, value) {
                Ok(()) | Err(sip::dialog::DialogError::NotFound(_)) => {}
                Err(e) => return Err(Fail::new(e)),
            }
            ev.borrow_mut().set_var(name, value);
            Ok(())
        }
        Some(Current::Id(id)) => d.set_var(id, name, value).map_err(Fail::new),
        None => Err(Fail::new(format_args!(
            "$dlg_var({name}): no dialog here (call KSR.dialog.dlg_manage() first)"
        ))),
    }
}

/// `$dlg(field)`.
pub(crate) fn pv_get(cx: &Cx<'_>, field: DlgField) -> Option<PvValue> {
    let info = match current(cx)? {
        Current::Event(ev) => ev.borrow().clone(),
        Current::Id(id) => dialogs(cx).ok()?.info(id)?,
    };
    let s = |v: &str| Some(PvValue::from(v));
    match field {
        DlgField::HEntry => Some(PvValue::Int(info.id.h_entry.into())),
        DlgField::HId => Some(PvValue::Int(info.id.h_id.into())),
        DlgField::CallId => s(&info.callid),
        DlgField::FromUri => s(&info.from_uri),
        DlgField::ToUri => s(&info.to_uri),
        DlgField::FromTag => s(&info.from_tag),
        DlgField::ToTag => s(&info.to_tag),
        DlgField::State => Some(PvValue::Int(info.state as i64)),
        DlgField::StartTs => Some(PvValue::Int(info.start_ts as i64)),
        DlgField::Timeout => Some(PvValue::Int(info.timeout.into())),
        DlgField::EndReason => info.end_reason.map(|r| PvValue::from(r.name())),
    }
}

/// `$dlg_var(name)`.
pub(crate) fn pv_var(cx: &Cx<'_>, name: &str) -> Option<PvValue> {
    var(cx, name).map(|v| PvValue::from(v.as_str()))
}

/// Write (`Some`) or unset (`None`) `$dlg_var(name)`.
pub(crate) fn pv_set_var(cx: &Cx<'_>, name: &str, value: Option<&PvValue>) -> Result<(), Fail> {
    let text = value.map(PvValue::to_text);
    set_var(cx, name, text.as_deref())
}
