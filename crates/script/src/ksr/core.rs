//! Core-level functions of `KSR` on the current message: the method tests
//! `KSR.is_INVITE()`, `is_ACK`, `is_BYE`, `is_CANCEL`, `is_OPTIONS`,
//! `is_REGISTER`, `is_MESSAGE`, `is_SUBSCRIBE`, `is_NOTIFY`, `is_PUBLISH`,
//! `is_UPDATE`, `is_INFO`, `is_PRACK`, `is_REFER` (booleans; a reply is
//! tested by its CSeq method) and `KSR.is_method_in("IRB")` with
//! Kamailio's letters I A B C R O M S N P U.
//!
//! Also on the current message: `KSR.isdsturiset()` (boolean),
//! `KSR.force_rport()` (replies go to the source port even without
//! `rport`; true), `KSR.set_reply_no_connect()` (recorded on the request,
//! not yet acted on: true), `KSR.drop()` and its newer name
//! `KSR.set_drop()` (mark the message to be dropped when the route ends,
//! without ending it; use `KSR.x.drop()` to end it too), and
//! `KSR.route(name)`: run the script function `name` now (see
//! [`route`]).

use super::module::{Cx, Fail, Module};
use mlua::{Function, LuaString, Value};
use sip::Method;

const TESTS: [(&str, Method); 14] = [
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

/// Kamailio's letter for a method of `KSR.is_method_in` (others never
/// match).
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

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    for (name, method) in TESTS {
        m.func(name, move |cx, ()| {
            Ok(cx.here().method()?.as_ref() == Some(&method))
        })?;
    }
    m.func("is_method_in", |cx, letters: LuaString| {
        let letters = letters.to_str()?;
        Ok(cx
            .here()
            .method()?
            .as_ref()
            .and_then(method_letter)
            .is_some_and(|l| letters.contains(l)))
    })?;
    m.func("isdsturiset", |cx, ()| {
        Ok(cx.here().with_view(|v| v.dst_uri().is_some())?)
    })?;
    m.func("force_rport", |cx, ()| {
        cx.request(|req| req.set_force_rport())?;
        Ok(true)
    })?;
    m.func("set_reply_no_connect", |cx, ()| {
        cx.request(|req| req.set_reply_no_connect())?;
        Ok(true)
    })?;
    for name in ["drop", "set_drop"] {
        m.func(name, |cx, ()| {
            // Outside a SIP route there is no message to drop.
            Ok(cx.here().with_state(|s| s.drop = true)?)
        })?;
    }
    m.func("route", route)
}

/// `KSR.route(name)`: call the global function `name` with no arguments,
/// inside the running route. It returns the function's integer result
/// (a boolean as 1 or -1; anything else as 1), and -1 with a log line
/// naming `name` and the calling script line when no such function
/// exists. Kamailio's `KSR.route` runs a native `route[name]` block; a
/// KEMI script has none, so running the script's own function is the
/// useful reading. `KSR.x.exit()` in it ends the whole route, as any
/// Lua call would.
fn route(cx: &Cx<'_>, name: String) -> Result<i64, Fail> {
    let f = match cx.lua.globals().get::<Value>(name.as_str())? {
        Value::Function(f) => f,
        _ => {
            return Err(Fail::new(format_args!(
                "no function {name:?} in the script"
            )))
        }
    };
    let r = Function::call::<Value>(&f, ())?;
    Ok(match r {
        Value::Integer(i) => i,
        Value::Number(n) if n.is_finite() => n as i64,
        Value::Boolean(b) => super::module::kemi_bool(b),
        _ => 1,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, Vm};

    #[test]
    fn method_tests_follow_the_current_request() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(bool, bool, bool, bool)>(
                r#"KSR.is_INVITE(), KSR.is_BYE(), KSR.is_method_in("RIB"), KSR.is_method_in("AB")"#,
            )
        });
        assert_eq!(r, (true, false, true, false));
        let mut req = request("BYE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(bool, bool)>(r#"KSR.is_BYE(), KSR.is_method_in("B")"#)
        });
        assert_eq!(r, (true, true));
        // No message: false (and a log line).
        assert!(!vm.eval::<bool>("KSR.is_INVITE()"));
    }

    #[test]
    fn dst_uri_rport_and_no_connect_act_on_the_request() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(bool, i64, bool, bool, bool)>(
                r#"KSR.isdsturiset(), KSR.pv.sets("$du", "sip:10.0.0.1"), KSR.isdsturiset(),
                   KSR.force_rport(), KSR.set_reply_no_connect()"#,
            )
        });
        assert_eq!(r, (false, 1, true, true, true));
        assert!(req.force_rport() && req.reply_no_connect());
        assert!(!vm.eval::<bool>("KSR.force_rport()"), "no request");
    }

    #[test]
    fn drop_marks_without_ending_the_route() {
        use crate::call::{run_route, Outcome};
        use crate::context::RouteKind;
        let vm = Vm::new();
        vm.run(
            r#"function r() KSR.drop(); KSR.pv.seti("$var(after)", 1) end
               function s() KSR.set_drop() end
               function t() KSR.pv.seti("$var(t)", 1) end"#,
        );
        let mut req = request("INVITE", "");
        let sip = Some(&*vm.sip as &dyn crate::SipOps);
        let run =
            |f: &str, req: &mut sip::Request| run_route(&vm.lua, sip, f, RouteKind::Request, req);
        assert_eq!(run("r", &mut req), Outcome::Dropped);
        assert_eq!(vm.eval::<i64>(r#"KSR.pv.get("$var(after)")"#), 1);
        assert_eq!(run("s", &mut req), Outcome::Dropped);
        assert_eq!(run("t", &mut req), Outcome::Done, "the mark is per route");
        vm.run("KSR.drop()"); // outside a route: nothing to mark, no error
    }

    #[test]
    fn route_runs_a_script_function_by_name() {
        let vm = Vm::new();
        vm.run(
            r#"function sub() KSR.pv.seti("$var(sub)", 1); return 7 end
               function nothing() end
               function yes() return true end
               function quits() KSR.x.exit() end"#,
        );
        let r = vm.eval::<(i64, i64, i64, i64, i64)>(
            r#"KSR.route("sub"), KSR.pv.get("$var(sub)"), KSR.route("nothing"),
               KSR.route("yes"), KSR.route("undefined")"#,
        );
        assert_eq!(r, (7, 1, 1, 1, -1));
        // exit inside ends the caller too.
        vm.run(r#"function caller() KSR.route("quits"); KSR.pv.seti("$var(c)", 1) end"#);
        assert_eq!(
            crate::call::call(&vm.lua, "caller", ()),
            crate::call::Outcome::Done
        );
        assert!(vm.eval::<bool>(r#"KSR.pv.is_null("$var(c)")"#));
    }
}
