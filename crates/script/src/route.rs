//! The SIP side of scripts: routes run for requests, replies, failures and
//! resumed transactions, and the `KSR` functions that act on the current
//! message (`KSR.sl`, `KSR.tm`, `KSR.tmx`, `KSR.hdr`, `KSR.maxfwd`, method
//! tests, `KSR.evapi.async_*`).
//!
//! The router hands us a borrowed `&mut Request`. While a route runs, the
//! VM holds it as scoped userdata (`Lua::scope`): the `KSR` functions reach
//! it through that, and it is invalidated when the route returns, so no
//! reference outlives the borrow.

use crate::engine::{with_current, Engine, Outcome};
use crate::ksr::{evapi_send, lua_int, SendFn};
use crate::pv::{get_sip, with_host, with_user, MsgView, Pv, PvValue};
use mlua::{AnyUserData, Lua, Table, Value};
use sip::{Method, Request, Router, SipHandle, SipMessage, Source, TmError};
use std::sync::Arc;
use tracing::{error, warn};

/// What kind of route is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteKind {
    /// `ksr_request_route`.
    Request,
    /// A failure route of a relayed transaction.
    Failure,
    /// The route named in `t_continue`.
    Resumed,
    /// `ksr_reply_route`.
    Reply,
}

/// The SIP message a route is running for.
pub(crate) struct SipCurrent {
    /// A scoped `Request` (request, failure and resumed routes) or a
    /// scoped [`ReplyCurrent`] (reply route).
    pub target: AnyUserData,
    pub kind: RouteKind,
    /// Whether the route has replied, relayed or suspended: a route that
    /// fails before it did gets a 500.
    pub handled: bool,
}

/// The reply a reply route runs for.
pub(crate) struct ReplyCurrent {
    pub msg: SipMessage,
    pub source: Source,
}

fn transport_name(s: &Source) -> &'static str {
    match s.transport {
        sip::Transport::Udp => "udp",
        sip::Transport::Tcp => "tcp",
    }
}

impl MsgView for Request {
    fn msg(&self) -> &SipMessage {
        Request::msg(self)
    }
    fn ruri(&self) -> Option<Vec<u8>> {
        Some(Request::ruri(self).to_vec())
    }
    fn dst_uri(&self) -> Option<Vec<u8>> {
        Request::dst_uri(self).map(|s| s.as_bytes().to_vec())
    }
    fn source(&self) -> Option<(&'static str, std::net::SocketAddr, std::net::SocketAddr)> {
        let s = Request::source(self);
        Some((transport_name(s), s.remote, s.local))
    }
    fn tx(&self) -> Option<(u32, u32)> {
        Request::tx(self).map(|t| (t.index, t.label))
    }
    fn reply_code(&self) -> Option<u16> {
        self.failure_code()
    }
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        Request::header(self, name).map(<[u8]>::to_vec)
    }
}

impl MsgView for ReplyCurrent {
    fn msg(&self) -> &SipMessage {
        &self.msg
    }
    fn source(&self) -> Option<(&'static str, std::net::SocketAddr, std::net::SocketAddr)> {
        Some((
            transport_name(&self.source),
            self.source.remote,
            self.source.local,
        ))
    }
    fn reply_code(&self) -> Option<u16> {
        self.msg.status()
    }
}

/// Run `f` on the current request; None outside a request-like route.
pub(crate) fn with_request<R>(lua: &Lua, f: impl FnOnce(&mut Request) -> R) -> Option<R> {
    let target = with_current(lua, |cur| {
        let sip = cur.sip.as_ref()?;
        (sip.kind != RouteKind::Reply).then(|| sip.target.clone())
    })?;
    target.borrow_mut_scoped::<Request, R>(f).ok()
}

fn mark_handled(lua: &Lua) {
    with_current(lua, |cur| {
        if let Some(sip) = cur.sip.as_mut() {
            sip.handled = true;
        }
    });
}

/// Read a SIP pseudo-variable of the current message.
pub(crate) fn sip_pv_get(lua: &Lua, pv: &Pv) -> Option<PvValue> {
    let (target, kind) = with_current(lua, |cur| {
        cur.sip.as_ref().map(|s| (s.target.clone(), s.kind))
    })?;
    if kind == RouteKind::Reply {
        target
            .borrow_mut_scoped::<ReplyCurrent, _>(|r| get_sip(pv, r))
            .ok()?
    } else {
        target
            .borrow_mut_scoped::<Request, _>(|r| get_sip(pv, r))
            .ok()?
    }
}

