//! What the current call into the script is about: a SIP message, an evapi
//! event, or nothing (the script's top level). Decided here, once, for every
//! `KSR` module.
//!
//! The context lives in the VM (its app data) while a script function runs.
//! A SIP route may run inside an evapi event (`KSR.tmx.t_continue` from
//! message-received): the route's context keeps the event, so `$evapi(...)`
//! still reads it there, as in Kamailio.
//!
//! The router hands us a borrowed `&mut Request`. While a route runs, the VM
//! holds it as scoped userdata (`Lua::scope`): the `KSR` functions reach it
//! through [`with_request`], and it is invalidated when the route returns,
//! so no reference outlives the borrow.

use crate::ops::EventClient;
use crate::pv::MsgView;
use crate::route_state::RouteState;
use bytes::Bytes;
use mlua::{AnyUserData, Lua};
use sip::{Method, Request, SipMessage, Source};
use std::rc::Rc;

/// What kind of SIP route is running.
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
    /// A branch route (`KSR.tm.t_on_branch`), on the copy of the request
    /// that becomes one branch, just before it is sent.
    Branch,
    /// A transaction's reply route (`KSR.tm.t_on_reply`).
    OnReply,
}

impl RouteKind {
    /// Whether the route runs for a reply (its message is a
    /// [`ReplyCurrent`]).
    pub fn is_reply(self) -> bool {
        matches!(self, RouteKind::Reply | RouteKind::OnReply)
    }
}

/// The current call's subject.
#[derive(Default)]
pub(crate) enum Context {
    /// The script's top level, or a call made outside any message.
    #[default]
    None,
    /// An evapi event.
    Evapi(Rc<EvapiCurrent>),
    /// A SIP route.
    Sip(SipCurrent),
    /// A dialog event (`[dialog] event_callback`): the dialog as it was
    /// when the event happened; `$dlg_var` writes also go to this copy.
    Dialog(Rc<std::cell::RefCell<sip::DialogInfo>>),
    /// A message of a `[[nats.subscribe]]` subject: its payload
    /// (`$natsData`).
    Nats(Bytes),
}

/// The "client" of an evapi event that came over NATS: no connection
/// (`$evapi(conidx)` -1, `$evapi(srcaddr)` "nats"; `close` and `set_tag`
/// fail).
pub(crate) struct NatsSource;

impl EventClient for NatsSource {
    fn via_nats(&self) -> bool {
        true
    }
    fn conidx(&self) -> usize {
        0
    }
    fn peer(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([0, 0, 0, 0], 0))
    }
    fn set_tag(&self, _tag: &[u8]) -> Result<(), evapi::TagError> {
        Err(evapi::TagError::Gone)
    }
    fn close(&self) {}
}

/// `$natsData`: the payload of the `nats:<subject>` event being handled.
pub(crate) fn nats_data(lua: &Lua) -> Option<Bytes> {
    with(lua, |cur| match cur {
        Context::Nats(b) => Some(b.clone()),
        _ => None,
    })
}

/// The evapi event being handled: its message (message-received only) and
/// its client. The client is last so that `Rc<EvapiCurrent<ClientRef>>`
/// coerces to `Rc<EvapiCurrent>` (one allocation per event).
pub(crate) struct EvapiCurrent<C: ?Sized + EventClient = dyn EventClient> {
    pub msg: Option<Bytes>,
    pub client: C,
}

/// The SIP message a route runs for.
pub(crate) struct SipCurrent {
    /// A scoped `Request` (request, failure and resumed routes) or a
    /// scoped [`ReplyCurrent`] (reply route).
    target: AnyUserData,
    kind: RouteKind,
    /// Whether the route has replied, relayed or suspended: a route that
    /// fails before it did gets a 500.
    handled: bool,
    /// The evapi event this route runs inside, if any.
    event: Option<Rc<EvapiCurrent>>,
    /// `$T_branch_idx`: the branch a branch, reply or failure route runs
    /// for (0-based); 0 elsewhere.
    branch: u32,
    /// What the route keeps beside its message (drop mark, last error,
    /// `$avp`, `$xavp`, `$Ts`).
    pub state: RouteState,
}

/// The reply a reply route runs for.
pub(crate) struct ReplyCurrent {
    pub msg: SipMessage,
    pub source: Source,
}

/// Set `$T_branch_idx` for the running SIP route.
pub(crate) fn set_branch(lua: &Lua, branch: u32) {
    with(lua, |cur| {
        if let Context::Sip(s) = cur {
            s.branch = branch;
        }
    });
}

/// `$T_branch_idx` of the running SIP route.
pub(crate) fn branch_index(lua: &Lua) -> Option<u32> {
    with(lua, |cur| cur.sip().map(|s| s.branch))
}

impl Context {
    /// The evapi event of this call, also inside a SIP route it started.
    pub fn event(&self) -> Option<&Rc<EvapiCurrent>> {
        match self {
            Context::Evapi(e) => Some(e),
            Context::Sip(s) => s.event.as_ref(),
            Context::None | Context::Dialog(_) | Context::Nats(_) => None,
        }
    }

    /// The SIP message of this call.
    pub fn sip(&self) -> Option<&SipCurrent> {
        match self {
            Context::Sip(s) => Some(s),
            _ => None,
        }
    }
}

/// Run `f` on the VM's context (never across a call into Lua).
pub(crate) fn with<R>(lua: &Lua, f: impl FnOnce(&mut Context) -> R) -> R {
    let mut cx = lua
        .app_data_mut::<Context>()
        .expect("every VM has a context");
    f(&mut cx)
}

