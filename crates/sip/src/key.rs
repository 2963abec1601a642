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
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A [`TransactionKey`] borrowed from the message it names: what a table
/// lookup needs, with no copy or reference count of the message's buffer
/// (a stateless request only looks its key up; sharing the buffer for an
/// owned key cost 300 to 500 instructions of a 16,000-instruction
/// request, `bench/instructions.py`). Equal to, and hashed as, the owned
/// key with the same parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRef<'a> {
    /// See [`TransactionKey::Rfc3261`].
    Rfc3261 {
        /// The branch parameter, cookie included.
        branch: &'a [u8],
        /// sent-by host of the top Via, as written.
        host: &'a [u8],
        /// sent-by port of the top Via, as written.
        port: Option<u16>,
        /// The method token, ACK mapped to INVITE.
        method: &'a [u8],
    },
    /// See [`TransactionKey::Rfc2543`].
    Rfc2543 {
        /// The Request-URI as written.
        request_uri: &'a [u8],
        /// The To tag, if any.
        to_tag: Option<&'a [u8]>,
        /// The From tag, if any.
        from_tag: Option<&'a [u8]>,
        /// The Call-ID.
        call_id: &'a [u8],
        /// The CSeq number.
        cseq: u32,
        /// The whole top Via value.
        top_via: &'a [u8],
        /// The method token, ACK mapped to INVITE.
        method: &'a [u8],
    },
}

/// A key a table of [`TransactionKey`]s can be searched with: an owned
/// key or a borrowed one (`map.get(&k as &dyn AsKeyRef)`).
pub trait AsKeyRef {
    /// The key as slices.
    fn key_ref(&self) -> KeyRef<'_>;
}

impl AsKeyRef for TransactionKey {
    fn key_ref(&self) -> KeyRef<'_> {
        match self {
            TransactionKey::Rfc3261 {
                branch,
                host,
                port,
                method,
            } => KeyRef::Rfc3261 {
                branch,
                host,
                port: *port,
                method: method.as_bytes(),
            },
            TransactionKey::Rfc2543 {
                request_uri,
                to_tag,
                from_tag,
                call_id,
                cseq,
                top_via,
                method,
            } => KeyRef::Rfc2543 {
                request_uri,
                to_tag: to_tag.as_deref(),
                from_tag: from_tag.as_deref(),
                call_id,
                cseq: *cseq,
                top_via,
                method: method.as_bytes(),
            },
        }
    }
}

impl AsKeyRef for KeyRef<'_> {
    fn key_ref(&self) -> KeyRef<'_> {
        *self
    }
}

impl std::hash::Hash for TransactionKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key_ref().hash(state)
    }
}

impl std::hash::Hash for dyn AsKeyRef + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key_ref().hash(state)
    }
}

impl PartialEq for dyn AsKeyRef + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key_ref() == other.key_ref()
    }
}

impl Eq for dyn AsKeyRef + '_ {}

impl<'a> std::borrow::Borrow<dyn AsKeyRef + 'a> for TransactionKey {
    fn borrow(&self) -> &(dyn AsKeyRef + 'a) {
        self
    }
}

impl KeyRef<'_> {
    /// The same key with the method set to INVITE (see
    /// [`TransactionKey::for_invite`]).
    pub fn for_invite(mut self) -> Self {
        match &mut self {
            KeyRef::Rfc3261 { method, .. } | KeyRef::Rfc2543 { method, .. } => *method = b"INVITE",
        }
        self
    }
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

/// A method token as a key holds it: ACK as INVITE.
fn matching_token(m: &[u8]) -> &[u8] {
    if m == b"ACK" {
        b"INVITE"
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
        let share = |s: &[u8]| self.share(s).unwrap_or_default();
        // The borrowed key's token already has ACK as INVITE.
        let method = |m: &[u8]| Method::from_slice(self.buffer(), m);
        Ok(match self.transaction_key_ref()? {
            KeyRef::Rfc3261 {
                branch,
                host,
                port,
                method: m,
            } => TransactionKey::Rfc3261 {
                branch: share(branch),
                host: share(host),
                port,
                method: method(m),
            },
            KeyRef::Rfc2543 {
                request_uri,
                to_tag,
                from_tag,
                call_id,
                cseq,
                top_via,
                method: m,
            } => TransactionKey::Rfc2543 {
                request_uri: share(request_uri),
                to_tag: to_tag.map(share),
                from_tag: from_tag.map(share),
                call_id: share(call_id),
                cseq,
                top_via: share(top_via),
                method: method(m),
            },
        })
    }

    /// [`SipMessage::transaction_key`], borrowed from the message.
    pub fn transaction_key_ref(&self) -> Result<KeyRef<'_>, ParseError> {
        let via = self.top_via()?;
        let Some(method) = self.method() else {
            let branch = via.branch.ok_or(ParseError::MissingHeader("Via branch"))?;
            return Ok(KeyRef::Rfc3261 {
                branch,
                host: via.host,
                port: via.port,
                method: matching_token(self.cseq_method_token()?),
            });
        };
        let method = matching_token(method.as_bytes());
        if let Some(branch) = via.branch.filter(|b| b.starts_with(MAGIC_COOKIE)) {
            return Ok(KeyRef::Rfc3261 {
                branch,
                host: via.host,
                port: via.port,
                method,
            });
        }
        Ok(KeyRef::Rfc2543 {
            request_uri: self.request_uri_raw().unwrap_or_default(),
            to_tag: self.to()?.tag,
            from_tag: self.from()?.tag,
            call_id: self.call_id()?,
            cseq: self.cseq()?.number,
            top_via: via.raw,
            method,
        })
    }
}
