//! The one gate every reply we build passes: stateless ones
//! ([`crate::SipHandle::sl_reply`]), the router's on a transaction
//! ([`crate::SipHandle::t_reply`]) and the table's own (100, 408, 487,
//! 503...). A reply is checked before anything is created or written, so
//! a refused one leaves no trace on the wire.
//!
//! Why: the status code, the reason phrase and the router's extra header
//! lines can come from a script, and through it from an event socket
//! client. A CR or LF in them would let that text end our header line and
//! write headers (or a whole message) of its choosing; a NUL truncates
//! the message in many C parsers downstream. A code outside 100..=699 is
//! no SIP status, and one that is narrowed to 16 bits before the check
//! could turn 65736 into 200, so the check takes the caller's value whole.

use bytes::Bytes;

use super::TmError;
use crate::message::Method;
use crate::request::Request;

/// Refuse what must not become a reply to `req`: any reply to an ACK
/// (RFC 3261 §17: an ACK is never answered), a status outside
/// 100..=699, and a CR, LF or NUL in the reason phrase or in any header
/// line set with [`Request::append_to_reply`] / [`Request::set_reply_body`]
/// (whose CRLF terminators we write ourselves). Returns the code, narrowed
/// only once it is known to fit.
///
/// [`crate::SipHandle::sl_reply`] and [`crate::SipHandle::t_reply`] run it
/// themselves; it is public so that a stand-in for the host (in a router's
/// unit tests) refuses exactly what the host refuses.
pub fn check_reply(req: &Request, code: i64, reason: &str) -> Result<u16, TmError> {
    if req.msg().method() == Some(&Method::Ack) {
        return Err(TmError::ReplyToAck);
    }
    let code = match u16::try_from(code) {
        Ok(c @ 100..=699) => c,
        _ => return Err(TmError::BadStatus { code }),
    };
    clean("reason phrase", reason)?;
    let (headers, content_type) = req.reply_parts();
    for (name, value) in headers {
        if unsafe_text(name) || unsafe_text(value) {
            return Err(TmError::BadReplyText {
                what: "reply header",
                text: format!("{name}: {value}"),
            });
        }
    }
    if let Some(ct) = content_type {
        clean("reply Content-Type", ct)?;
    }
    Ok(code)
}

/// Check, then build a reply to `req` with a To tag when one is given.
/// `routed`: with the router's reply headers and body (its own replies),
/// or without (the table's own: 100, 408, 487, 503...).
pub(crate) fn build_reply(
    req: &Request,
    code: u16,
    reason: &str,
    tag: Option<&[u8]>,
    routed: bool,
) -> Result<Bytes, TmError> {
    let code = check_reply(req, code.into(), reason)?;
    if routed {
        req.build_reply(code, reason, tag)
    } else {
        let msg = req.msg();
        msg.response(code, reason.as_bytes(), tag, &[])
            // A broken To cannot take a tag: answer without one rather
            // than not at all.
            .or_else(|_| msg.response(code, reason.as_bytes(), None, &[]))
    }
    .map_err(TmError::BadRequest)
}

fn unsafe_text(text: &str) -> bool {
    text.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

fn clean(what: &'static str, text: &str) -> Result<(), TmError> {
    if unsafe_text(text) {
        return Err(TmError::BadReplyText {
            what,
            text: text.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::SipMessage;
    use crate::request::{Source, Transport};

    fn req(method: &str) -> Request {
        let text = format!(
            "{method} sip:bob@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: <sip:a@a>;tag=1\r\nTo: <sip:b@b>\r\nCall-ID: c\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        );
        Request::new(
            SipMessage::parse(Bytes::from(text)).unwrap(),
            Source {
                transport: Transport::Udp,
                remote: "127.0.0.1:5070".parse().unwrap(),
                local: "127.0.0.1:5060".parse().unwrap(),
                conn: None,
            },
        )
    }

    #[test]
    fn codes_outside_sip_statuses_are_refused_whole() {
        let r = req("INVITE");
        for code in [99, 700, 65_736, 42, 0, -200, i64::MAX, 65_535 + 201] {
            assert_eq!(
                check_reply(&r, code, "OK"),
                Err(TmError::BadStatus { code }),
                "{code}"
            );
        }
        for code in [100, 180, 200, 404, 699] {
            assert_eq!(check_reply(&r, code, "Fine"), Ok(code as u16));
        }
        assert_eq!(
            TmError::BadStatus { code: 65_736 }.to_string(),
            "reply status 65736 is not a SIP status (100 to 699)"
        );
    }

    #[test]
    fn reason_with_line_breaks_or_nul_is_refused() {
        let r = req("OPTIONS");
        for reason in ["OK\r\nX-Injected: yes", "OK\nX", "OK\rX", "O\0K"] {
            assert_eq!(
                check_reply(&r, 200, reason),
                Err(TmError::BadReplyText {
                    what: "reason phrase",
                    text: reason.to_owned()
                })
            );
        }
        let e = check_reply(&r, 200, "OK\r\nX-Injected: yes").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"reason phrase "OK\r\nX-Injected: yes" contains CR, LF or NUL"#
        );
        assert_eq!(check_reply(&r, 200, ""), Ok(200));
    }

    #[test]
    fn header_text_is_one_clean_line() {
        let mut r = req("OPTIONS");
        // One line, its CRLF terminator optional: we write our own.
        r.append_to_reply("X-A: 1\r\n").unwrap();
        r.append_to_reply("X-B: 2").unwrap();
        assert_eq!(check_reply(&r, 200, "OK"), Ok(200));
        for bad in [
            "X-C: 3\r\nX-Injected: yes",
            "X-C: 3\nX",
            "X-C: 3\r\n\r\n",
            "X-C: a\0b",
            "X-C\0: 3",
        ] {
            assert!(r.append_to_reply(bad).is_err(), "{bad:?}");
        }
        assert!(r.set_reply_body("text/plain\0", b"x").is_err());
    }

    #[test]
    fn an_ack_is_never_answered() {
        let r = req("ACK");
        assert_eq!(check_reply(&r, 200, "OK"), Err(TmError::ReplyToAck));
        assert_eq!(
            build_reply(&r, 408, "Request Timeout", None, false),
            Err(TmError::ReplyToAck)
        );
    }
}
