//! What an operator does to the table from outside the call flow (the
//! `tm.list` and `tm.reply` RPC methods): list the transactions, one shard
//! at a time, and answer one by its index and label.
//!
//! Listing copies a small summary of each transaction of one shard under
//! the table lock and lets go before the next shard, so a table of
//! hundreds of thousands of transactions never holds the lock for the
//! whole walk.

use super::server::ServerState;
use super::sharded::SHARDS;
use super::{check_reply, no_tx, tx_id, Action, Tm, TmError};
use crate::request::{Request, TxRef};

/// How many shards a walk over the table takes (one lock each).
pub(crate) const LIST_SHARDS: usize = SHARDS;

/// One transaction as `tm.list` shows it: copied out of the table, so
/// nothing of it is borrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxSummary {
    pub tref: TxRef,
    pub method: String,
    pub call_id: String,
    pub from: String,
    pub to: String,
    pub cseq: String,
    pub ruri: String,
    /// `suspended`, `relaying`, `failure-route`, `proceeding`,
    /// `completed` or `confirmed`.
    pub state: &'static str,
    /// Milliseconds since it was created.
    pub age_ms: u64,
    /// Final (or last provisional) code sent upstream; 0: none yet.
    pub code: u16,
    /// Branches relayed so far.
    pub branches: u32,
    pub canceled: bool,
}

/// The extra parts of a reply given by an operator (`tm.reply`): header
/// lines as one text, and a body.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReplyExtra<'a> {
    /// The To tag to put on the reply; empty: ours.
    pub to_tag: &'a str,
    /// `Name: value` lines, each ended by CRLF (the last one's optional).
    pub headers: &'a str,
    /// The body; needs a `Content-Type` line in `headers`.
    pub body: &'a str,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Tm {
    /// Append the summaries of shard `shard` (0..[`LIST_SHARDS`]) whose
    /// state is `state` (all when `None`) to `out`, at most `max` in all.
    pub(crate) fn list_shard(
        &self,
        shard: usize,
        state: Option<&str>,
        now: u64,
        max: usize,
        out: &mut Vec<TxSummary>,
    ) {
        for tx in self.txs.shard_values(shard) {
            if out.len() >= max {
                return;
            }
            let st = match tx.state {
                ServerState::Proceeding if tx.stash.is_some() => "suspended",
                ServerState::Proceeding if tx.relaying() => "relaying",
                ServerState::Proceeding if tx.in_failure => "failure-route",
                ServerState::Proceeding => "proceeding",
                ServerState::Completed => "completed",
                ServerState::Confirmed => "confirmed",
            };
            if state.is_some_and(|s| s != st) {
                continue;
            }
            let m = tx.req.msg();
            out.push(TxSummary {
                tref: tx.tref,
                method: m.method().map(|x| text(x.as_bytes())).unwrap_or_default(),
                call_id: m.call_id().map(text).unwrap_or_default(),
                from: m.header("From").map(text).unwrap_or_default(),
                to: m.header("To").map(text).unwrap_or_default(),
                cseq: m.header("CSeq").map(text).unwrap_or_default(),
                ruri: text(tx.req.ruri()),
                state: st,
                age_ms: now.saturating_sub(tx.created),
                code: tx.code,
                branches: tx.branches,
                canceled: tx.canceled,
            });
        }
    }

    /// Answer transaction `t` with `code` and `reason` (Kamailio's
    /// `tm.reply`): a provisional, or a final that ends a suspension or a
    /// pending branch (cancelled downstream). The same gate as the
    /// router's replies ([`check_reply`]) runs on the code, the reason,
    /// each header line and the body's Content-Type before anything is
    /// changed: a refused reply sends nothing and leaves the transaction
    /// as it was.
    pub(crate) fn reply_by_id(
        &mut self,
        t: TxRef,
        code: i64,
        reason: &str,
        extra: ReplyExtra<'_>,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), TmError> {
        let tag = self.to_tag(t);
        let tx = self.txs.get_mut(&tx_id(t)).ok_or_else(|| no_tx(t))?;
        // The reply is built from a copy carrying the operator's parts, so
        // a refusal leaves the transaction's own request untouched.
        let mut with_parts = tx.req.clone();
        add_reply_parts(&mut with_parts, extra.headers, extra.body)?;
        let code = check_reply(&with_parts, code, reason)?;
        if tx.state != ServerState::Proceeding {
            return Err(TmError::AlreadyReplied {
                index: t.index,
                label: t.label,
                code: tx.code,
            });
        }
        let tag = if extra.to_tag.is_empty() {
            tag
        } else {
            check_to_tag(extra.to_tag)?;
            extra.to_tag.to_owned()
        };
        tx.req.take_reply_parts(&with_parts);
        if code < 200 {
            let r = super::build_reply(&tx.req, code, reason, Some(tag.as_bytes()), true)?;
            Self::send(out, &tx.dest, r.clone());
            tx.last = Some(r);
            tx.code = code;
            return Ok(());
        }
        self.final_reply_tagged(tx_id(t), code, reason, true, tag, now, out)
    }
}