/// Write `$ru`, `$rU`, `$rd`, `$du` of the current request.
pub(crate) fn sip_pv_set(lua: &Lua, pv: &Pv, value: Option<PvValue>) -> bool {
    let text = value.as_ref().map(|v| v.to_text());
    let done = with_request(lua, |req| {
        let result = match (pv, &text) {
            (Pv::DstUri, None) => req.set_dst_uri(None).map_err(|e| e.to_string()),
            (Pv::DstUri, Some(t)) => req.set_dst_uri(Some(t)).map_err(|e| e.to_string()),
            (Pv::Ruri, Some(t)) => req.set_ruri(t).map_err(|e| e.to_string()),
            (Pv::RuriUser, _) => with_user(req.ruri(), text.as_deref().map(str::as_bytes))
                .ok_or_else(|| "the Request-URI has no user part to change".to_string())
                .and_then(|u| {
                    req.set_ruri(&String::from_utf8_lossy(&u))
                        .map_err(|e| e.to_string())
                }),
            (Pv::RuriHost, Some(t)) => with_host(req.ruri(), t.as_bytes())
                .ok_or_else(|| "the Request-URI has no host to change".to_string())
                .and_then(|u| {
                    req.set_ruri(&String::from_utf8_lossy(&u))
                        .map_err(|e| e.to_string())
                }),
            _ => Err(format!("{pv:?} is not writable")),
        };
        if let Err(e) = &result {
            warn!(target: "script", "cannot set pseudo-variable: {e}");
        }
        result.is_ok()
    });
    match done {
        Some(ok) => ok,
        None => {
            warn!(target: "script", "{pv:?} can only be set while routing a SIP request");
            false
        }
    }
}

fn int(ok: bool) -> i64 {
    if ok {
        1
    } else {
        -1
    }
}

fn log_tm(what: &str, e: &TmError) {
    warn!(target: "script", "{what}: {e}");
}

impl Engine {
    fn sip(&self) -> Option<&SipHandle> {
        self.sip.get()
    }

    /// Run route `fname` with `req` as the current message; reply 500 if
    /// it fails before replying.
    pub(crate) fn run_route(
        &self,
        lua: &Lua,
        fname: &str,
        kind: RouteKind,
        req: &mut Request,
    ) -> Outcome {
        let result = lua.scope(|scope| {
            let ud = scope.create_any_userdata_ref_mut(req)?;
            let previous = with_current(lua, |cur| {
                cur.sip.replace(SipCurrent {
                    target: ud,
                    kind,
                    handled: false,
                })
            });
            let outcome = self.call(lua, fname, ());
            let mine = with_current(lua, |cur| std::mem::replace(&mut cur.sip, previous));
            Ok((outcome, mine.is_some_and(|m| m.handled)))
        });
        let (outcome, handled) = match result {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "cannot run route {fname}");
                (Outcome::Failed, false)
            }
        };
        if outcome == Outcome::Failed && !handled {
            self.reply_500(req);
        }
        outcome
    }

    fn reply_500(&self, req: &mut Request) {
        let Some(host) = self.sip() else { return };
        if req.msg().method() == Some(&Method::Ack) {
            return;
        }
        let result = if req.tx().is_some() {
            host.t_reply(req, 500, "Server Internal Error")
        } else {
            host.sl_reply(req, 500, "Server Internal Error")
        };
        if let Err(e) = result {
            warn!("after a script error, the 500 reply failed: {e}");
        }
    }

    /// The router to give to [`sip::SipHost::start`].
    pub fn sip_router(self: &Arc<Self>) -> Arc<dyn Router> {
        Arc::new(SipHooks(self.clone()))
    }

    /// Give the engine the SIP host that `KSR.sl/tm/tmx` act through.
    /// Set once; later calls are ignored.
    pub fn set_sip(&self, handle: SipHandle) {
        let _ = self.sip.set(handle);
    }
}

struct SipHooks(Arc<Engine>);