/// Make `cx` current; returns the context to restore with [`leave`].
pub(crate) fn enter(lua: &Lua, cx: Context) -> Context {
    with(lua, |cur| std::mem::replace(cur, cx))
}

/// Restore `previous`; returns the context that was current.
pub(crate) fn leave(lua: &Lua, previous: Context) -> Context {
    enter(lua, previous)
}

/// A SIP context for `target`, keeping the evapi event of the current one.
pub(crate) fn sip_context(lua: &Lua, target: AnyUserData, kind: RouteKind) -> Context {
    let event = with(lua, |cur| cur.event().cloned());
    Context::Sip(SipCurrent {
        target,
        kind,
        handled: false,
        event,
        branch: 0,
        state: RouteState::default(),
    })
}

/// Whether a context's route replied, relayed or suspended.
pub(crate) fn was_handled(cx: &Context) -> bool {
    cx.sip().is_some_and(|s| s.handled)
}

/// Why a `KSR` function cannot act on the current message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotHere {
    /// No SIP route is running.
    NoSip,
    /// A reply route is running; this needs a request.
    Reply,
    /// No evapi event is being handled.
    NoEvent,
}

impl std::fmt::Display for NotHere {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotHere::NoSip => "not while routing a SIP message",
            NotHere::Reply => "not in a reply route (it needs a request)",
            NotHere::NoEvent => "not inside an evapi event",
        })
    }
}

/// Run `f` on the current request (request, failure and resumed routes).
pub(crate) fn with_request<R>(lua: &Lua, f: impl FnOnce(&mut Request) -> R) -> Result<R, NotHere> {
    let target = with(lua, |cur| match cur.sip() {
        None => Err(NotHere::NoSip),
        Some(s) if s.kind.is_reply() => Err(NotHere::Reply),
        Some(s) => Ok(s.target.clone()),
    })?;
    target
        .borrow_mut_scoped::<Request, R>(f)
        .map_err(|_| NotHere::NoSip)
}

/// Run `f` on the current SIP message, request or reply, as the
/// pseudo-variables see it.
pub(crate) fn with_view<R>(lua: &Lua, f: impl FnOnce(&dyn MsgView) -> R) -> Result<R, NotHere> {
    let (target, kind) =
        with(lua, |cur| cur.sip().map(|s| (s.target.clone(), s.kind))).ok_or(NotHere::NoSip)?;
    let done = if kind.is_reply() {
        target.borrow_mut_scoped::<ReplyCurrent, R>(|r| f(r))
    } else {
        target.borrow_mut_scoped::<Request, R>(|r| f(r))
    };
    done.map_err(|_| NotHere::NoSip)
}

/// The method of the current message (a reply's CSeq method).
pub(crate) fn method(lua: &Lua) -> Result<Option<Method>, NotHere> {
    with_view(lua, |v| {
        let m = v.msg();
        match m.method() {
            Some(x) => Some(x.clone()),
            None => m.cseq().ok().map(|c| c.method),
        }
    })
}

/// The kind of the running SIP route.
pub(crate) fn route_kind(lua: &Lua) -> Option<RouteKind> {
    with(lua, |cur| cur.sip().map(|s| s.kind))
}

/// Run `f` on the running SIP route's [`RouteState`].
pub(crate) fn with_state<R>(lua: &Lua, f: impl FnOnce(&mut RouteState) -> R) -> Result<R, NotHere> {
    with(lua, |cur| match cur {
        Context::Sip(s) => Ok(f(&mut s.state)),
        _ => Err(NotHere::NoSip),
    })
}

/// Whether a context's route called `KSR.drop()`.
pub(crate) fn drop_marked(cx: &Context) -> bool {
    cx.sip().is_some_and(|s| s.state.drop)
}

/// Record that the route replied, relayed or suspended.
pub(crate) fn mark_handled(lua: &Lua) {
    with(lua, |cur| {
        if let Context::Sip(s) = cur {
            s.handled = true;
        }
    });
}

/// Record the reply a failed `KSR` function would have the request
/// answered with (e.g. `KSR.registrar.save`: 423, 503...), so that
/// `KSR.sl.sl_reply_error()` can send it. Outside a SIP route: nothing.
pub(crate) fn set_last_error(lua: &Lua, code: u16, reason: &str) {
    let _ = with_state(lua, |s| s.last_error = Some((code, reason.to_owned())));
}

/// The last error recorded on the current message, if any.
#[cfg(test)]
pub(crate) fn last_error(lua: &Lua) -> Option<(u16, String)> {
    with_state(lua, |s| s.last_error.clone()).ok().flatten()
}

/// The dialog of the running dialog event, if one is running.
pub(crate) fn dialog_event(lua: &Lua) -> Option<Rc<std::cell::RefCell<sip::DialogInfo>>> {
    with(lua, |cur| match cur {
        Context::Dialog(d) => Some(d.clone()),
        _ => None,
    })
}

/// The current evapi event.
pub(crate) fn event(lua: &Lua) -> Result<Rc<EvapiCurrent>, NotHere> {
    with(lua, |cur| cur.event().cloned()).ok_or(NotHere::NoEvent)
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
    fn reply_reason(&self) -> Option<Vec<u8>> {
        self.failure_reason().map(|r| r.as_bytes().to_vec())
    }
    fn reply_local(&self) -> Option<bool> {
        self.failure_code().map(|_| self.failure_is_local())
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
    fn reply_reason(&self) -> Option<Vec<u8>> {
        self.msg.reason().map(<[u8]>::to_vec)
    }
    fn reply_local(&self) -> Option<bool> {
        Some(false)
    }
}
