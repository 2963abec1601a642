//! Calling script functions: a global function by name, how the call ended
//! (returned, `KSR.x.exit()`, `KSR.x.drop()`, error), and the routes and
//! events that run one with a [`Context`](crate::context::Context) made
//! current for the call.

use crate::context::{self, Context, EvapiCurrent, ReplyCurrent, RouteKind};
use crate::ops::SipOps;
use crate::stats::{self, Failure};
use evapi::EventContext;
use mlua::{Function, Lua};
use sip::{Method, Request, SipMessage, Source};
use std::rc::Rc;
use tracing::{debug, error, warn};

mod invoke;

use invoke::{fn_name, function, run, run_by_name};

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

/// How `KSR.x.exit()` and `KSR.x.drop()` unwind the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unwind {
    Exit,
    Drop,
}

/// The error value `KSR.x.exit()` raises (a string no script writes).
pub(crate) const EXIT_MARK: &str = "\u{1}evapi: KSR.x.exit()";
/// The error value `KSR.x.drop()` raises.
pub(crate) const DROP_MARK: &str = "\u{1}evapi: KSR.x.drop()";

fn unwind_of_text(text: &str) -> Option<Unwind> {
    if text.starts_with(EXIT_MARK) {
        Some(Unwind::Exit)
    } else if text.starts_with(DROP_MARK) {
        Some(Unwind::Drop)
    } else {
        None
    }
}

/// The unwind an error carries: the marker raised by `KSR.x.exit()` or
/// `drop()`, seen through a Rust callback (`KSR.route`) if there was one.
fn unwind_of(err: &mlua::Error) -> Option<Unwind> {
    match err {
        mlua::Error::CallbackError { cause, .. } => unwind_of(cause),
        mlua::Error::WithContext { cause, .. } => unwind_of(cause),
        mlua::Error::RuntimeError(m) => unwind_of_text(m),
        _ => None,
    }
}

/// A Lua error as a porter needs it: "file.lua:12: message", the whole
/// message (a multi-line `error()` text included) without the stack
/// traceback mlua appends, which is logged at debug level instead.
pub(crate) fn lua_error_text(err: &mlua::Error) -> String {
    match err {
        mlua::Error::CallbackError { cause, .. } => lua_error_text(cause),
        mlua::Error::WithContext { cause, context } => {
            format!("{context}: {}", lua_error_text(cause))
        }
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) => without_traceback(m).to_string(),
        other => without_traceback(&other.to_string()).to_string(),
    }
}

/// `text` up to the traceback mlua adds to runtime errors.
fn without_traceback(text: &str) -> &str {
    let end = text.find("\nstack traceback:").unwrap_or(text.len());
    text[..end].trim_end()
}

/// Call the global function `name` with `args`.
pub(crate) fn call(lua: &Lua, name: &str, args: impl mlua::IntoLuaMulti) -> Outcome {
    let Some(key) = fn_name(lua, name) else {
        return missing(lua, name);
    };
    let call = crate::limits::enter(lua);
    let result = run_by_name(lua, key, args);
    drop(call);
    match result {
        Ok(None) => missing(lua, name),
        Ok(Some(r)) => outcome(lua, name, r),
        Err(e) => outcome(lua, name, Err(e)),
    }
}

/// The script does not define function `name`.
fn missing(lua: &Lua, name: &str) -> Outcome {
    let call_id = crate::diag::call_id(lua);
    warn!(function = name, call_id, "script function not defined");
    stats::count(lua, Failure::Missing);
    Outcome::Missing
}

/// Call `f`, the script's function `name`.
fn call_function(lua: &Lua, name: &str, f: Function, args: impl mlua::IntoLuaMulti) -> Outcome {
    let call = crate::limits::enter(lua);
    let result = run(lua, f, args).and_then(|r| r);
    drop(call);
    outcome(lua, name, result)
}