impl Router for SipHooks {
    fn thread_started(&self, _child: usize) {
        let _ = self.0.vm();
    }

    fn request(&self, _host: &SipHandle, req: &mut Request) {
        if let Some(lua) = self.0.vm() {
            self.0
                .run_route(&lua, "ksr_request_route", RouteKind::Request, req);
        }
    }

    fn reply(&self, _host: &SipHandle, reply: &SipMessage, source: &Source) -> bool {
        let Some(lua) = self.0.vm() else { return true };
        if !matches!(
            lua.globals().get::<Value>("ksr_reply_route"),
            Ok(Value::Function(_))
        ) {
            return true;
        }
        let mut current = ReplyCurrent {
            msg: reply.clone(),
            source: source.clone(),
        };
        let result = lua.scope(|scope| {
            let ud = scope.create_any_userdata_ref_mut(&mut current)?;
            let previous = with_current(&lua, |cur| {
                cur.sip.replace(SipCurrent {
                    target: ud,
                    kind: RouteKind::Reply,
                    handled: false,
                })
            });
            let outcome = self.0.call(&lua, "ksr_reply_route", ());
            with_current(&lua, |cur| cur.sip = previous);
            Ok(outcome)
        });
        !matches!(result, Ok(Outcome::Dropped))
    }

    fn failure(&self, _host: &SipHandle, req: &mut Request, route: &str) {
        if let Some(lua) = self.0.vm() {
            self.0.run_route(&lua, route, RouteKind::Failure, req);
        }
    }
}

/// Methods by the letters of `KSR.is_method_in` (Kamailio's letters for
/// the methods we parse; others never match).
fn method_letter(m: &Method) -> Option<char> {
    Some(match m {
        Method::Invite => 'I',
        Method::Ack => 'A',
        Method::Bye => 'B',
        Method::Cancel => 'C',
        Method::Register => 'R',
        Method::Options => 'O',
        Method::Message => 'M',
        Method::Subscribe => 'S',
        Method::Notify => 'N',
        Method::Publish => 'P',
        Method::Update => 'U',
        _ => return None,
    })
}

fn current_method(lua: &Lua) -> Option<Method> {
    let (target, kind) = with_current(lua, |cur| {
        cur.sip.as_ref().map(|s| (s.target.clone(), s.kind))
    })?;
    let msg_method = |m: &SipMessage| match m.method() {
        Some(x) => Some(x.clone()),
        None => m.cseq().ok().map(|c| c.method),
    };
    if kind == RouteKind::Reply {
        target
            .borrow_mut_scoped::<ReplyCurrent, _>(|r| msg_method(&r.msg))
            .ok()?
    } else {
        target
            .borrow_mut_scoped::<Request, _>(|r| msg_method(r.msg()))
            .ok()?
    }
}

