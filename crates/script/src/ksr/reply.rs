//! The checks every reply-building function makes before anything is sent
//! (`KSR.sl.send_reply`, `KSR.sl.sl_send_reply`, `KSR.tm.t_reply`): the
//! code is range-checked before it is narrowed (so 65736 is refused, not
//! sent as 200), the reason must be one line of text, and an ACK is never
//! replied to. They hold whatever the SIP crate checks itself.

use super::module::{lua_int, Cx, Fail};
use crate::ops::SipOps;
use mlua::Value;
use sip::{Method, Request, TmError};

/// Reply codes a script may send.
const CODES: std::ops::RangeInclusive<i64> = 100..=699;

/// Check a reply code and reason given by a script.
pub(crate) fn check(code: &Value, reason: &str) -> Result<u16, Fail> {
    let n = lua_int(code).ok_or_else(|| {
        Fail::new(format_args!(
            "reply code {} is not an integer",
            code.to_string().unwrap_or_else(|_| format!("{code:?}"))
        ))
    })?;
    if !CODES.contains(&n) {
        return Err(Fail::new(format_args!(
            "reply code {n} is outside 100 to 699; nothing sent"
        )));
    }
    if reason.contains(['\r', '\n', '\0']) {
        return Err(Fail::new(format_args!(
            "reply reason {reason:?} contains CR, LF or NUL; nothing sent"
        )));
    }
    u16::try_from(n).map_err(|_| Fail::new(format_args!("reply code {n} out of range")))
}

/// Send a checked reply to the current request with `send`: 1, or a
/// [`Fail`] naming why nothing was sent.
pub(crate) fn send(
    cx: &Cx<'_>,
    code: &Value,
    reason: &str,
    send: impl FnOnce(&dyn SipOps, &mut Request, u16, &str) -> Result<(), TmError>,
) -> Result<i64, Fail> {
    let code = check(code, reason)?;
    let host = cx.sip()?;
    cx.request(|req| {
        if req.msg().method() == Some(&Method::Ack) {
            return Err(Fail::new("an ACK is never replied to; nothing sent"));
        }
        Ok(send(host, req, code, reason)?)
    })??;
    cx.mark_handled();
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::check;
    use mlua::Value;

    #[test]
    fn codes_are_checked_before_narrowing() {
        assert_eq!(check(&Value::Integer(200), "OK").ok(), Some(200));
        assert_eq!(check(&Value::Number(486.0), "Busy").ok(), Some(486));
        for bad in [65736, 99, 700, -200, 0] {
            assert!(check(&Value::Integer(bad), "x").is_err(), "{bad}");
        }
        assert!(check(&Value::Number(200.5), "x").is_err());
        assert!(check(&Value::Nil, "x").is_err());
        for bad in ["a\r\nX-Evil: 1", "a\nb", "a\0b", "ok\r"] {
            assert!(check(&Value::Integer(200), bad).is_err(), "{bad:?}");
        }
    }
}
