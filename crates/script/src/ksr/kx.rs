//! Kamailio's kemix getters, `KSR.kx.*`: quick reads of the current SIP
//! message without naming a pseudo-variable.
//!
//! A string getter comes in up to three forms, as in Kamailio:
//! `get_x` gives nil when there is no value, `gete_x` gives `""` and
//! `getw_x` gives `"<null>"` (for printing). Integer getters give
//! Kamailio's value for "none" (`get_status`: -1 for a request,
//! `get_srcport`: 0, `get_msglen`: -1...). Outside a SIP route every
//! getter gives its "none" value, without a log line. (Kamailio has no
//! `geti_*` getters: integers come from the `get_*` forms.)
//!
//! We have no configuration defines: `get_def(name)` is `""`,
//! `get_defn(name)` 0, `ifdef(name)` false and `ifndef(name)` true (both
//! booleans, as in Kamailio), so a ported script takes its "not defined"
//! branches. `get_env(name)` and `get_envn(name)` read the environment.

use super::module::{Cx, Fail, Module};
use super::out::Out;
use super::pv::unix_now;
use crate::pv::{get_sip, MsgView, Pv, PvValue};
use crate::pvx::{auth_attr, contact_uri, source_uri, AuthAttr};

/// A read of the current message.
type Read = fn(&dyn MsgView) -> Option<PvValue>;

/// An integer read of the current message.
type ReadInt = fn(&dyn MsgView) -> Option<i64>;

/// What a string getter gives when there is no value.
#[derive(Clone, Copy)]
enum Null {
    Nil,
    Empty,
    Print,
}

/// Getters with the three forms: (name after `get_`, read).
const TRIPLES: [(&str, Read); 11] = [
    ("ruser", |v| get_sip(&Pv::RuriUser, v)),
    ("rhost", |v| get_sip(&Pv::RuriHost, v)),
    ("fuser", |v| get_sip(&Pv::FromUser, v)),
    ("fhost", |v| get_sip(&Pv::FromHost, v)),
    ("tuser", |v| get_sip(&Pv::ToUser, v)),
    ("thost", |v| get_sip(&Pv::ToHost, v)),
    ("duri", |v| get_sip(&Pv::DstUri, v)),
    ("cturi", |v| contact_uri(v).map(PvValue::Str)),
    ("ua", |v| get_sip(&Pv::UserAgent, v)),
    ("au", |v| auth_attr(v, AuthAttr::User).map(PvValue::Str)),
    ("body", |v| {
        let b = v.msg().body();
        (!b.is_empty()).then(|| PvValue::from(b))
    }),
];

/// String getters with one form: (full name, read, null form).
const SINGLES: [(&str, Read, Null); 14] = [
    ("get_ruri", |v| get_sip(&Pv::Ruri, v), Null::Nil),
    (
        "get_ouri",
        |v| v.msg().request_uri_raw().map(PvValue::from),
        Null::Nil,
    ),
    ("get_furi", |v| get_sip(&Pv::FromUri, v), Null::Nil),
    ("get_turi", |v| get_sip(&Pv::ToUri, v), Null::Nil),
    (
        "get_nhuri",
        |v| get_sip(&Pv::DstUri, v).or_else(|| get_sip(&Pv::Ruri, v)),
        Null::Nil,
    ),
    ("get_srcip", |v| get_sip(&Pv::SrcIp, v), Null::Nil),
    (
        "get_srcuri",
        |v| source_uri(v).map(|s| PvValue::from(s.as_str())),
        Null::Empty,
    ),
    ("get_rcvip", |v| get_sip(&Pv::LocalIp, v), Null::Nil),
    ("get_rcvadvip", |v| get_sip(&Pv::LocalIp, v), Null::Nil),
    ("get_proto", |v| get_sip(&Pv::Proto, v), Null::Empty),
    ("get_method", |v| get_sip(&Pv::Method, v), Null::Nil),
    (
        "gets_status",
        |v| {
            v.msg()
                .status()
                .map(|s| PvValue::from(s.to_string().as_str()))
        },
        Null::Nil,
    ),
    ("get_callid", |v| get_sip(&Pv::CallId, v), Null::Empty),
    ("get_msgbuf", |v| get_sip(&Pv::Buffer, v), Null::Empty),
];