/// Install the SIP functions of `KSR`.
pub(crate) fn install(lua: &Lua, ksr: &Table, engine: &Arc<Engine>) -> mlua::Result<()> {
    let tests: [(&str, Method); 14] = [
        ("is_INVITE", Method::Invite),
        ("is_ACK", Method::Ack),
        ("is_BYE", Method::Bye),
        ("is_CANCEL", Method::Cancel),
        ("is_OPTIONS", Method::Options),
        ("is_REGISTER", Method::Register),
        ("is_MESSAGE", Method::Message),
        ("is_SUBSCRIBE", Method::Subscribe),
        ("is_NOTIFY", Method::Notify),
        ("is_PUBLISH", Method::Publish),
        ("is_UPDATE", Method::Update),
        ("is_INFO", Method::Info),
        ("is_PRACK", Method::Prack),
        ("is_REFER", Method::Refer),
    ];
    for (name, method) in tests {
        ksr.set(
            name,
            lua.create_function(move |lua, ()| Ok(current_method(lua).as_ref() == Some(&method)))?,
        )?;
    }
    ksr.set(
        "is_method_in",
        lua.create_function(|lua, letters: String| {
            Ok(current_method(lua)
                .as_ref()
                .and_then(method_letter)
                .is_some_and(|l| letters.contains(l)))
        })?,
    )?;

    let sl = lua.create_table()?;
    let e = Arc::downgrade(engine);
    let send_reply = lua.create_function(move |lua, (code, reason): (Value, String)| {
        let Some(engine) = e.upgrade() else {
            return Ok(-1);
        };
        let (Some(host), Some(code)) = (engine.sip().cloned(), lua_int(&code)) else {
            return Ok(-1);
        };
        let ok = with_request(lua, |req| match host.sl_reply(req, code, &reason) {
            Ok(()) => true,
            Err(e) => {
                log_tm("KSR.sl.send_reply", &e);
                false
            }
        });
        if ok == Some(true) {
            mark_handled(lua);
        }
        Ok(int(ok == Some(true)))
    })?;
    sl.set("send_reply", send_reply.clone())?;
    sl.set("sl_send_reply", send_reply)?;
    ksr.set("sl", sl)?;

    let tm = lua.create_table()?;
    tm_fn(lua, &tm, engine, "t_newtran", false, |host, req, _| {
        host.t_newtran(req).map(|_| ())
    })?;
    tm_fn(lua, &tm, engine, "t_relay", true, |host, req, _| {
        host.t_relay(req)
    })?;
    let e = Arc::downgrade(engine);
    tm.set(
        "t_reply",
        lua.create_function(move |lua, (code, reason): (Value, String)| {
            let Some(host) = e.upgrade().and_then(|e| e.sip().cloned()) else {
                return Ok(-1);
            };
            let Some(code) = lua_int(&code).filter(|c| (100..=699).contains(c)) else {
                warn!(target: "script", "KSR.tm.t_reply: bad reply code {code:?}");
                return Ok(-1);
            };
            let ok = with_request(lua, |req| match host.t_reply(req, code, &reason) {
                Ok(()) => true,
                Err(e) => {
                    log_tm("KSR.tm.t_reply", &e);
                    false
                }
            });
            if ok == Some(true) {
                mark_handled(lua);
            }
            Ok(int(ok == Some(true)))
        })?,
    )?;
    tm.set(
        "t_on_failure",
        lua.create_function(|lua, name: String| {
            let ok = with_request(lua, |req| req.set_failure_route(&name)).is_some();
            Ok(int(ok))
        })?,
    )?;
    let e = Arc::downgrade(engine);
    tm.set(
        "t_check_trans",
        lua.create_function(move |lua, ()| {
            let Some(host) = e.upgrade().and_then(|e| e.sip().cloned()) else {
                return Ok(-1);
            };
            let found = with_request(lua, |req| req.tx().is_some() || host.t_check_trans(req));
            Ok(int(found == Some(true)))
        })?,
    )?;
    ksr.set("tm", tm)?;

    let tmx = lua.create_table()?;
    tm_fn(lua, &tmx, engine, "t_suspend", true, |host, req, _| {
        host.t_suspend(req).map(|_| ())
    })?;
    let e = Arc::downgrade(engine);
    tmx.set(
        "t_continue",
        lua.create_function(move |lua, (index, label, fname): (Value, Value, String)| {
            let Some(engine) = e.upgrade() else {
                return Ok(-1);
            };
            let Some(host) = engine.sip().cloned() else {
                return Ok(-1);
            };
            let (Some(index), Some(label)) = (lua_int(&index), lua_int(&label)) else {
                warn!(target: "script", "KSR.tmx.t_continue: index and label must be integers");
                return Ok(-1);
            };
            let (Ok(index), Ok(label)) = (u32::try_from(index), u32::try_from(label)) else {
                warn!(target: "script", "KSR.tmx.t_continue: no transaction {index}:{label}");
                return Ok(-1);
            };
            let mut req = match host.t_continue(index, label) {
                Ok(r) => r,
                Err(e) => {
                    log_tm("KSR.tmx.t_continue", &e);
                    return Ok(-1);
                }
            };
            engine.run_route(lua, &fname, RouteKind::Resumed, &mut req);
            Ok(1)
        })?,
    )?;
    ksr.set("tmx", tmx)?;

    let hdr = lua.create_table()?;
    hdr.set(
        "append",
        lua.create_function(|lua, line: String| {
            let ok = with_request(lua, |req| match req.append_header(&line) {
                Ok(()) => true,
                Err(e) => {
                    warn!(target: "script", "KSR.hdr.append: {e}");
                    false
                }
            });
            Ok(int(ok == Some(true)))
        })?,
    )?;
    hdr.set(
        "remove",
        lua.create_function(|lua, name: String| {
            let removed = with_request(lua, |req| req.remove_header(&name));
            Ok(int(removed.unwrap_or(0) > 0))
        })?,
    )?;
    hdr.set(
        "is_present",
        lua.create_function(|lua, name: String| {
            Ok(int(
                with_request(lua, |req| req.has_header(&name)) == Some(true)
            ))
        })?,
    )?;
    hdr.set(
        "get",
        lua.create_function(|lua, name: String| {
            let v = with_request(lua, |req| req.header(&name).map(<[u8]>::to_vec)).flatten();
            match v {
                Some(v) => Ok(Value::String(lua.create_string(&v)?)),
                None => Ok(Value::Nil),
            }
        })?,
    )?;
    ksr.set("hdr", hdr)?;

    let maxfwd = lua.create_table()?;
    maxfwd.set(
        "process_maxfwd",
        lua.create_function(|lua, limit: Value| {
            let Some(limit) = lua_int(&limit).filter(|l| (1..=255).contains(l)) else {
                warn!(target: "script", "KSR.maxfwd.process_maxfwd: limit must be 1 to 255");
                return Ok(-2);
            };
            Ok(with_request(lua, |req| process_maxfwd(req, limit as u8)).unwrap_or(-2))
        })?,
    )?;
    ksr.set("maxfwd", maxfwd)?;
    Ok(())
}

