//! Calling script functions: a global function by name, how the call ended
//! (returned, `KSR.x.exit()`, `KSR.x.drop()`, error), and the routes and
//! events that run one with a [`Context`](crate::context::Context) made
//! current for the call.

use crate::context::{self, Context, EvapiCurrent, ReplyCurrent, RouteKind};
use crate::ops::SipOps;
use evapi::EventContext;
use mlua::{Function, Lua, Value};
use sip::{Method, Request, SipMessage, Source};
use std::rc::Rc;
use tracing::{debug, error, warn};

/// How a script function call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It returned (or called `KSR.x.exit()`).
    Done,
    /// `KSR.x.drop()`.
    Dropped,
    /// The function is not defined.
    Missing,
    /// It raised an error (logged).
    Failed,
}

/// Raised by `KSR.x.exit()` and `KSR.x.drop()` to unwind the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unwind {
    Exit,
    Drop,
}

impl std::fmt::Display for Unwind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unwind::Exit => "KSR.x.exit()",
            Unwind::Drop => "KSR.x.drop()",
        })
    }
}

impl std::error::Error for Unwind {}

fn unwind_of(err: &mlua::Error) -> Option<Unwind> {
    match err {
        mlua::Error::CallbackError { cause, .. } => unwind_of(cause),
        mlua::Error::WithContext { cause, .. } => unwind_of(cause),
        mlua::Error::ExternalError(e) => e.downcast_ref::<Unwind>().copied(),
        _ => None,
    }
}

/// The first line of a Lua error: "file.lua:12: message".
pub(crate) fn lua_error_text(err: &mlua::Error) -> String {
    match err {
        mlua::Error::CallbackError { cause, .. } => lua_error_text(cause),
        mlua::Error::WithContext { cause, context } => {
            format!("{context}: {}", lua_error_text(cause))
        }
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) => m.lines().next().unwrap_or("").to_string(),
        other => other.to_string().lines().next().unwrap_or("").to_string(),
    }
}

/// Call the global function `name` with `args`.
pub(crate) fn call(lua: &Lua, name: &str, args: impl mlua::IntoLuaMulti) -> Outcome {
    let f: Function = match lua.globals().get::<Value>(name) {
        Ok(Value::Function(f)) => f,
        _ => {
            warn!(function = name, "script function not defined");
            return Outcome::Missing;
        }
    };
    match f.call::<()>(args) {
        Ok(()) => Outcome::Done,
        Err(e) => match unwind_of(&e) {
            Some(Unwind::Exit) => Outcome::Done,
            Some(Unwind::Drop) => Outcome::Dropped,
            None => {
                error!(function = name, error = %lua_error_text(&e), "script error");
                debug!(function = name, error = %e, "script error with traceback");
                Outcome::Failed
            }
        },
    }
}

/// Run route `fname` with `req` as the current message; if it fails before
/// it replied, relayed or suspended, reply 500 through `sip`.
pub(crate) fn run_route(
    lua: &Lua,
    sip: Option<&dyn SipOps>,
    fname: &str,
    kind: RouteKind,
    req: &mut Request,
) -> Outcome {
    let result = lua.scope(|scope| {
        let ud = scope.create_any_userdata_ref_mut(req)?;
        let previous = context::enter(lua, context::sip_context(lua, ud, kind));
        let outcome = call(lua, fname, ());
        let mine = context::leave(lua, previous);
        Ok((outcome, context::was_handled(&mine)))
    });
    let (outcome, handled) = match result {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot run route {fname}");
            (Outcome::Failed, false)
        }
    };
    if outcome == Outcome::Failed && !handled {
        reply_500(sip, req);
    }
    outcome
}

fn reply_500(sip: Option<&dyn SipOps>, req: &mut Request) {
    let Some(host) = sip else {
        warn!("after a script error, no SIP host to reply 500 with");
        return;
    };
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

/// Run `ksr_reply_route` for a received reply, if the script defines it;
/// false when the script dropped the reply.
pub(crate) fn run_reply_route(lua: &Lua, reply: &SipMessage, source: &Source) -> bool {
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
        let previous = context::enter(lua, context::sip_context(lua, ud, RouteKind::Reply));
        let outcome = call(lua, "ksr_reply_route", ());
        context::leave(lua, previous);
        Ok(outcome)
    });
    !matches!(result, Ok(Outcome::Dropped))
}

/// Run the event callback `cb` for an evapi event.
pub(crate) fn run_event(lua: &Lua, cb: &str, ctx: &EventContext<'_>) -> Outcome {
    let event: Rc<EvapiCurrent> = Rc::new(EvapiCurrent {
        msg: ctx.message().cloned(),
        client: ctx.client(),
    });
    let previous = context::enter(lua, Context::Evapi(event));
    let outcome = call(lua, cb, ctx.event().name());
    context::leave(lua, previous);
    outcome
}
