//! Registrations (Kamailio's registrar over its usrloc), on the host's
//! location table ([`sip::usrloc`]). Only the table `"location"` exists;
//! another name is -1 and a log line.
//!
//! - `KSR.registrar.save(table, flags)`: apply the current REGISTER and
//!   answer it: 200 OK with every contact of the AoR
//!   (`Contact: <uri>;expires=N`), or the registrar's error (400, 423 with
//!   `Min-Expires`, 503 beyond `[usrloc] max_contacts` or `max_aors`, with
//!   `P-Registrar-Error`). Returns 1 (added), 2 (refreshed), 3 (removed,
//!   or `*`), 4 (fetched: no Contact); -2 for too many contacts, -1 for
//!   any other refusal, which is also recorded as the message's last
//!   error for `KSR.sl.sl_reply_error()`. Flags: 0x02 no reply (the
//!   script answers), 0x04 one contact per AoR, 0x10 with 0x02: the
//!   Contact line is added to the script's reply; 0x01 and 0x08 change
//!   nothing (the table is memory only, expires are not randomised).
//! - `lookup(table)`: the Request-URI's AoR; sets the Request-URI to its
//!   best contact (highest q, then most recent) and clears `$du`; 1 found,
//!   -1 none, -3 the Request-URI gives no AoR. Only the best contact is
//!   tried (Kamailio appends the others as parallel branches). -2 (method
//!   not allowed) is never returned: Kamailio returns it only with
//!   `method_filtering`, off by default.
//! - `registered(table)`: 1 when the Request-URI's AoR has a contact, -1
//!   otherwise.
//! - `unregister(table, uri)`: remove every contact of `uri`'s AoR; 1
//!   (also when there was none), -1 for a URI with no AoR.

use super::module::{kemi_bool, lua_int, Cx, Fail, Module};
use crate::context;
use crate::ops::SipOps;
use mlua::{LuaString, Value};
use sip::usrloc::{aor_of, contact_line, register_of, RegError};
use sip::{Request, TmError, Usrloc};

/// The one table name, as in Kamailio's default configuration.
const TABLE: &str = "location";

/// Save flag: do not reply (the script does).
const NO_REPLY: i64 = 0x02;
/// Save flag: keep one contact per AoR.
const REPLACE: i64 = 0x04;
/// Save flag: with [`NO_REPLY`], still add the Contact line to the reply.
const PREPARE_REPLY: i64 = 0x10;

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func("save", |cx, (table, flags): (LuaString, Value)| {
        let table = table.to_str()?;
        let flags = lua_int(&flags)
            .ok_or_else(|| Fail::new(format_args!("flags {flags:?} are not an integer")))?;
        save(cx, usrloc(cx, &table)?, flags)
    })?;
    m.func("lookup", |cx, table: LuaString| {
        let table = table.to_str()?;
        let ul = usrloc(cx, &table)?;
        let use_domain = ul.config().use_domain;
        cx.request(|req| lookup(ul, req, use_domain))?
    })?;
    m.func("registered", |cx, table: String| {
        let ul = usrloc(cx, &table)?;
        let use_domain = ul.config().use_domain;
        let aor = cx.request(|req| aor_of(req.ruri(), use_domain).ok())?;
        Ok(kemi_bool(aor.is_some_and(|a| !ul.lookup(&a).is_empty())))
    })?;
    m.func("unregister", |cx, (table, uri): (String, String)| {
        let ul = usrloc(cx, &table)?;
        let aor = aor_of(uri.as_bytes(), ul.config().use_domain)?;
        ul.remove(&aor);
        Ok(1)
    })
}

impl From<RegError> for Fail {
    fn from(e: RegError) -> Fail {
        Fail::new(e)
    }
}

/// The table named `name`.
fn usrloc<'a>(cx: &Cx<'a>, name: &str) -> Result<&'a Usrloc, Fail> {
    if name != TABLE {
        return Err(Fail::new(format_args!(
            "no location table {name:?} (only \"{TABLE}\" exists)"
        )));
    }
    cx.sip()?
        .usrloc()
        .ok_or_else(|| Fail::new("the SIP host has no location table"))
}

/// Reply on the transaction if there is one, else statelessly (Kamailio's
/// `freply`); either way through the host's one reply check.
fn reply(host: &dyn SipOps, req: &mut Request, code: u16, reason: &str) -> Result<(), TmError> {
    if req.tx().is_some() {
        host.t_reply(req, code.into(), reason)
    } else {
        host.sl_reply(req, code.into(), reason)
    }
}

fn save(cx: &Cx<'_>, ul: &Usrloc, flags: i64) -> Result<i64, Fail> {
    let host = cx.sip()?;
    let use_domain = ul.config().use_domain;
    let send = flags & NO_REPLY == 0;
    let mut from = None;
    let outcome = cx.request(|req| -> Result<Result<i64, RegError>, Fail> {
        from = Some(req.source().remote);
        let saved = register_of(req, use_domain).and_then(|r| ul.save(&r, flags & REPLACE != 0));
        match &saved {
            Ok(s) if send || flags & PREPARE_REPLY != 0 => {
                if let Some(line) = contact_line(&s.bindings, ul.now()) {
                    req.append_to_reply(&line)?;
                }
            }
            Ok(_) => {}
            Err(e) if send => {
                req.append_to_reply(&format!("P-Registrar-Error: {}", e.info()))?;
                if let Some(min) = e.min_expires() {
                    req.append_to_reply(&format!("Min-Expires: {min}"))?;
                }
            }
            Err(_) => {}
        }
        if send {
            let (code, reason) = match &saved {
                Ok(_) => (200, "OK"),
                Err(e) => (e.code(), e.reason()),
            };
            reply(host, req, code, reason)?;
        }
        Ok(saved.map(|s| s.code))
    })??;
    if send {
        cx.mark_handled();
    }
    match outcome {
        Ok(code) => Ok(code),
        Err(e) => {
            context::set_last_error(cx.lua, e.code(), e.reason());
            let what = if send { "replied" } else { "to reply" };
            let from = from.map(|a| a.to_string()).unwrap_or_default();
            Err(Fail::new(format_args!(
                "REGISTER from {from} refused: {e}; {what} {} {}",
                e.code(),
                e.reason()
            ))
            .code(e.kemi()))
        }
    }
}

fn lookup(ul: &Usrloc, req: &mut Request, use_domain: bool) -> Result<i64, Fail> {
    let aor = match aor_of(req.ruri(), use_domain) {
        Ok(a) => a,
        // A Request-URI without a user has no contacts: not found, as in
        // Kamailio; one that does not parse is an error.
        Err(_) if sip::Uri::parse(req.ruri()).is_ok() => return Ok(-1),
        Err(e) => return Err(Fail::from(e).code(-3)),
    };
    let Some(best) = ul.lookup(&aor).into_iter().next() else {
        return Ok(-1);
    };
    req.set_ruri(&best.uri)
        .map_err(|e| Fail::from(e).code(-3))?;
    req.set_dst_uri(None).map_err(|e| Fail::from(e).code(-3))?;
    Ok(1)
}

#[cfg(test)]
#[path = "registrar_tests.rs"]
mod tests;
