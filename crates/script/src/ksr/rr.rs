//! Record-Route and loose routing (Kamailio's rr), `KSR.rr.*`, on the
//! current request through the SIP crate (`sip::Request::record_route`,
//! `loose_route`...), with "myself" from the host (listen addresses,
//! loopback names, `[sip] alias`):
//!
//! - `record_route()`, `record_route_params(params)`: our Record-Route,
//!   `<sip:IP:PORT;lr;ftag=...>` for the socket the request came in on,
//!   two (`;r2=on`) when it leaves from another one; once per request
//!   (a second call is -1, as Kamailio's "double attempt").
//! - `record_route_preset(addr[, addr2])`: Record-Route with given
//!   addresses (no `sip:`; `addr` the outgoing side when two).
//! - `add_rr_param(";name=value")`: a parameter for our Record-Route,
//!   before or after `record_route()` (in a branch route: that branch's).
//! - `loose_route()`: 1 when the route set decides the next hop, -1 with no
//!   Route header (or an unreadable one), -3 for a preloaded route set
//!   whose only Route was ours (Kamailio's codes). `loose_route_preloaded()`:
//!   1 exactly in that last case.
//! - `check_route_param(re)`: 1 when the parameters of the Route that named
//!   us (found by `loose_route()`, with their leading `;`) match `re`
//!   (case ignored, as Kamailio's `REG_ICASE`).
//! - `is_direction("downstream"|"upstream")`: by the `ftag` of that Route.
//!
//! Script text becomes part of a header only through the SIP crate's URI
//! check: a CR, LF, NUL, space, `<`, `>`, `"` or `,` is refused (-1).

use super::module::{kemi_bool, Fail, Module};
use super::textops::compiled;
use mlua::Value;
use sip::LooseRoute;

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func("record_route", |cx, ()| {
        cx.request(|req| req.record_route(None))??;
        Ok(1)
    })?;
    m.func("record_route_params", |cx, params: String| {
        cx.request(|req| req.record_route(Some(&params)))??;
        Ok(1)
    })?;
    m.func(
        "record_route_preset",
        |cx, (addr, inbound): (String, Option<String>)| {
            let inbound = inbound.filter(|a| !a.is_empty());
            cx.request(|req| req.record_route_preset(&addr, inbound.as_deref()))??;
            Ok(1)
        },
    )?;
    m.func("add_rr_param", |cx, param: String| {
        cx.request(|req| req.add_rr_param(&param))??;
        Ok(1)
    })?;
    m.func("loose_route", |cx, ()| {
        let host = cx.sip()?;
        let out = cx.request(|req| {
            let out = req.loose_route(&|h, p| host.is_myself(h, p));
            // As Kamailio's dialog module, from its rr callback: the
            // request is matched to its dialog when the route set
            // decides its next hop.
            if let (LooseRoute::Driven, Some(d)) = (&out, host.dialogs()) {
                d.sequential(req);
            }
            out
        })?;
        if let LooseRoute::Error(why) = &out {
            cx.warn(why);
        }
        Ok(out.code())
    })?;
    m.func("loose_route_preloaded", |cx, ()| {
        let host = cx.sip()?;
        let out = cx.request(|req| req.loose_route(&|h, p| host.is_myself(h, p)))?;
        Ok(kemi_bool(out == LooseRoute::Preloaded))
    })?;
    m.func("check_route_param", |cx, re: String| {
        let re = compiled(cx, &re)?;
        let params = cx.request(|req| req.routed_params().map(str::to_owned))?;
        Ok(kemi_bool(params.is_some_and(|p| re.is_match(p.as_bytes()))))
    })?;
    m.func("is_direction", |cx, dir: Value| {
        let upstream = match &dir {
            Value::String(s) if s.to_str()?.eq_ignore_ascii_case("upstream") => true,
            Value::String(s) if s.to_str()?.eq_ignore_ascii_case("downstream") => false,
            _ => {
                return Err(Fail::new(format_args!(
                    "unknown direction {dir:?}: use \"downstream\" or \"upstream\""
                )))
            }
        };
        Ok(kemi_bool(cx.request(|req| req.is_upstream())? == upstream))
    })
}

#[cfg(test)]
mod tests;
