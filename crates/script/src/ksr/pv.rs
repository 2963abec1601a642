//! Pseudo-variables from scripts: `KSR.pv.get(name)` (nil when null),
//! `gete(name)` ("" when null), `is_null(name)`, `sets(name, s)`,
//! `seti(name, i)` and `unset(name)` (1 or -1).
//!
//! Reading goes to the current SIP message or evapi event (see
//! [`crate::context`]; null outside them) or to the variable stores: `$var`
//! in this VM, `$shv` and `$sht` shared. Writable: `$var`, `$shv`, `$sht`,
//! and `$ru`, `$rU`, `$rd`, `$du` in a SIP request route.
//!
//! Names are parsed once per VM: [`named`] keeps the parsed [`Pv`] of each
//! name it has seen, up to [`MAX_NAMES`] names (a script building names
//! from data would otherwise grow the cache without end; past the cap, a
//! new name is parsed on each use). The functions find a name by the
//! address of the Lua string the script passed ([`named_lua`]), which Lua
//! keeps unique for short strings, so a read does not check or hash the
//! name's text; and a SIP value goes from the message into its Lua string
//! with no copy between ([`get_lua`]), pushed onto Lua's stack directly
//! when it can be ([`super::out`]).

use super::arg::Text;
use super::module::{lua_int, Cx, Fail, Module};
use super::out::Out;
use crate::context;
use crate::pv::{get_sip, get_sip_ref, with_host, with_user, EvField, Pv, PvRef, PvValue};
use mlua::{Lua, LuaString, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Most names whose parse is kept, per VM.
pub(crate) const MAX_NAMES: usize = 4096;

/// `$var` values of one VM.
#[derive(Default)]
struct Vars(HashMap<String, PvValue>);

/// Copy the `$var` values of VM `from` into VM `to` (a thread's VM
/// rebuilt after a reload keeps them, as Kamailio's do). Copied, not
/// moved: `from` stays whole in case it is still running.
pub(crate) fn carry_vars(from: &Lua, to: &Lua) {
    let vars = from.app_data_ref::<Vars>().map(|v| Vars(v.0.clone()));
    if let Some(vars) = vars {
        to.set_app_data(vars);
    }
}

/// Parsed pseudo-variable names of one VM: by text, and by the Lua
/// string a script passed (see [`named_lua`]). In the VM's app data, and
/// held by the `KSR.pv` functions (no lookup of the app data per call).
type NamesCell = Rc<RefCell<Names>>;

#[derive(Default)]
struct Names {
    by_text: HashMap<Box<str>, Rc<Pv>>,
    by_string: HashMap<usize, (LuaString, Rc<Pv>), foldhash::fast::RandomState>,
}

/// Lua 5.4 keeps one copy of each short string (up to 40 bytes,
/// `LUAI_MAXSHORTLEN`): every `"$ru"` in a script is the same object.
const LUA_SHORT_STRING: usize = 40;

/// The parsed pseudo-variable `name`.
pub(crate) fn named(cx: &Cx<'_>, name: &str) -> Result<Rc<Pv>, Fail> {
    let names = cx
        .lua
        .app_data_ref::<NamesCell>()
        .expect("every VM has the pv name cache")
        .clone();
    named_in(&names, name)
}

/// [`named`], in the cache `names`.
fn named_in(names: &RefCell<Names>, name: &str) -> Result<Rc<Pv>, Fail> {
    let mut names = names.borrow_mut();
    if let Some(pv) = names.by_text.get(name) {
        return Ok(pv.clone());
    }
    let pv = Rc::new(Pv::parse(name).map_err(Fail::new)?);
    if names.by_text.len() < MAX_NAMES {
        names.by_text.insert(name.into(), pv.clone());
    }
    Ok(pv)
}

/// The parsed pseudo-variable named by the Lua string `name`: a short
/// string is found by the address of its bytes, with no check of its
/// text (that is [`named`]'s, the first time). The cache holds the
/// string, so the address cannot be reused by another string while it is
/// there.
fn named_lua(cx: &Cx<'_>, names: &RefCell<Names>, name: &Text) -> Result<Rc<Pv>, Fail> {
    let addr = name.addr();
    if let Some((_, pv)) = names.borrow().by_string.get(&addr) {
        return Ok(pv.clone());
    }
    let pv = named_in(names, name.to_str()?)?;
    let bytes = name.as_bytes();
    if bytes.len() <= LUA_SHORT_STRING {
        // The same string, interned: a reference to it keeps it alive.
        let held = cx.lua.create_string(bytes)?;
        let mut names = names.borrow_mut();
        if names.by_string.len() < MAX_NAMES && held.as_bytes().as_ptr() as usize == addr {
            names.by_string.insert(addr, (held, pv.clone()));
        }
    }
    Ok(pv)
}

/// `pv`'s value in the current context as a `KSR` function's result: a
/// SIP value goes from the message onto Lua's stack with no copy between
/// ([`Cx::text`]).
pub(crate) fn get_lua(cx: &Cx<'_>, pv: &Pv) -> mlua::Result<Out> {
    if !reads_message(pv) {
        return cx.value(get(cx, pv));
    }
    let made = cx.here().with_view(|v| match get_sip_ref(pv, v) {
        None => Ok(Value::Nil.into()),
        Some(PvRef::Int(i)) => Ok(Value::Integer(i).into()),
        Some(text) => cx.text(text.bytes().unwrap_or_default()),
    });
    made.unwrap_or(Ok(Value::Nil.into()))
}

/// Whether `pv` is read from the current SIP message ([`get_sip_ref`]);
/// the others have their own arm in [`get`].
fn reads_message(pv: &Pv) -> bool {
    !matches!(
        pv,
        Pv::Var(_)
            | Pv::Shv(_)
            | Pv::Sht(..)
            | Pv::Evapi(_)
            | Pv::NatsData
            | Pv::TimeNow
            | Pv::Jsonrpl(_)
            | Pv::Dlg(_)
            | Pv::DlgVar(_)
            | Pv::MsgTime
            | Pv::TBranchIdx
            | Pv::Avp(_)
            | Pv::Xavp(..)
    )
}

/// Read `pv` in the current context; `None` is null.
pub(crate) fn get(cx: &Cx<'_>, pv: &Pv) -> Option<PvValue> {
    if reads_message(pv) {
        return cx.here().with_view(|v| get_sip(pv, v)).ok()?;
    }
    match pv {
        Pv::Var(n) => cx.lua.app_data_ref::<Vars>()?.0.get(n).cloned(),
        Pv::Shv(n) => cx.shared().shv_get(n),
        Pv::Sht(t, k) => cx.shared().sht_get(t, k),
        Pv::Evapi(field) => {
            let ev = cx.here().event().ok()?;
            Some(match field {
                EvField::Msg => PvValue::Str(ev.msg.as_ref()?.to_vec()),
                EvField::SrcAddr if ev.client.via_nats() => PvValue::from("nats"),
                EvField::SrcAddr => PvValue::from(ev.client.peer().ip().to_string().as_str()),
                EvField::SrcPort if ev.client.via_nats() => PvValue::Int(0),
                EvField::SrcPort => PvValue::Int(ev.client.peer().port().into()),
                EvField::ConIdx if ev.client.via_nats() => PvValue::Int(-1),
                EvField::ConIdx => PvValue::Int(ev.client.conidx() as i64),
            })
        }
        Pv::NatsData => Some(PvValue::Str(context::nats_data(cx.lua)?.to_vec())),
        Pv::TimeNow => Some(PvValue::Int(unix_now())),
        Pv::Jsonrpl(field) => super::jsonrpl(cx.lua, *field),
        Pv::Dlg(field) => super::dialog::pv_get(cx, *field),
        Pv::DlgVar(n) => super::dialog::pv_var(cx, n),
        Pv::MsgTime => cx
            .here()
            .with_state(|s| PvValue::Int(*s.time.get_or_insert_with(unix_now)))
            .ok(),
        // The branch of a branch, reply or failure route; 0 elsewhere.
        Pv::TBranchIdx => context::branch_index(cx.lua).map(|b| PvValue::Int(b.into())),
        Pv::Avp(n) => cx.here().with_state(|s| s.avp(n)).ok()?,
        Pv::Xavp(n, k) => cx.here().with_state(|s| s.xavp(n, k)).ok()?,
        // Read from the message above.
        _ => None,
    }
}

/// Seconds since the Unix epoch (`$TS`, `KSR.kx.get_timestamp()`).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Write (`Some`) or unset (`None`) `pv`.
pub(crate) fn set(cx: &Cx<'_>, pv: &Pv, value: Option<PvValue>) -> Result<(), Fail> {
    match pv {
        Pv::Var(n) => {
            let mut vars = cx.lua.app_data_mut::<Vars>().expect("every VM has $var");
            match value {
                Some(x) => vars.0.insert(n.clone(), x),
                None => vars.0.remove(n),
            };
        }
        Pv::Shv(n) => cx.shared().shv_set(n, value),
        Pv::Sht(t, k) => cx.shared().sht_set(t, k, value).map_err(|full| {
            Fail::new(format_args!(
                "$sht({t}=>{k}): table {t} holds [htable] max_entries = {} keys; not set",
                full.max
            ))
        })?,
        Pv::DstUri | Pv::Ruri | Pv::RuriUser | Pv::RuriHost => {
            let text = value.as_ref().map(PvValue::to_text);
            cx.request(|req| set_sip(req, pv, text.as_deref()))?
                .map_err(|e| Fail::new(format_args!("cannot set {pv:?}: {e}")))?;
        }
        Pv::Avp(n) => cx.here().with_state(|s| match value {
            Some(v) => s.push_avp(n, v),
            None => {
                s.unset_avp(n);
                Ok(())
            }
        })??,
        Pv::Xavp(n, k) => cx.here().with_state(|s| match value {
            Some(v) => s.set_xavp(n, k, v),
            None => {
                s.unset_xavp(n, k);
                Ok(())
            }
        })??,
        Pv::DlgVar(n) => super::dialog::pv_set_var(cx, n, value.as_ref())?,
        _ => return Err(Fail::new(format_args!("{pv:?} is not writable"))),
    }
    Ok(())
}

/// Write `$ru`, `$rU`, `$rd`, `$du` of a request.
fn set_sip(req: &mut sip::Request, pv: &Pv, text: Option<&str>) -> Result<(), String> {
    let set_ruri = |req: &mut sip::Request, uri: Vec<u8>| {
        req.set_ruri(&String::from_utf8_lossy(&uri))
            .map_err(|e| e.to_string())
    };
    match (pv, text) {
        (Pv::DstUri, t) => req.set_dst_uri(t).map_err(|e| e.to_string()),
        (Pv::Ruri, Some(t)) => req.set_ruri(t).map_err(|e| e.to_string()),
        (Pv::RuriUser, _) => {
            let uri = with_user(req.ruri(), text.map(str::as_bytes))
                .ok_or("the Request-URI has no user part to change")?;
            set_ruri(req, uri)
        }
        (Pv::RuriHost, Some(t)) => {
            let uri = with_host(req.ruri(), t.as_bytes())
                .ok_or("the Request-URI has no host to change")?;
            set_ruri(req, uri)
        }
        _ => Err(format!("{pv:?} cannot be unset")),
    }
}

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.lua().set_app_data(Vars::default());
    let names = NamesCell::default();
    m.lua().set_app_data(names.clone());
    let n = names.clone();
    m.func("get", move |cx, name: Text| {
        Ok(get_lua(cx, &*named_lua(cx, &n, &name)?)?)
    })?;
    let n = names.clone();
    m.func("gete", move |cx, name: Text| {
        let v = match named_lua(cx, &n, &name) {
            Ok(pv) => get_lua(cx, &pv)?,
            Err(e) => {
                cx.warn_fail(e)?;
                Out::Value(Value::Nil)
            }
        };
        Ok(match v {
            Out::Value(Value::Nil) => cx.text(b"")?,
            v => v,
        })
    })?;
    let n = names.clone();
    m.func("is_null", move |cx, name: Text| {
        Ok(match named_lua(cx, &n, &name) {
            Ok(pv) => get(cx, &pv).is_none(),
            Err(e) => {
                cx.warn_fail(e)?;
                true
            }
        })
    })?;
    let n = names.clone();
    m.func("sets", move |cx, (name, value): (Text, Text)| {
        let pv = named_lua(cx, &n, &name)?;
        set(cx, &pv, Some(PvValue::Str(value.as_bytes().to_vec())))?;
        Ok(1)
    })?;
    let n = names.clone();
    m.func("seti", move |cx, (name, value): (Text, Value)| {
        let pv = named_lua(cx, &n, &name)?;
        let i = lua_int(&value).ok_or_else(|| {
            let name = name.to_string_lossy();
            Fail::new(format_args!("{name}: the value is not an integer"))
        })?;
        set(cx, &pv, Some(PvValue::Int(i)))?;
        Ok(1)
    })?;
    m.func("unset", move |cx, name: Text| {
        let pv = named_lua(cx, &names, &name)?;
        set(cx, &pv, None)?;
        Ok(1)
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, FakeClient, Vm};
    use super::{NamesCell, MAX_NAMES};

    #[test]
    fn var_and_shv_are_stored_and_typed() {
        let vm = Vm::new();
        let r = vm.eval::<(i64, i64, i64, i64)>(
            r#"KSR.pv.sets("$var(s)", "text"), KSR.pv.seti("$var(i)", 7.0),
               KSR.pv.seti("$shv(n)", "12"), KSR.pv.seti("$var(x)", "nope")"#,
        );
        assert_eq!(r, (1, 1, 1, -1));
        assert_eq!(
            vm.eval::<(String, mlua::Value, mlua::Value)>(
                r#"KSR.pv.get("$var(s)"), KSR.pv.get("$var(i)"), KSR.pv.get("$shv(n)")"#
            )
            .1,
            mlua::Value::Integer(7),
            "integers stay integers"
        );
        // $var is per VM, $shv shared.
        let other = vm.sibling();
        assert!(other.eval::<bool>(r#"KSR.pv.is_null("$var(s)")"#));
        assert_eq!(other.eval::<i64>(r#"KSR.pv.get("$shv(n)")"#), 12);
        assert_eq!(vm.eval::<i64>(r#"KSR.pv.unset("$var(s)")"#), 1);
        assert_eq!(
            vm.eval::<(Option<String>, String, bool)>(
                r#"KSR.pv.get("$var(s)"), KSR.pv.gete("$var(s)"), KSR.pv.is_null("$var(s)")"#
            ),
            (None, String::new(), true)
        );
    }

    #[test]
    fn unknown_and_read_only_names() {
        let vm = Vm::new();
        let r = vm.eval::<(Option<String>, String, bool, i64, i64, i64)>(
            r#"KSR.pv.get("$nope"), KSR.pv.gete("nope"), KSR.pv.is_null("$var()"),
               KSR.pv.sets("$nope", "x"), KSR.pv.sets("$rm", "BYE"), KSR.pv.sets("$ru", "sip:x@y")"#,
        );
        assert_eq!(
            r,
            (None, String::new(), true, -1, -1, -1),
            "$ru outside a route"
        );
    }

    #[test]
    fn sip_pvs_read_and_write_the_current_request() {
        let vm = Vm::new();
        let mut req = request("INVITE", "X-Foo: bar\r\n");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(String, String, String, i64, String, String)>(
                r#"KSR.pv.get("$rm"), KSR.pv.get("$ru"), KSR.pv.get("$ci"), KSR.pv.get("$sp"),
                   KSR.pv.get("$hdr(X-Foo)"), KSR.pv.get("$si")"#,
            )
        });
        assert_eq!(
            r,
            (
                "INVITE".into(),
                "sip:bob@example.com:5070".into(),
                "cid-1".into(),
                5061,
                "bar".into(),
                "192.0.2.1".into()
            )
        );
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(i64, i64, i64, String)>(
                r#"KSR.pv.sets("$rU", "carol"), KSR.pv.sets("$du", "sip:10.0.0.1:5080"),
                   KSR.pv.sets("$ru", "not a uri"), KSR.pv.get("$ru")"#,
            )
        });
        assert_eq!(r, (1, 1, -1, "sip:carol@example.com:5070".into()));
        assert_eq!(req.dst_uri(), Some("sip:10.0.0.1:5080"));
        // Outside the route the SIP pvs are null.
        assert!(vm.eval::<bool>(r#"KSR.pv.is_null("$ru")"#));
    }

    #[test]
    fn evapi_pvs_read_the_current_event() {
        let vm = Vm::new();
        assert!(vm.eval::<bool>(r#"KSR.pv.is_null("$evapi(conidx)")"#));
        let client = FakeClient::new(4);
        let r = vm.in_event(&client, Some("hi"), |vm| {
            vm.eval::<(String, String, i64, i64)>(
                r#"KSR.pv.get("$evapi(msg)"), KSR.pv.get("$evapi(srcaddr)"),
                   KSR.pv.get("$evapi(srcport)"), KSR.pv.get("$evapi(conidx)")"#,
            )
        });
        assert_eq!(r, ("hi".into(), "192.0.2.7".into(), 4000, 4));
        // A route resumed inside the event still sees it.
        let mut req = request("INVITE", "");
        let r = vm.in_event(&client, None, |vm| {
            vm.in_request(&mut req, |vm| {
                vm.eval::<(i64, String, bool)>(
                    r#"KSR.pv.get("$evapi(conidx)"), KSR.pv.get("$ci"), KSR.pv.is_null("$evapi(msg)")"#,
                )
            })
        });
        assert_eq!(r, (4, "cid-1".into(), true));
    }

    #[test]
    fn avp_and_xavp_live_for_the_route() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(i64, i64, String, i64, bool, i64, i64, Option<String>)>(
                r#"KSR.pv.sets("$avp(a)", "one"), KSR.pv.seti("$avp(s:a)", 2), KSR.pv.get("$avp(b)") or "nil",
                   KSR.pv.get("$avp(a)"), (KSR.pv.unset("$avp(a)") == 1) and KSR.pv.is_null("$avp(a)"),
                   KSR.pv.seti("$xavp(r=>k)", 5), KSR.pv.get("$xavp(r=>k)"), KSR.pv.get("$xavp(r=>x)")"#,
            )
        });
        assert_eq!(r, (1, 1, "nil".into(), 2, true, 1, 5, None));
        // A new route starts empty; outside a route they cannot be set.
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<bool>(r#"KSR.pv.is_null("$xavp(r=>k)")"#)
        });
        assert!(r);
        assert_eq!(vm.eval::<i64>(r#"KSR.pv.sets("$avp(a)", "x")"#), -1);
    }

    #[test]
    fn time_body_contact_and_credentials() {
        let vm = Vm::new();
        let mut req = request(
            "REGISTER",
            "Contact: <sip:alice@192.0.2.1:5061>;expires=60\r\n\
             Proxy-Authorization: Digest username=\"alice\", realm=\"a.example\"\r\n",
        );
        let before = super::unix_now();
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(i64, i64, i64, String, i64, String, String, String, i64)>(
                r#"KSR.pv.get("$TS"), KSR.pv.get("$Ts"), KSR.pv.get("$Ts"), KSR.pv.get("$rb"),
                   KSR.pv.get("$cl"), KSR.pv.get("$ct"), KSR.pv.get("$au"), KSR.pv.get("$ar"),
                   KSR.pv.get("$T_branch_idx")"#,
            )
        });
        assert!(r.0 >= before && r.1 >= before);
        assert_eq!(r.1, r.2, "$Ts is fixed for the message");
        assert_eq!(
            (r.3, r.4, r.5, r.6, r.7, r.8),
            (
                String::new(),
                0,
                "<sip:alice@192.0.2.1:5061>;expires=60".into(),
                "alice".into(),
                "a.example".into(),
                0
            )
        );
        // No credentials: null; outside a route $Ts and $T_branch_idx are.
        let mut plain = request("INVITE", "");
        let r = vm.in_request(&mut plain, |vm| vm.eval::<bool>(r#"KSR.pv.is_null("$au")"#));
        assert!(r);
        assert_eq!(
            vm.eval::<(bool, bool, bool)>(
                r#"KSR.pv.is_null("$Ts"), KSR.pv.is_null("$T_branch_idx"), KSR.pv.is_null("$TS")"#
            ),
            (true, true, false)
        );
    }

    #[test]
    fn names_are_parsed_once_up_to_the_cap() {
        let vm = Vm::new();
        vm.run(r#"for i = 1, 3 do KSR.pv.get("$ru"); KSR.pv.get("$var(a)") end"#);
        let cached = || {
            let names = vm.lua.app_data_ref::<NamesCell>().unwrap();
            let names = names.borrow();
            (names.by_text.len(), names.by_string.len())
        };
        assert_eq!(cached(), (2, 2));
        vm.run(&format!(
            r#"for i = 1, {} do KSR.pv.seti("$var(n" .. i .. ")", i) end"#,
            MAX_NAMES + 10
        ));
        assert_eq!(cached(), (MAX_NAMES, MAX_NAMES));
        // Past the cap, names still work.
        let last = format!(r#"KSR.pv.get("$var(n{})")"#, MAX_NAMES + 10);
        assert_eq!(vm.eval::<i64>(&last), (MAX_NAMES + 10) as i64);
    }

    /// Names found by the Lua string's address: names made at run time
    /// and dropped by the script, then a collection, then other names
    /// made the same way. Were the cache to keep only the address, a new
    /// name could land where an old one was and read the old one's value.
    #[test]
    fn names_by_address_stay_right_across_collections() {
        let vm = Vm::new();
        vm.run(r#"for i = 1, 1000 do KSR.pv.seti("$var(k" .. i .. ")", i) end"#);
        vm.run("collectgarbage() collectgarbage()");
        let unset = vm.eval::<i64>(
            r#"local n = 0
               for i = 1, 1000 do
                 if KSR.pv.get("$var(j" .. i .. ")") == nil then n = n + 1 end
               end
               return n"#,
        );
        assert_eq!(unset, 1000, "every $var(jN) is unset");
        let sum = vm.eval::<i64>(
            r#"local s = 0
               for i = 1, 1000 do s = s + KSR.pv.get("$var(k" .. i .. ")") end
               return s"#,
        );
        assert_eq!(sum, 1000 * 1001 / 2);
        // A name longer than Lua's short strings (40 bytes) has a new
        // address each time it is made: it is found by its text.
        let long = format!("$var({})", "x".repeat(50));
        let cached = || {
            let names = vm.lua.app_data_ref::<NamesCell>().unwrap();
            let n = names.borrow().by_string.len();
            n
        };
        let before = cached();
        vm.run(&format!(r#"KSR.pv.seti("{long}", 5)"#));
        assert_eq!(vm.eval::<i64>(&format!(r#"KSR.pv.get("{long}")"#)), 5);
        assert_eq!(cached(), before);
    }
}
