//! What every reply-building function shares (`KSR.sl.send_reply`,
//! `KSR.sl.sl_send_reply`, `KSR.tm.t_reply`): the code is taken from Lua as
//! a whole integer and handed to the SIP host unnarrowed, so 65736 reaches
//! the host's one check ([`sip::check_reply`]: 100 to 699, no CR, LF or NUL
//! in the reason or reply headers, no reply to an ACK) as 65736, not as
//! 200. A refusal comes back as a [`Fail`]: -1 and a log line naming the
//! function and the value.

use super::module::{lua_int, Cx, Fail};
use crate::ops::SipOps;
use mlua::Value;
use sip::{Request, TmError};

/// The script's reply code as a whole integer (not yet range-checked:
/// that is the host's job).
pub(crate) fn code(code: &Value) -> Result<i64, Fail> {
    lua_int(code).ok_or_else(|| {
        Fail::new(format_args!(
            "reply code {} is not an integer; nothing sent",
            code.to_string().unwrap_or_else(|_| format!("{code:?}"))
        ))
    })
}

/// Send a reply to the current request with `send`: 1, or a [`Fail`]
/// naming why nothing was sent.
pub(crate) fn send(
    cx: &Cx<'_>,
    code: &Value,
    reason: &str,
    send: impl FnOnce(&dyn SipOps, &mut Request, i64, &str) -> Result<(), TmError>,
) -> Result<i64, Fail> {
    let code = self::code(code)?;
    let host = cx.sip()?;
    cx.request(|req| send(host, req, code, reason))??;
    cx.mark_handled();
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{request, Vm};
    use super::code;
    use mlua::Value;

    #[test]
    fn codes_must_be_whole_numbers() {
        assert_eq!(code(&Value::Integer(65736)).ok(), Some(65736));
        assert_eq!(code(&Value::Number(486.0)).ok(), Some(486));
        assert!(code(&Value::Number(200.5)).is_err());
        assert!(code(&Value::Nil).is_err());
    }

    /// Through KSR, against the fake host that runs the host's own gate:
    /// every refusal is -1 and nothing is recorded as sent.
    #[test]
    fn refused_replies_are_minus_one_and_unsent() {
        let vm = Vm::new();
        let mut req = request("INVITE", "");
        let r = vm.in_request(&mut req, |vm| {
            vm.eval::<(i64, i64, i64, i64, i64, i64)>(
                r#"KSR.sl.send_reply(65736, "x"), KSR.sl.send_reply(42, "x"),
                   KSR.sl.send_reply(700, "x"), KSR.sl.send_reply(200, "OK\r\nX-Evil: 1"),
                   KSR.tm.t_reply(486, "Busy\0"), KSR.sl.send_reply(486, "Busy Here")"#,
            )
        });
        assert_eq!(r, (-1, -1, -1, -1, -1, 1));
        assert_eq!(vm.sip.take(), vec!["sl_reply 486 Busy Here".to_string()]);
        let mut ack = request("ACK", "");
        let r = vm.in_request(&mut ack, |vm| {
            vm.eval::<i64>(r#"KSR.sl.send_reply(200, "OK")"#)
        });
        assert_eq!(r, -1, "an ACK is never replied to");
    }
}