/// The longest To tag an operator may give.
const MAX_TO_TAG: usize = 128;

/// A To tag is one token (RFC 3261 §25.1): nothing that could end the
/// parameter or the line.
fn check_to_tag(tag: &str) -> Result<(), TmError> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b);
    if tag.len() > MAX_TO_TAG || !tag.bytes().all(token) {
        return Err(TmError::BadReplyText {
            what: "To tag (a token of at most 128 characters)",
            text: tag.to_owned(),
        });
    }
    Ok(())
}

/// Put `headers` (CRLF-separated `Name: value` lines) and `body` on the
/// replies of `req`. A line break that is not CRLF, an empty line before
/// the end, a line that is not `Name: value`, a `Content-Length` (we write
/// it, from the body) or a body without a `Content-Type` line is refused.
fn add_reply_parts(req: &mut Request, headers: &str, body: &str) -> Result<(), TmError> {
    let bad = |line: &str| TmError::BadReplyText {
        what: "reply header",
        text: line.to_owned(),
    };
    let lines = headers.strip_suffix("\r\n").unwrap_or(headers);
    let mut content_type = None;
    if !lines.is_empty() {
        for line in lines.split("\r\n") {
            let name = line.split(':').next().unwrap_or("").trim();
            if name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l") {
                return Err(TmError::BadReplyText {
                    what: "reply header (Content-Length is written from the body)",
                    text: line.to_owned(),
                });
            }
            if !body.is_empty()
                && (name.eq_ignore_ascii_case("Content-Type") || name.eq_ignore_ascii_case("c"))
            {
                let value = line.split_once(':').map_or("", |(_, v)| v.trim());
                content_type = Some((line, value));
                continue;
            }
            req.append_to_reply(line).map_err(|_| bad(line))?;
        }
    }
    if body.is_empty() {
        return Ok(());
    }
    let Some((line, ct)) = content_type else {
        return Err(TmError::BadReplyText {
            what: "reply body (it needs a Content-Type line in the headers)",
            text: body.chars().take(64).collect(),
        });
    };
    req.set_reply_body(ct, body.as_bytes())
        .map_err(|_| bad(line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::SipMessage;
    use crate::request::{Source, Transport};
    use bytes::Bytes;

    fn req() -> Request {
        let text = "INVITE sip:bob@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: <sip:a@a>;tag=1\r\nTo: <sip:b@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
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
    fn operator_headers_are_clean_lines() {
        let mut r = req();
        add_reply_parts(
            &mut r,
            "X-A: 1\r\nContent-Type: text/plain\r\nX-B: two\r\n",
            "hi",
        )
        .unwrap();
        let built = r.build_reply(200, "OK", Some(b"t")).unwrap();
        let s = String::from_utf8(built.to_vec()).unwrap();
        assert!(
            s.contains(
                "\r\nX-A: 1\r\nX-B: two\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
            ),
            "{s}"
        );
        for bad in [
            "X-A: 1\nX-B: 2",
            "X-A: 1\rX-B: 2",
            "X-A: 1\r\n\r\nX-B: 2",
            "no colon",
            " X-A: folded",
            "X-A: a\0b",
            "Content-Length: 5",
            "l: 5",
        ] {
            assert!(add_reply_parts(&mut req(), bad, "").is_err(), "{bad:?}");
        }
        // A body needs its Content-Type; a Content-Type alone is a header.
        assert!(add_reply_parts(&mut req(), "X-A: 1", "body").is_err());
        add_reply_parts(&mut req(), "Content-Type: text/plain", "").unwrap();
        assert!(add_reply_parts(&mut req(), "", "").is_ok());
    }

    #[test]
    fn to_tags_are_tokens() {
        assert!(check_to_tag("abc-1.2").is_ok());
        for bad in ["a;b=c", "a b", "a\r\nX: y", &"x".repeat(129)] {
            assert!(check_to_tag(bad).is_err(), "{bad:?}");
        }
    }
}
