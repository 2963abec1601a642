//! Transaction keys (RFC 3261 §17.1.3 and §17.2.3).

use bytes::Bytes;

use crate::error::ParseError;
use crate::message::{Method, SipMessage};

/// RFC 3261's magic cookie: a branch starting with it is unique per
/// transaction, so it alone (with sent-by and method) names the transaction.
pub const MAGIC_COOKIE: &[u8] = b"z9hG4bK";

/// What names a transaction in the table. Owns cheap slices of the message
/// buffer, so it can be stored without copying the message.
///
/// The method is the request's, except that ACK maps to INVITE (an ACK for
/// a non-2xx final response belongs to the INVITE's transaction). CANCEL
/// keeps its own method: it is a transaction of its own (§9.2); to find
/// the INVITE it cancels, look up [`TransactionKey::for_invite`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TransactionKey {
    /// RFC 3261: the top Via branch starts with the magic cookie.
    Rfc3261 {
        /// The branch parameter, cookie included.
        branch: Bytes,
        /// sent-by host of the top Via, as written.
        host: Bytes,
        /// sent-by port of the top Via, as written.
        port: Option<u16>,
        /// The method, ACK mapped to INVITE.
        method: Method,
    },
    /// RFC 2543 fallback (§17.2.3, second half), for requests whose branch
    /// lacks the cookie. For an ACK, `to_tag` is the tag of the response it
    /// acknowledges, so the table must compare it with the tag it sent.
    Rfc2543 {
        /// The Request-URI as written.
        request_uri: Bytes,
        /// The To tag, if any.
        to_tag: Option<Bytes>,
        /// The From tag, if any.
        from_tag: Option<Bytes>,
        /// The Call-ID.
        call_id: Bytes,
        /// The CSeq number.
        cseq: u32,
        /// The whole top Via value.
        top_via: Bytes,
        /// The method, ACK mapped to INVITE.
        method: Method,
    },
}

impl TransactionKey {
    /// The same key with the method set to INVITE: the key of the INVITE
    /// transaction a CANCEL targets.
    pub fn for_invite(&self) -> TransactionKey {
        let mut k = self.clone();
        match &mut k {
            TransactionKey::Rfc3261 { method, .. } | TransactionKey::Rfc2543 { method, .. } => {
                *method = Method::Invite
            }
        }
        k
    }
}

fn matching_method(m: Method) -> Method {
    if m == Method::Ack {
        Method::Invite
    } else {
        m
    }
}

impl SipMessage {
    /// The transaction key.
    ///
    /// For a request: RFC 3261 key when the top Via branch carries the magic
    /// cookie, else the RFC 2543 key. For a response: the top Via branch
    /// (which we generated) and the CSeq method, as a client transaction
    /// matches (§17.1.3).
    pub fn transaction_key(&self) -> Result<TransactionKey, ParseError> {
        let via = self.top_via()?;
        let share = |s: &[u8]| self.share(s).unwrap_or_default();
        let Some(method) = self.method() else {
            let branch = via.branch.ok_or(ParseError::MissingHeader("Via branch"))?;
            return Ok(TransactionKey::Rfc3261 {
                branch: share(branch),
                host: share(via.host),
                port: via.port,
                method: matching_method(self.cseq()?.method),
            });
        };
        let method = matching_method(method.clone());
        if let Some(branch) = via.branch.filter(|b| b.starts_with(MAGIC_COOKIE)) {
            return Ok(TransactionKey::Rfc3261 {
                branch: share(branch),
                host: share(via.host),
                port: via.port,
                method,
            });
        }
        Ok(TransactionKey::Rfc2543 {
            request_uri: share(self.request_uri_raw().unwrap_or_default()),
            to_tag: self.to()?.tag.map(share),
            from_tag: self.from()?.tag.map(share),
            call_id: share(self.call_id()?),
            cseq: self.cseq()?.number,
            top_via: share(via.raw),
            method,
        })
    }
}
