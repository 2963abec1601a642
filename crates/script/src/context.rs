//! What the current call into the script is about: a SIP message, an evapi
//! event, or nothing (the script's top level). Decided here, once, for every
//! `KSR` module.
//!
//! The context lives in the VM (its app data) while a script function runs.
//! A SIP route may run inside an evapi event (`KSR.tmx.t_continue` from
//! message-received): the route's context keeps the event, so `$evapi(...)`
//! still reads it there, as in Kamailio.
//!
//! The router hands us a borrowed `&mut Request`. While a route runs, the
//! VM holds a pointer to it (a slot of its own beside the context,
//! [`Target`]), put back to what it was when the route returns, panics
//! included ([`in_route`]): the `KSR` functions reach the request through
//! [`Here::with_request`], under the slot's borrow. Nothing is copied.
//! (Before, the request was swapped into the slot and back, two moves of a
//! struct of some 900 bytes per route; before that, a scoped userdata cost
//! a Lua userdata with its metatable and destructor per route.)
//!
//! Each `KSR` function holds its VM's context and slot ([`Here`], taken
//! when the VM is built), so reaching them costs it no lookup of the VM's
//! app data (about 80 instructions each; with `KSR.pv`'s name cache held
//! the same way, the relay script's request, 8 `KSR.pv.get`, went from
//! 31,988 to 30,299 instructions).

use crate::ops::EventClient;
use crate::pv::MsgView;
use crate::route_state::RouteState;
use bytes::Bytes;
use mlua::Lua;
use sip::{Method, Request, SipMessage, Source};
use std::cell::RefCell;
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

/// The SIP route running (its message is in the [`Target`] slot).
pub(crate) struct SipCurrent {
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

/// The VM's context and the message slot: one entry of its app data, so
/// that finding both (every `KSR` function on a message does) is one
/// lookup of mlua's app data (about 80 instructions each), not two.
/// Each has a borrow of its own, so a function can hold the message while
/// it reads or marks the context.
struct Current {
    cx: RefCell<Context>,
    target: RefCell<Target>,
}

fn current(lua: &Lua) -> mlua::AppDataRef<'_, Rc<Current>> {
    lua.app_data_ref::<Rc<Current>>()
        .expect("every VM has a context")
}

/// The VM's context and message slot, held: what a `KSR` function keeps
/// (its closure takes one when the VM is built), so that reaching them
/// costs no lookup of the app data.
#[derive(Clone)]
pub(crate) struct Here(Rc<Current>);

/// The VM's [`Here`] (its context is installed first if it has none).
pub(crate) fn here(lua: &Lua) -> Here {
    install(lua);
    Here(Rc::clone(&current(lua)))
}

impl Here {
    /// [`with`], on this VM.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Context) -> R) -> R {
        f(&mut self.0.cx.borrow_mut())
    }

    /// [`request_in`], on this VM.
    pub(crate) fn with_request<R>(&self, f: impl FnOnce(&mut Request) -> R) -> Result<R, NotHere> {
        request_in(&self.0, f)
    }

    /// [`with_view`], on this VM.
    pub(crate) fn with_view<R>(&self, f: impl FnOnce(&dyn MsgView) -> R) -> Result<R, NotHere> {
        view_in(&self.0, f)
    }

    /// [`with_state`], on this VM.
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&mut RouteState) -> R) -> Result<R, NotHere> {
        self.with(|cur| state_in(cur, f))
    }

    /// [`method_in`], on this VM.
    pub(crate) fn method(&self) -> Result<Option<Method>, NotHere> {
        method_in(&self.0)
    }

    /// [`kind_in`], on this VM.
    pub(crate) fn route_kind(&self) -> Option<RouteKind> {
        self.with(|cur| kind_in(cur))
    }

    /// [`handled_in`], on this VM.
    pub(crate) fn mark_handled(&self) {
        self.with(handled_in)
    }

    /// [`event_in`], on this VM.
    pub(crate) fn event(&self) -> Result<Rc<EvapiCurrent>, NotHere> {
        self.with(|cur| event_in(cur))
    }
}

