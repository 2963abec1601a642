//! The per-transaction routes of Kamailio's tm and the tests on replies,
//! in `KSR.tm`:
//!
//! - `t_on_reply(fname)`: every reply to the transaction's branches runs
//!   `fname` (after `ksr_reply_route`, before the reply is forwarded;
//!   `KSR.x.drop()` there drops it). Kept by the transaction.
//! - `t_on_branch(fname)`: `fname` runs for the next relay's branch, on a
//!   copy of the request that becomes that branch, just before it is
//!   sent: its edits (headers, `$du`, `$ru`, `KSR.rr.add_rr_param`) are
//!   that branch's only, and `KSR.x.drop()` drops the branch (`t_relay`
//!   then returns -1; the transaction, created first as in Kamailio, is
//!   the script's to answer). Armed for one relay, as Kamailio's.
//! - `t_is_set("branch_route"|"onreply_route"|"failure_route")`: 1 when
//!   armed on the current request.
//! - `t_check_status(re)`: 1 when `re` matches in the reply code (reply
//!   route: the reply's; failure route: the one that ended the branch;
//!   a search, as Kamailio's `regexec`: `"4"` matches 486). -1 elsewhere
//!   (Kamailio's request-route case, the last reply sent, is not kept).
//! - `t_get_status_code()`: that code, -1 where there is none.

use super::module::{kemi_bool, Cx, Fail, Module};
use super::textops::compiled;
use crate::call::{self, Outcome};
use mlua::LuaString;
use sip::Method;

/// `KSR.tm.t_relay()`: relay the current request, through its branch
/// route if one is armed.
pub(super) fn relay(cx: &Cx<'_>) -> Result<(), Fail> {
    let host = cx.sip()?;
    let armed =
        cx.request(|req| req.branch_route().is_some() && req.msg().method() != Some(&Method::Ack))?;
    if !armed {
        cx.request(|req| host.t_relay(req))?
            .inspect_err(|e| cx.record_error(e))?;
        return Ok(());
    }
    // The transaction comes first (an INVITE's 100 Trying goes), as in
    // Kamailio, so the copy the branch route edits belongs to it.
    cx.request(|req| host.t_newtran(req))?
        .inspect_err(|e| cx.record_error(e))?;
    let (route, mut branch) = cx.request(|req| (req.take_branch_route(), req.clone()))?;
    let route = route.unwrap_or_default();
    let index = branch.next_branch_index();
    if call::run_branch_route(cx.lua, &route, &mut branch, index) == Outcome::Dropped {
        return Err(Fail::new(format_args!(
            "branch {index} dropped by branch route {route}"
        )));
    }
    host.t_relay(&mut branch)
        .inspect_err(|e| cx.record_error(e))?;
    // The relay used the failure route up, as relaying the request itself
    // would have.
    cx.request(|req| req.take_failure_route())?;
    Ok(())
}

/// The reply code a status test looks at: the reply's in a reply route,
/// the one that ended the branch in a failure route.
fn status(cx: &Cx<'_>) -> Option<u16> {
    cx.here().with_view(|v| v.reply_code()).ok().flatten()
}

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func("t_on_reply", |cx, name: LuaString| {
        let name = name.to_str()?;
        cx.request(|req| req.set_reply_route(&name))?;
        Ok(1)
    })?;
    m.func("t_on_branch", |cx, name: LuaString| {
        let name = name.to_str()?;
        cx.request(|req| req.set_branch_route(&name))?;
        Ok(1)
    })?;
    m.func("t_is_set", |cx, target: LuaString| {
        let set = match &*target.to_str()? {
            "branch_route" => cx.request(|req| req.branch_route().is_some())?,
            "onreply_route" => cx.request(|req| req.reply_route().is_some())?,
            "failure_route" => cx.request(|req| req.failure_route().is_some())?,
            other => {
                return Err(Fail::new(format_args!(
                    "unknown target {other:?}: use branch_route, onreply_route or failure_route"
                )))
            }
        };
        Ok(kemi_bool(set))
    })?;
    m.func("t_check_status", |cx, re: String| {
        let re = compiled(cx, &re)?;
        let code = status(cx).map(|c| c.to_string());
        // A search, as Kamailio's regexec: anchor with ^...$ for a whole
        // code ("^4[0-9][0-9]$").
        Ok(kemi_bool(code.is_some_and(|c| re.is_match(c.as_bytes()))))
    })?;
    m.func("t_get_status_code", |cx, ()| {
        Ok(status(cx).map_or(-1, i64::from))
    })
}

#[cfg(test)]
mod tests;