/// Kamailio's maxfwd: add the header with `limit` when missing (2), refuse
/// at 0 (-1), otherwise cap at `limit` and decrement (1); -2 when the
/// header is there but unreadable. The value is relayed as set: the host
/// does not decrement it again.
fn process_maxfwd(req: &mut Request, limit: u8) -> i64 {
    if !req.has_header("Max-Forwards") {
        req.set_max_forwards(limit);
        return 2;
    }
    match req.max_forwards() {
        None => -2,
        Some(0) => -1,
        Some(n) => {
            req.set_max_forwards(n.min(limit) - 1);
            1
        }
    }
}

/// A `KSR.tm`-style function acting on the current request: 1 or -1.
fn tm_fn(
    lua: &Lua,
    t: &Table,
    engine: &Arc<Engine>,
    name: &'static str,
    handles: bool,
    op: fn(&SipHandle, &mut Request, ()) -> Result<(), TmError>,
) -> mlua::Result<()> {
    let e = Arc::downgrade(engine);
    t.set(
        name,
        lua.create_function(move |lua, ()| {
            let Some(host) = e.upgrade().and_then(|e| e.sip().cloned()) else {
                return Ok(-1);
            };
            let ok = with_request(lua, |req| match op(&host, req, ()) {
                Ok(()) => true,
                Err(e) => {
                    log_tm(name, &e);
                    false
                }
            });
            if ok.is_none() {
                warn!(target: "script", "{name}: not inside a SIP request route");
            }
            if handles && ok == Some(true) {
                mark_handled(lua);
            }
            Ok(int(ok == Some(true)))
        })?,
    )
}

/// `KSR.evapi.async_relay`, `async_multicast`, `async_unicast` (and our
/// `async_unicast_rr`): suspend the current request's transaction, then
/// send. -1 when nothing was suspended; -2 when the send failed after the
/// suspension, so the script can still reply.
pub(crate) fn async_send(
    lua: &Lua,
    engine: &Engine,
    name: &str,
    send: SendFn,
    data: &[u8],
    tag: &[u8],
) -> i64 {
    let Some(host) = engine.sip().cloned() else {
        return -1;
    };
    let kind = with_current(lua, |cur| cur.sip.as_ref().map(|s| s.kind));
    if kind != Some(RouteKind::Request) {
        warn!(target: "script", "KSR.evapi.{name}: only in the request route");
        return -1;
    }
    match with_request(lua, |req| host.t_suspend(req)) {
        Some(Ok(_)) => {}
        Some(Err(e)) => {
            log_tm(&format!("KSR.evapi.{name}"), &e);
            return -1;
        }
        None => return -1,
    }
    mark_handled(lua);
    match evapi_send(engine, name, send, data, tag) {
        1 => 1,
        _ => -2,
    }
}