/// What the call of function `name` that ended with `result` counts as
/// (an error is logged and counted).
fn outcome(lua: &Lua, name: &str, result: Result<(), mlua::Error>) -> Outcome {
    let outcome = match result {
        Ok(()) => Outcome::Done,
        Err(e) => match unwind_of(&e) {
            Some(Unwind::Exit) => Outcome::Done,
            Some(Unwind::Drop) => Outcome::Dropped,
            None if matches!(e, mlua::Error::MemoryError(_)) => {
                let call_id = crate::diag::call_id(lua);
                error!(
                    function = name,
                    call_id,
                    "script error: the Lua state is out of memory ([script] memory_limit_mb)"
                );
                Outcome::Failed
            }
            None => {
                // The message being routed, if any, is still the current one.
                let call_id = crate::diag::call_id(lua);
                error!(function = name, call_id, error = %lua_error_text(&e), "script error");
                debug!(function = name, error = %e, "script error with traceback");
                Outcome::Failed
            }
        },
    };
    if outcome == Outcome::Failed {
        stats::count(lua, Failure::Error);
    }
    outcome
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
    let branch = match kind {
        RouteKind::Failure => req.failure_branch(),
        _ => 0,
    };
    let (outcome, mine) = context::in_route(lua, kind, branch, req, || call(lua, fname, ()));
    let outcome = marked_drop(outcome, &mine);
    if outcome == Outcome::Failed && !context::was_handled(&mine) {
        reply_500(sip, req);
    }
    outcome
}

/// A route that returned after `KSR.drop()` counts as dropped.
fn marked_drop(outcome: Outcome, cx: &Context) -> Outcome {
    match outcome {
        Outcome::Done if context::drop_marked(cx) => Outcome::Dropped,
        other => other,
    }
}

/// The Call-ID of `req`, for a log line.
fn call_id_of(req: &Request) -> lograte::Excerpt<'_> {
    lograte::Excerpt::new(req.msg().call_id().unwrap_or_default(), 128)
}

fn reply_500(sip: Option<&dyn SipOps>, req: &mut Request) {
    let Some(host) = sip else {
        warn!(call_id = %call_id_of(req), "after a script error, no SIP host to reply 500 with");
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
        warn!(call_id = %call_id_of(req), "after a script error, the 500 reply failed: {e}");
    }
}

/// Run `ksr_reply_route` for a received reply, if the script defines it;
/// false when the script dropped the reply.
pub(crate) fn run_reply_route(lua: &Lua, reply: &SipMessage, source: &Source) -> bool {
    const NAME: &str = "ksr_reply_route";
    let Some(f) = function(lua, NAME) else {
        return true;
    };
    let current = ReplyCurrent {
        msg: reply.clone(),
        source: source.clone(),
    };
    let (outcome, mine) = context::in_reply_route(lua, RouteKind::Reply, 0, current, || {
        call_function(lua, NAME, f, ())
    });
    marked_drop(outcome, &mine) != Outcome::Dropped
}

/// Run a transaction's reply route `fname` (`KSR.tm.t_on_reply`) for a
/// reply to its branch `branch`; false when the script dropped the reply.
/// A route that is not defined lets the reply pass (logged).
pub(crate) fn run_onreply_route(
    lua: &Lua,
    fname: &str,
    reply: &SipMessage,
    source: &Source,
    branch: u32,
) -> bool {
    run_reply(lua, fname, RouteKind::OnReply, reply, source, branch)
}

/// Run the branch route `fname` (`KSR.tm.t_on_branch`) on `req`, the copy
/// of the request that becomes branch `branch`. Only `KSR.x.drop()`
/// drops the branch: a script error is logged and the branch goes on,
/// and no 500 is sent from here (the route that relays still runs).
pub(crate) fn run_branch_route(lua: &Lua, fname: &str, req: &mut Request, branch: u32) -> Outcome {
    let (outcome, mine) =
        context::in_route(lua, RouteKind::Branch, branch, req, || call(lua, fname, ()));
    marked_drop(outcome, &mine)
}

