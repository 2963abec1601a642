//! Headers of the current request: `KSR.hdr.append(line)` (to the request
//! as relayed), `KSR.hdr.append_to_reply(line)` (to the replies we build
//! for it), `KSR.hdr.remove(name)`, `KSR.hdr.is_present(name)` and
//! `KSR.hdr.get(name)`; they see each other's edits.
//!
//! A line is one whole header, `"Name: value"`, as Kamailio takes it: with
//! exactly one trailing CRLF or none. Any other CR, LF or NUL in it is
//! refused by the SIP crate's request editor (-1 and a log line), so a
//! script cannot smuggle a second header or end the header block.

use super::arg::Text;
use super::module::{kemi_bool, Module};
use super::out::Out;
use mlua::{LuaString, Value};

pub(super) fn register(m: &Module<'_>) -> mlua::Result<()> {
    m.func("append", |cx, line: LuaString| {
        let line = line.to_str()?;
        cx.request(|req| req.append_header(&line))??;
        Ok(1)
    })?;
    m.func("append_to_reply", |cx, line: String| {
        cx.request(|req| req.append_to_reply(&line))??;
        Ok(1)
    })?;
    m.func("remove", |cx, name: LuaString| {
        let name = name.to_str()?;
        Ok(kemi_bool(cx.request(|req| req.remove_header(&name))? > 0))
    })?;
    m.func("is_present", |cx, name: LuaString| {
        let name = name.to_str()?;
        Ok(kemi_bool(cx.request(|req| req.has_header(&name))?))
    })?;
    m.func("get", |cx, name: Text| {
        let name = name.to_str()?;
        Ok(cx.request(|req| match req.header(name) {
            Some(v) => cx.text(v),
            None => Ok(Out::Value(Value::Nil)),
        })??)
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, Vm};

    #[test]
    fn edits_are_seen_by_each_other() {
        let vm = Vm::new();
        let mut req = request("INVITE", "X-Old: 1\r\n");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(i64, i64, i64, String, i64, i64, i64, i64)>(
                r#"KSR.hdr.is_present("X-Old"), KSR.hdr.append("X-New: two\r\n"),
                   KSR.hdr.is_present("x-new"), KSR.hdr.get("X-New"),
                   KSR.hdr.remove("X-Old"), KSR.hdr.is_present("X-Old"),
                   KSR.hdr.remove("X-Old"), KSR.hdr.append_to_reply("X-Reply: r")"#,
            )
        });
        assert_eq!(r, (1, 1, 1, "two".into(), 1, -1, -1, 1));
        assert_eq!(req.header("X-New"), Some(&b"two"[..]));
        assert!(!req.has_header("X-Old"));
    }

    #[test]
    fn lines_with_inner_cr_lf_or_nul_are_refused() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(i64, i64, i64, i64, i64, i64)>(
                r#"KSR.hdr.append("X-A: 1\r\nX-B: 2\r\n"), KSR.hdr.append("X-A: 1\n"),
                   KSR.hdr.append("X-A: 1\0"), KSR.hdr.append("X-A: 1\r\n\r\n"),
                   KSR.hdr.append_to_reply("X-A: 1\r\nX-B: 2"), KSR.hdr.append("X-C: 3")"#,
            )
        });
        assert_eq!(r, (-1, -1, -1, -1, -1, 1));
        assert!(!req.has_header("X-A") && !req.has_header("X-B"));
        // Outside a request: -1, and get is nil.
        assert_eq!(
            vm.eval::<(i64, i64, Option<String>)>(
                r#"KSR.hdr.append("X: y"), KSR.hdr.is_present("X"), KSR.hdr.get("X")"#
            ),
            (-1, -1, None)
        );
    }
}