/// Run `f` on the VM's context (never across a call into Lua).
pub(crate) fn with<R>(lua: &Lua, f: impl FnOnce(&mut Context) -> R) -> R {
    let cur = current(lua);
    let mut cx = cur.cx.borrow_mut();
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

/// A SIP context of `kind` for branch `branch`, keeping the evapi event of
/// the current one.
fn sip_context(lua: &Lua, kind: RouteKind, branch: u32) -> Context {
    with(lua, |cur| sip_context_in(cur, kind, branch))
}

/// [`sip_context`] after `current`.
fn sip_context_in(current: &Context, kind: RouteKind, branch: u32) -> Context {
    let event = current.event().cloned();
    Context::Sip(SipCurrent {
        kind,
        handled: false,
        event,
        branch,
        state: RouteState::default(),
    })
}

/// The message of the running SIP route: a slot beside the VM's
/// [`Context`] (in the same [`Current`], under a borrow of its own),
/// read only while the context is a SIP route's (every SIP context is
/// entered through [`in_route`] or [`in_reply_route`], which fill it).
/// Apart from the context, so that a `KSR` function can hold the message
/// while it reads or marks the context.
///
/// The request field points to the routed request while a request route
/// runs ([`What::Request`]): the `&mut Request` the router lent to
/// [`in_route`], valid until that call returns, which first puts back the
/// pointer that was here before (null, or a nested route's outer
/// request). It is only turned into a reference under the slot's own
/// borrow ([`request_in`]: `&mut`; [`view_in`]: shared), so the
/// borrow rules of the slot are those of the request.
pub(crate) struct Target {
    what: What,
    request: *mut Request,
    reply: Option<ReplyCurrent>,
}

/// What the [`Target`] holds for the running route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    /// No SIP route.
    None,
    /// The request of a request, failure, resumed or branch route.
    Request,
    /// The reply of a reply route.
    Reply,
}

/// What a new VM needs here: no context, no message. A VM that has them
/// keeps them (the `KSR` functions hold them: [`Here`]).
pub(crate) fn install(lua: &Lua) {
    if lua.app_data_ref::<Rc<Current>>().is_some() {
        return;
    }
    lua.set_app_data(Rc::new(Current {
        cx: RefCell::new(Context::default()),
        target: RefCell::new(Target {
            what: What::None,
            request: std::ptr::null_mut(),
            reply: None,
        }),
    }));
}

/// Point the slot at `req` and make it hold `what`; what it held, or
/// `None` if the slot could not be reached (then nothing changed).
fn lend(lua: &Lua, req: *mut Request, what: What) -> Option<(What, *mut Request)> {
    let cur = lua.app_data_ref::<Rc<Current>>()?;
    lend_in(&cur, req, what)
}

/// [`lend`], with the app data entry already found.
fn lend_in(cur: &Current, req: *mut Request, what: What) -> Option<(What, *mut Request)> {
    let Ok(mut t) = cur.target.try_borrow_mut() else {
        return None;
    };
    let request = std::mem::replace(&mut t.request, req);
    Some((std::mem::replace(&mut t.what, what), request))
}

/// A request lent to the VM: the slot's previous contents are put back
/// when dropped (also when a panic unwinds through the route), before the
/// `&mut` the pointer came from can be used again.
struct Lent<'a> {
    lua: &'a Lua,
    /// What the slot held before (`None`: nothing was lent).
    previous: Option<(What, *mut Request)>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some((what, request)) = self.previous {
            lend(self.lua, request, what);
        }
    }
}

/// Run `f` with `req` as the message of a SIP route of `kind` for branch
/// `branch` (`$T_branch_idx`), keeping the evapi event of the current
/// context; the previous context and message are back afterwards. Returns
/// what `f` returned and the route's context.
pub(crate) fn in_route<R>(
    lua: &Lua,
    kind: RouteKind,
    branch: u32,
    req: &mut Request,
    f: impl FnOnce() -> R,
) -> (R, Context) {
    // From here until `lent` is dropped, `req` is reached only through
    // this pointer. The slot and the context are set under one lookup.
    let cur = current(lua);
    let previous = lend_in(&cur, req, What::Request);
    let lent = Lent { lua, previous };
    let outer = {
        let mut cx = cur.cx.borrow_mut();
        let mine = sip_context_in(&cx, kind, branch);
        std::mem::replace(&mut *cx, mine)
    };
    drop(cur);
    let r = f();
    let mine = leave(lua, outer);
    drop(lent);
    (r, mine)
}