fn run_reply(
    lua: &Lua,
    fname: &str,
    kind: RouteKind,
    reply: &SipMessage,
    source: &Source,
    branch: u32,
) -> bool {
    let current = ReplyCurrent {
        msg: reply.clone(),
        source: source.clone(),
    };
    let (outcome, mine) =
        context::in_reply_route(lua, kind, branch, current, || call(lua, fname, ()));
    marked_drop(outcome, &mine) != Outcome::Dropped
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

/// Run the event callback `cb` for event `name` that came over NATS (a
/// worker's answer, `evapi:no-responders`), with `msg` as `$evapi(msg)`.
pub(crate) fn run_nats_event(lua: &Lua, cb: &str, name: &str, msg: &bytes::Bytes) -> Outcome {
    let event: Rc<EvapiCurrent> = Rc::new(EvapiCurrent {
        msg: Some(msg.clone()),
        client: context::NatsSource,
    });
    let previous = context::enter(lua, Context::Evapi(event));
    let outcome = call(lua, cb, name);
    context::leave(lua, previous);
    outcome
}

/// Run the event callback `cb` as `nats:<subject>` for a message of a
/// `[[nats.subscribe]]` subject, with `payload` as `$natsData`.
pub(crate) fn run_nats_message(
    lua: &Lua,
    cb: &str,
    subject: &str,
    payload: &bytes::Bytes,
) -> Outcome {
    let previous = context::enter(lua, Context::Nats(payload.clone()));
    let outcome = call(lua, cb, format!("nats:{subject}"));
    context::leave(lua, previous);
    outcome
}

/// Run the dialog `event_callback` `cb` for `event`, with `$dlg(...)` and
/// `$dlg_var(...)` reading the dialog as it was then.
pub(crate) fn run_dialog_event(lua: &Lua, cb: &str, event: &sip::DialogEvent) -> Outcome {
    let info = Rc::new(std::cell::RefCell::new(event.info.clone()));
    let previous = context::enter(lua, Context::Dialog(info));
    let outcome = call(lua, cb, event.name);
    context::leave(lua, previous);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ksr::testing::{reply_source as source, request, Vm};

    fn reply(code: u16) -> SipMessage {
        crate::ksr::testing::reply(code, "Busy Here")
    }

    #[test]
    fn functions_are_read_from_the_globals_at_each_call() {
        let vm = Vm::new();
        vm.run(r#"n = 0; function r(k) n = n + (k or 1) end; not_fn = 42"#);
        let n = || vm.lua.globals().get::<i64>("n").unwrap();
        assert_eq!(call(&vm.lua, "r", 2), Outcome::Done);
        assert_eq!(n(), 2, "the argument reached the function");
        // A function defined or replaced after the first call is the one called.
        vm.run(r#"function r() n = n + 10 end; function later() n = -1 end"#);
        assert_eq!(call(&vm.lua, "r", ()), Outcome::Done);
        assert_eq!(n(), 12);
        assert_eq!(call(&vm.lua, "later", ()), Outcome::Done);
        assert_eq!(n(), -1);
        // A global that is not a function, or none at all, is not defined.
        assert_eq!(call(&vm.lua, "not_fn", ()), Outcome::Missing);
        vm.run("later = nil");
        assert_eq!(call(&vm.lua, "later", ()), Outcome::Missing);
        // Through the globals' metatable: a function it gives is called,
        // and one that raises for an unknown name (strict mode) is
        // "not defined", not a script error.
        vm.run(
            r#"setmetatable(_G, { __index = function(_, k)
                   if k == "from_meta" then return function() n = 7 end end
                   error("undefined global " .. k)
               end })"#,
        );
        assert_eq!(call(&vm.lua, "from_meta", ()), Outcome::Done);
        assert_eq!(n(), 7);
        assert_eq!(call(&vm.lua, "nowhere", ()), Outcome::Missing);
        assert_eq!(call(&vm.lua, "r", ()), Outcome::Done);
        assert_eq!(n(), 17);
    }

    #[test]
    fn a_route_failing_before_it_replied_gets_500() {
        let vm = Vm::new();
        vm.run(
            r#"function broken() error("boom") end
               function replied_then_broken() KSR.sl.send_reply(404, "Not Here"); error("boom") end
               function fine() KSR.pv.sets("$var(m)", KSR.pv.get("$rm")) end"#,
        );
        let sip = Some(&*vm.sip as &dyn SipOps);
        let mut req = request("INVITE", "");
        let out = run_route(&vm.lua, sip, "broken", RouteKind::Request, &mut req);
        assert_eq!(out, Outcome::Failed);
        assert_eq!(vm.sip.take(), ["sl_reply 500 Server Internal Error"]);
        let out = run_route(
            &vm.lua,
            sip,
            "replied_then_broken",
            RouteKind::Request,
            &mut req,
        );
        assert_eq!(out, Outcome::Failed);
        assert_eq!(vm.sip.take(), ["sl_reply 404 Not Here"]);
        let mut ack = request("ACK", "");
        run_route(&vm.lua, sip, "broken", RouteKind::Request, &mut ack);
        assert!(vm.sip.take().is_empty(), "an ACK is never replied to");
        assert_eq!(
            run_route(&vm.lua, sip, "fine", RouteKind::Failure, &mut req),
            Outcome::Done
        );
        assert_eq!(vm.eval::<String>(r#"KSR.pv.get("$var(m)")"#), "INVITE");
        // The route's context is gone after it.
        assert!(vm.eval::<bool>(r#"KSR.pv.is_null("$rm")"#));
    }

    #[test]
    fn the_reply_route_sees_the_reply_and_can_drop_it() {
        let vm = Vm::new();
        assert!(
            run_reply_route(&vm.lua, &reply(486), &source()),
            "no reply route"
        );
        vm.run(
            r#"function ksr_reply_route()
                 KSR.pv.seti("$var(rs)", KSR.pv.get("$rs"))
                 KSR.pv.sets("$var(si)", KSR.pv.get("$si"))
                 KSR.pv.seti("$var(inv)", KSR.is_INVITE() and 1 or 0)
                 if KSR.pv.get("$rs") == 486 then KSR.x.drop() end
               end"#,
        );
        assert!(!run_reply_route(&vm.lua, &reply(486), &source()));
        assert_eq!(
            vm.eval::<(i64, String, i64)>(
                r#"KSR.pv.get("$var(rs)"), KSR.pv.get("$var(si)"), KSR.pv.get("$var(inv)")"#
            ),
            (486, "192.0.2.9".into(), 1)
        );
        assert!(run_reply_route(&vm.lua, &reply(180), &source()));
        // A reply route cannot edit a request.
        vm.run(r#"function ksr_reply_route() KSR.pv.seti("$var(h)", KSR.hdr.append("X: y")) end"#);
        assert!(run_reply_route(&vm.lua, &reply(200), &source()));
        assert_eq!(vm.eval::<i64>(r#"KSR.pv.get("$var(h)")"#), -1);
    }

    #[test]
    fn error_text_is_the_whole_message_without_the_traceback() {
        let lua = Lua::new();
        let e = lua
            .load("error('bad thing\\nmore')")
            .set_name("@r.lua")
            .exec()
            .unwrap_err();
        assert_eq!(lua_error_text(&e), "r.lua:1: bad thing\nmore");
        // Raised inside a function called from Rust: mlua appends the
        // traceback, which stays out of the text.
        lua.load("function f() local t = nil; return t.x end")
            .set_name("@r.lua")
            .exec()
            .unwrap();
        let f: Function = lua.globals().get("f").unwrap();
        let e = f.call::<()>(()).unwrap_err();
        assert!(e.to_string().contains("stack traceback"), "{e}");
        let text = lua_error_text(&e);
        assert!(
            text.starts_with("r.lua:1: attempt to index a nil value"),
            "{text}"
        );
        assert!(!text.contains("traceback"), "{text}");
    }

    /// Every way a call by name ends (ran, raised, `KSR.x.exit()`, not
    /// defined, not a function, asked of the globals' metatable, with an
    /// argument) leaves the VM's stack as it found it, and calls the
    /// function with its argument.
    #[test]
    fn calls_by_name_leave_the_stack_as_they_found_it() {
        let vm = Vm::new();
        vm.run(
            r#"got = {}
               function ok(a) got[#got + 1] = a or "none" end
               function bad() error("no") end
               function leaves() KSR.x.exit() end
               not_fn = 1"#,
        );
        // SAFETY: reads the height of the VM's own stack, under its lock.
        let top = || {
            vm.lua
                .exec_raw_lua(|raw| unsafe { mlua::ffi::lua_gettop(raw.state()) })
        };
        let before = top();
        for _ in 0..3 {
            assert_eq!(call(&vm.lua, "ok", "arg"), Outcome::Done);
            assert_eq!(call(&vm.lua, "ok", ()), Outcome::Done);
            assert_eq!(call(&vm.lua, "bad", ()), Outcome::Failed);
            assert_eq!(call(&vm.lua, "leaves", ()), Outcome::Done);
            assert_eq!(call(&vm.lua, "nothing", ()), Outcome::Missing);
            assert_eq!(call(&vm.lua, "not_fn", 7), Outcome::Missing);
            assert_eq!(top(), before);
        }
        vm.run(r#"setmetatable(_G, { __index = function(_, k) if k == "meta" then return ok end end })"#);
        assert_eq!(call(&vm.lua, "meta", "via meta"), Outcome::Done);
        assert_eq!(call(&vm.lua, "none", ()), Outcome::Missing);
        assert_eq!(top(), before);
        assert_eq!(
            vm.eval::<String>("table.concat(got, ',')"),
            "arg,none,arg,none,arg,none,via meta"
        );
    }
}
