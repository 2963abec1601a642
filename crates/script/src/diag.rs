//! Log lines about the script: where in the script they come from, which
//! call they concern, and how often one place may speak.
//!
//! A warning from a `KSR` function (a refused argument, a reply the host
//! would not send) names the function, the script file and line, and the
//! Call-ID when a SIP message is being routed, so a porter can act on it.
//! Warnings and errors, the script's own (`KSR.warn`, `KSR.err`) and the
//! `KSR` functions', are rate-limited per script line: a flood of bad input
//! that makes one line warn for every message writes a few lines a second
//! and then one with the count held back (see the `lograte` crate), instead
//! of a log as big as the flood.

use crate::context;
use lograte::RateLimit;
use mlua::Lua;
use std::collections::HashMap;
use std::sync::Arc;
use tracing::{error, warn};

/// Script lines with a budget of their own, per VM; past it, further lines
/// share one budget (a script has far fewer lines that warn than this).
const MAX_SITES: usize = 1024;

/// The per-VM budgets, by script line.
#[derive(Default)]
struct Sites(HashMap<String, Arc<RateLimit>>);

/// How loud a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Warn,
    Error,
}

/// `file:line` of the innermost Lua function on the stack (the script line
/// that called the running `KSR` function), if any.
pub(crate) fn location(lua: &Lua) -> Option<String> {
    (1..8).find_map(|level| {
        lua.inspect_stack(level, |d| {
            let line = d.current_line()?;
            let src = d.source();
            (src.what != "C").then(|| {
                let file = src.short_src.as_deref().unwrap_or("?");
                format!("{file}:{line}")
            })
        })
        .flatten()
    })
}

/// The Call-ID of the SIP message being routed, if any.
pub(crate) fn call_id(lua: &Lua) -> Option<String> {
    context::with_view(lua, |v| {
        v.msg()
            .call_id()
            .ok()
            .map(|c| String::from_utf8_lossy(c).into_owned())
    })
    .ok()
    .flatten()
}

/// Log `msg` at `level` with its script line and Call-ID, within the
/// line's budget.
pub(crate) fn emit(lua: &Lua, level: Level, msg: &dyn std::fmt::Display) {
    let at = location(lua).unwrap_or_default();
    let Some(suppressed) = allow(lua, &at) else {
        return;
    };
    let call_id = call_id(lua).unwrap_or_default();
    match (level, suppressed) {
        (Level::Warn, 0) => warn!(target: "script", at, call_id, "{msg}"),
        (Level::Warn, n) => warn!(target: "script", at, call_id, suppressed = n, "{msg}"),
        (Level::Error, 0) => error!(target: "script", at, call_id, "{msg}"),
        (Level::Error, n) => error!(target: "script", at, call_id, suppressed = n, "{msg}"),
    }
}

/// May the line at `at` log now? `Some(n)`: yes, with `n` held back
/// since its last line.
fn allow(lua: &Lua, at: &str) -> Option<u64> {
    if lua.app_data_ref::<Sites>().is_none() {
        lua.set_app_data(Sites::default());
    }
    let mut sites = lua.app_data_mut::<Sites>()?;
    let key = if sites.0.len() < MAX_SITES || sites.0.contains_key(at) {
        at
    } else {
        "(other lines)"
    };
    if !sites.0.contains_key(key) {
        sites
            .0
            .insert(key.to_string(), RateLimit::shared(key.to_string()));
    }
    sites.0[key].check_shared()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_names_the_calling_script_line() {
        let lua = Lua::new();
        let f = lua
            .create_function(|lua, ()| Ok(location(lua).unwrap_or_default()))
            .unwrap();
        lua.globals().set("where", f).unwrap();
        let at: String = lua
            .load("local x = 1\nreturn where()")
            .set_name("@router.lua")
            .eval()
            .unwrap();
        assert_eq!(at, "router.lua:2");
    }

    #[test]
    fn each_line_has_its_budget() {
        let lua = Lua::new();
        let allowed = (0..100)
            .filter(|_| allow(&lua, "a.lua:1").is_some())
            .count();
        assert_eq!(allowed as u64, lograte::BURST);
        assert!(allow(&lua, "a.lua:2").is_some(), "another line speaks");
    }

    /// Log lines written while `f` runs on this thread, as text.
    fn logged(f: impl FnOnce()) -> String {
        use std::sync::Mutex;
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_wrong_argument_names_the_function_the_line_and_the_call() {
        use crate::ksr::testing::{request, Vm};
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        let mut r = 0;
        let log = logged(|| {
            r = vm.in_request(&mut req, |vm| {
                vm.lua
                    .load("local a = 1\nreturn KSR.sl.send_reply(\"abc\", 1)")
                    .set_name("@porting.lua")
                    .eval::<i64>()
                    .unwrap()
            })
        });
        assert_eq!(r, -1);
        assert!(vm.sip.take().is_empty(), "nothing sent");
        assert!(log.contains("KSR.sl.send_reply:"), "{log}");
        assert!(log.contains("porting.lua:2"), "{log}");
        assert!(log.contains("cid-1"), "{log}");
    }

    /// Every route kind that has a SIP message: a KSR warning and a script
    /// error both name its Call-ID.
    #[test]
    fn warnings_and_script_errors_carry_the_call_id_in_every_sip_route() {
        use crate::call::{run_reply_route, run_route};
        use crate::context::RouteKind;
        use crate::ksr::testing::{reply, reply_source, request, FakeClient, Vm};
        use crate::ops::SipOps;
        let names_call = |log: &str| {
            log.lines().count() > 0
                && log
                    .lines()
                    .all(|l| l.contains("call_id=\"cid-1\"") || l.contains("call_id=cid-1"))
        };
        let vm = Vm::new();
        vm.run(
            r#"function warns() KSR.sl.send_reply("abc", 1) end
               function breaks() error("boom") end
               function ksr_reply_route() KSR.hdr.append("X-A: 1\r\n"); KSR.pv.sets("$nope", "x") end
               function ksr_evapi_event(e) KSR.tmx.t_continue(1, 2, "warns") end"#,
        );
        let sip = Some(&*vm.sip as &dyn SipOps);
        for kind in [RouteKind::Request, RouteKind::Failure, RouteKind::Resumed] {
            for f in ["warns", "breaks"] {
                let mut req = request("INVITE", "");
                let log = logged(|| {
                    run_route(&vm.lua, sip, f, kind, &mut req);
                });
                assert!(names_call(&log), "{kind:?} {f}: {log}");
            }
        }
        let log = logged(|| {
            run_reply_route(&vm.lua, &reply(486, "Busy Here"), &reply_source());
        });
        assert!(log.contains("WARN"), "{log}");
        assert!(names_call(&log), "{log}");
        // A transaction resumed from an event runs with the call's message:
        // the resumed route's warning names its call.
        vm.sip.park(request("INVITE", ""));
        let log = logged(|| {
            vm.in_event(&FakeClient::new(0), Some("{}"), |vm| {
                vm.run("ksr_evapi_event('message-received')");
            })
        });
        assert!(log.contains("KSR.sl.send_reply:"), "{log}");
        assert!(names_call(&log), "{log}");
        vm.sip.take();
    }
}
