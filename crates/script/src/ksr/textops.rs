//! Kamailio's textops tests, `KSR.textops.*`, 1 or -1:
//!
//! - `has_body()`, `has_body_type("application/sdp")`: a body (Content-Length
//!   above 0), of that type when given (compared without parameters,
//!   ignoring case; no Content-Type counts as `application/sdp`, as RFC
//!   3261 and Kamailio have it).
//! - `is_present_hf(name)`: a header of that name is present (seeing
//!   routing's edits; compact forms match).
//! - `search(re)`, `search_body(re)`: the regular expression matches the
//!   message as received, or its body. As Kamailio's, matching ignores
//!   case, `.` does not match a line end and `^`/`$` match at line
//!   starts and before each LF (so a SIP line ends with `\r$`, as under
//!   Kamailio's POSIX `REG_NEWLINE`); the syntax is the Rust `regex`
//!   crate's, close to POSIX extended (no backreferences). An empty
//!   expression matches; one that does not compile is -1 with a log line.
//!
//! Compiled expressions are kept per VM, up to [`MAX_CACHED`], so a
//! script's fixed patterns compile once.

use super::module::{kemi_bool, Cx, Fail, Module};
use regex::bytes::{Regex, RegexBuilder};
use std::collections::HashMap;

/// Most compiled expressions kept per VM (past it, compiled per use).
pub(crate) const MAX_CACHED: usize = 256;

/// Most memory one compiled expression may take: a script cannot make
/// the process build a huge automaton.
const SIZE_LIMIT: usize = 1 << 20;

#[derive(Default)]
struct Cache(HashMap<String, Regex>);

pub(super) fn compiled(cx: &Cx<'_>, re: &str) -> Result<Regex, Fail> {
    if let Some(r) = cx
        .lua
        .app_data_ref::<Cache>()
        .and_then(|c| c.0.get(re).cloned())
    {
        return Ok(r);
    }
    let r = RegexBuilder::new(re)
        .case_insensitive(true)
        .multi_line(true)
        .size_limit(SIZE_LIMIT)
        .build()
        .map_err(|e| Fail::new(format_args!("bad regular expression {re:?}: {e}")))?;
    if let Some(mut c) = cx.lua.app_data_mut::<Cache>() {
        if c.0.len() < MAX_CACHED {
            c.0.insert(re.to_owned(), r.clone());
        }
    }
    Ok(r)
}

fn search(cx: &Cx<'_>, re: &str, body_only: bool) -> Result<i64, Fail> {
    if re.is_empty() {
        return Ok(1);
    }
    let r = compiled(cx, re)?;
    Ok(kemi_bool(cx.here().with_view(|v| {
        let m = v.msg();
        r.is_match(if body_only { m.body() } else { m.buffer() })
    })?))
}

/// `type/subtype` of a Content-Type value, lower-cased, parameters cut.
fn mime(v: &[u8]) -> Vec<u8> {
    let end = v.iter().position(|&b| b == b';').unwrap_or(v.len());
    v[..end]
        .iter()
        .filter(|b| !b.is_ascii_whitespace())
        .map(u8::to_ascii_lowercase)
        .collect()
}

fn has_body(cx: &Cx<'_>, want: Option<&str>) -> Result<i64, Fail> {
    Ok(kemi_bool(cx.here().with_view(|v| {
        if v.msg().content_length().unwrap_or(0) == 0 {
            return false;
        }
        let Some(want) = want.filter(|w| !w.is_empty()) else {
            return true;
        };
        let ct = v
            .header("Content-Type")
            .map_or_else(|| b"application/sdp".to_vec(), mime);
        ct == mime(want.as_bytes())
    })?))
}

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.lua().set_app_data(Cache::default());
    m.func("has_body", |cx, ()| has_body(cx, None))?;
    m.func("has_body_type", |cx, t: String| has_body(cx, Some(&t)))?;
    m.func("is_present_hf", |cx, name: String| {
        Ok(kemi_bool(
            cx.here().with_view(|v| v.header(&name).is_some())?,
        ))
    })?;
    m.func("search", |cx, re: String| search(cx, &re, false))?;
    m.func("search_body", |cx, re: String| search(cx, &re, true))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, Vm};
    use super::{Cache, MAX_CACHED};

    #[test]
    fn search_matches_the_message_ignoring_case() {
        let vm = Vm::new();
        let mut req = request("INVITE", "X-Tag: Blue\r\n");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(i64, i64, i64, i64, i64, i64)>(
                r#"KSR.textops.search("^x-tag: *blue\r$"), KSR.textops.search("green"),
                   KSR.textops.search(""), KSR.textops.search("(unclosed"),
                   KSR.textops.search_body("blue"), KSR.textops.search("tag:.*call-id")"#,
            )
        });
        // `.` does not cross a line end.
        assert_eq!(r, (1, -1, 1, -1, -1, -1));
        // `$` is before the LF, so a SIP line ends with `\r$`, as in
        // Kamailio.
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<i64>(r#"KSR.textops.search("blue$")"#)
        });
        assert_eq!(r, -1);
    }

    #[test]
    fn compiled_expressions_are_kept_up_to_the_cap() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        vm.in_request(&mut req, |vm| {
            vm.run(&format!(
                r#"for i = 1, {} do KSR.textops.search("x" .. i) end"#,
                MAX_CACHED + 5
            ))
        });
        assert_eq!(vm.lua.app_data_ref::<Cache>().unwrap().0.len(), MAX_CACHED);
    }

    #[test]
    fn body_and_header_tests() {
        let vm = Vm::new();
        let mut plain = request("INVITE", "Subject: hi\r\n");
        let r = vm.in_request(&mut plain, |vm| {
            vm.eval::<(i64, i64, i64, i64)>(
                r#"KSR.textops.has_body(), KSR.textops.is_present_hf("subject"),
                   KSR.textops.is_present_hf("s"), KSR.textops.is_present_hf("X-None")"#,
            )
        });
        assert_eq!(r, (-1, 1, 1, -1));
        let body = "v=0\r\n";
        let raw = format!(
            "MESSAGE sip:bob@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.1:5061;branch=z9hG4bK1\r\n\
             From: <sip:a@a.example>;tag=1\r\nTo: <sip:bob@example.com>\r\n\
             Call-ID: c\r\nCSeq: 1 MESSAGE\r\n\
             Content-Type: Text/Plain ; charset=utf-8\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let msg = sip::SipMessage::parse(bytes::Bytes::from(raw)).unwrap();
        let mut req = sip::Request::new(msg, plain.source().clone());
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(i64, i64, i64, i64, i64)>(
                r#"KSR.textops.has_body(), KSR.textops.has_body_type("text/plain"),
                   KSR.textops.has_body_type("application/sdp"), KSR.textops.has_body_type(""),
                   KSR.textops.search_body("^V=0\r$")"#,
            )
        });
        assert_eq!(r, (1, 1, -1, 1, 1));
    }
}