/// Run `f` with `reply` as the message of a reply route of `kind`, as
/// [`in_route`] does for a request.
pub(crate) fn in_reply_route<R>(
    lua: &Lua,
    kind: RouteKind,
    branch: u32,
    reply: ReplyCurrent,
    f: impl FnOnce() -> R,
) -> (R, Context) {
    let swap = |lua: &Lua, what: What, reply: Option<ReplyCurrent>| {
        let cur = lua.app_data_ref::<Rc<Current>>()?;
        let mut t = cur.target.try_borrow_mut().ok()?;
        let reply = std::mem::replace(&mut t.reply, reply);
        Some((std::mem::replace(&mut t.what, what), reply))
    };
    let previous = swap(lua, What::Reply, Some(reply));
    let outer = enter(lua, sip_context(lua, kind, branch));
    let r = f();
    let mine = leave(lua, outer);
    if let Some((what, reply)) = previous {
        swap(lua, what, reply);
    }
    (r, mine)
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

/// Run `f` on the current request (request, failure, resumed and branch
/// routes). `f` may read the context, not reach the message again (that
/// finds none).
fn request_in<R>(cur: &Current, f: impl FnOnce(&mut Request) -> R) -> Result<R, NotHere> {
    match cur.cx.borrow().sip().map(|s| s.kind) {
        None => return Err(NotHere::NoSip),
        Some(k) if k.is_reply() => return Err(NotHere::Reply),
        Some(_) => {}
    }
    let Ok(target) = cur.target.try_borrow_mut() else {
        return Err(NotHere::NoSip);
    };
    match target.what {
        // SAFETY: see `Target`: the pointer is the live `&mut Request` of
        // the `in_route` call running below this one on this thread, and
        // the slot's `&mut` borrow, held until `f` returns, keeps any
        // other reference from being made from it meanwhile.
        What::Request if !target.request.is_null() => {
            let request = target.request;
            Ok(f(unsafe { &mut *request }))
        }
        _ => Err(NotHere::NoSip),
    }
}

/// Run `f` on the current SIP message, request or reply, as the
/// pseudo-variables see it.
pub(crate) fn with_view<R>(lua: &Lua, f: impl FnOnce(&dyn MsgView) -> R) -> Result<R, NotHere> {
    view_in(&current(lua), f)
}

/// [`with_view`], with the VM's [`Current`] found.
fn view_in<R>(cur: &Current, f: impl FnOnce(&dyn MsgView) -> R) -> Result<R, NotHere> {
    if cur.cx.borrow().sip().is_none() {
        return Err(NotHere::NoSip);
    }
    let Ok(target) = cur.target.try_borrow() else {
        return Err(NotHere::NoSip);
    };
    match (target.what, &target.reply) {
        // SAFETY: as in `with_request`; the slot's shared borrow, held
        // until `f` returns, allows only shared references meanwhile.
        (What::Request, _) if !target.request.is_null() => Ok(f(unsafe { &*target.request })),
        (What::Reply, Some(r)) => Ok(f(r)),
        _ => Err(NotHere::NoSip),
    }
}

/// The method of the current message (a reply's CSeq method).
fn method_in(cur: &Current) -> Result<Option<Method>, NotHere> {
    view_in(cur, |v| {
        let m = v.msg();
        match m.method() {
            Some(x) => Some(x.clone()),
            None => m.cseq().ok().map(|c| c.method),
        }
    })
}

/// The kind of the running SIP route.
fn kind_in(cur: &Context) -> Option<RouteKind> {
    cur.sip().map(|s| s.kind)
}

/// Run `f` on the running SIP route's [`RouteState`].
pub(crate) fn with_state<R>(lua: &Lua, f: impl FnOnce(&mut RouteState) -> R) -> Result<R, NotHere> {
    with(lua, |cur| state_in(cur, f))
}

/// [`with_state`] in `cur`.
fn state_in<R>(cur: &mut Context, f: impl FnOnce(&mut RouteState) -> R) -> Result<R, NotHere> {
    match cur {
        Context::Sip(s) => Ok(f(&mut s.state)),
        _ => Err(NotHere::NoSip),
    }
}

/// Whether a context's route called `KSR.drop()`.
pub(crate) fn drop_marked(cx: &Context) -> bool {
    cx.sip().is_some_and(|s| s.state.drop)
}

/// Record that the route replied, relayed or suspended.
fn handled_in(cur: &mut Context) {
    if let Context::Sip(s) = cur {
        s.handled = true;
    }
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
fn event_in(cur: &Context) -> Result<Rc<EvapiCurrent>, NotHere> {
    cur.event().cloned().ok_or(NotHere::NoEvent)
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
    fn ruri(&self) -> Option<&[u8]> {
        Some(Request::ruri(self))
    }
    fn dst_uri(&self) -> Option<&[u8]> {
        Request::dst_uri(self).map(str::as_bytes)
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
    fn reply_reason(&self) -> Option<&[u8]> {
        self.failure_reason().map(str::as_bytes)
    }
    fn reply_local(&self) -> Option<bool> {
        self.failure_code().map(|_| self.failure_is_local())
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        Request::header(self, name)
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
    fn reply_reason(&self) -> Option<&[u8]> {
        self.msg.reason()
    }
    fn reply_local(&self) -> Option<bool> {
        Some(false)
    }
}