/// Integer getters: (full name, read, value when none).
const INTS: [(&str, ReadInt, i64); 8] = [
    ("get_srcport", |v| Some(v.source()?.1.port().into()), 0),
    ("get_rcvport", |v| Some(v.source()?.2.port().into()), 0),
    ("get_rcvadvport", |v| Some(v.source()?.2.port().into()), 0),
    (
        "get_protoid",
        // Kamailio's protocol numbers.
        |v| Some(if v.source()?.0 == "udp" { 1 } else { 2 }),
        -1,
    ),
    ("get_status", |v| v.msg().status().map(i64::from), -1),
    ("get_bodylen", |v| Some(v.msg().body().len() as i64), 0),
    ("get_msglen", |v| Some(v.msg().buffer().len() as i64), -1),
    (
        "get_msgtype",
        |v| Some(if v.msg().is_request() { 1 } else { 2 }),
        -1,
    ),
];

/// Read the current message with `read` (None outside a SIP route).
fn read<T>(cx: &Cx<'_>, read: impl FnOnce(&dyn MsgView) -> Option<T>) -> Option<T> {
    cx.here().with_view(read).ok().flatten()
}

fn string(cx: &Cx<'_>, v: Option<PvValue>, null: Null) -> Result<Out, Fail> {
    let v = match (v, null) {
        (Some(v), _) => Some(v),
        (None, Null::Nil) => None,
        (None, Null::Empty) => Some(PvValue::from("")),
        (None, Null::Print) => Some(PvValue::from("<null>")),
    };
    Ok(cx.value(v)?)
}

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    for (name, f) in TRIPLES {
        for (prefix, null) in [
            ("get_", Null::Nil),
            ("gete_", Null::Empty),
            ("getw_", Null::Print),
        ] {
            m.func(&format!("{prefix}{name}"), move |cx, ()| {
                string(cx, read(cx, f), null)
            })?;
        }
    }
    for (name, f, null) in SINGLES {
        m.func(name, move |cx, ()| string(cx, read(cx, f), null))?;
    }
    for (name, f, none) in INTS {
        m.func(name, move |cx, ()| Ok(read(cx, f).unwrap_or(none)))?;
    }
    // The TCP connection id: ours are not Kamailio's, but a script that
    // logs or compares them gets a stable number per connection.
    m.func("get_conid", |cx, ()| {
        let conn = cx.request(|r| r.source().conn).ok().flatten();
        Ok(conn.and_then(|c| i64::try_from(c).ok()).unwrap_or(-1))
    })?;
    m.func("get_timestamp", |_, ()| Ok(unix_now()))?;
    m.func("get_def", |cx, _name: String| string(cx, None, Null::Empty))?;
    m.func("get_defn", |_, _name: String| Ok(0))?;
    m.func("ifdef", |_, _name: String| Ok(false))?;
    m.func("ifndef", |_, _name: String| Ok(true))?;
    m.func("get_env", |cx, name: String| {
        let v = std::env::var(&name).ok();
        string(cx, v.map(|s| PvValue::from(s.as_str())), Null::Empty)
    })?;
    m.func("get_envn", |_, name: String| {
        Ok(std::env::var(&name)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0))
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, Vm};
    use mlua::Value;

    #[test]
    fn string_getters_read_the_request() {
        let vm = Vm::new();
        let mut req = request(
            "INVITE",
            "Contact: <sip:alice@192.0.2.1:5061;ob>;expires=60\r\n\
             Authorization: Digest username=\"alice@a.example\", realm=\"a.example\"\r\n\
             User-Agent: phone 1\r\n",
        );
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(
                String,
                String,
                String,
                String,
                String,
                String,
                String,
                String,
            )>(
                r#"KSR.kx.get_ruri(), KSR.kx.get_ruser(), KSR.kx.get_rhost(), KSR.kx.get_furi(),
                   KSR.kx.get_fuser(), KSR.kx.get_thost(), KSR.kx.get_cturi(), KSR.kx.get_au()"#,
            )
        });
        assert_eq!(
            r,
            (
                "sip:bob@example.com:5070".into(),
                "bob".into(),
                "example.com".into(),
                "sip:alice@a.example".into(),
                "alice".into(),
                "example.com".into(),
                "sip:alice@192.0.2.1:5061;ob".into(),
                "alice".into()
            )
        );
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(String, String, String, String, String, String, String)>(
                r#"KSR.kx.get_srcip(), KSR.kx.get_ua(), KSR.kx.get_callid(), KSR.kx.get_method(),
                   KSR.kx.get_proto(), KSR.kx.get_srcuri(), KSR.kx.get_rcvip()"#,
            )
        });
        assert_eq!(
            r,
            (
                "192.0.2.1".into(),
                "phone 1".into(),
                "cid-1".into(),
                "INVITE".into(),
                "udp".into(),
                "sip:192.0.2.1:5061".into(),
                "127.0.0.1".into()
            )
        );
    }

    #[test]
    fn null_forms_are_nil_empty_and_printable() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(Value, String, String, Value, String, Value, String)>(
                r#"KSR.kx.get_duri(), KSR.kx.gete_duri(), KSR.kx.getw_duri(), KSR.kx.get_ua(),
                   KSR.kx.gete_ua(), KSR.kx.get_body(), KSR.kx.getw_au()"#,
            )
        });
        assert!(r.0.is_nil() && r.3.is_nil() && r.5.is_nil());
        assert_eq!(
            (r.1, r.2, r.4, r.6),
            ("".into(), "<null>".into(), "".into(), "<null>".into())
        );
        // Outside a route: the same "none" values, no error.
        let r = vm.eval::<(Value, String, i64, i64, String)>(
            r#"KSR.kx.get_ruri(), KSR.kx.gete_fhost(), KSR.kx.get_srcport(), KSR.kx.get_status(),
               KSR.kx.get_callid()"#,
        );
        assert!(r.0.is_nil());
        assert_eq!((r.1, r.2, r.3, r.4), ("".into(), 0, -1, "".into()));
    }

    #[test]
    fn integer_getters_and_defines() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        let len = req.msg().buffer().len() as i64;
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(i64, i64, i64, i64, i64, i64, i64, i64)>(
                r#"KSR.kx.get_srcport(), KSR.kx.get_rcvport(), KSR.kx.get_status(),
                   KSR.kx.get_bodylen(), KSR.kx.get_msglen(), KSR.kx.get_msgtype(),
                   KSR.kx.get_protoid(), KSR.kx.get_conid()"#,
            )
        });
        assert_eq!(r, (5061, 5060, -1, 0, len, 1, 1, -1));
        let now = super::unix_now();
        let ts = vm.eval::<i64>("KSR.kx.get_timestamp()");
        // Read after `now`: never earlier (no upper bound: no timing asserts).
        assert!(ts >= now, "{ts} vs {now}");
        let r = vm.eval::<(bool, bool, String, i64)>(
            r#"KSR.kx.ifdef("WITH_RTPENGINE"), KSR.kx.ifndef("WITH_RTPENGINE"),
               KSR.kx.get_def("X"), KSR.kx.get_defn("X")"#,
        );
        assert_eq!(r, (false, true, String::new(), 0));
        let r = vm.eval::<(String, i64)>(
            r#"KSR.kx.get_env("EVAPI_TEST_SURELY_UNSET"), KSR.kx.get_envn("EVAPI_TEST_SURELY_UNSET")"#,
        );
        assert_eq!(r, (String::new(), 0));
    }
}
