//! The parsed message: the first line and the header boundaries found in
//! one pass, values parsed only when asked for.
//!
//! This follows Kamailio's design: a proxy reads a handful of headers of
//! most messages and forwards the rest untouched, so parsing everything up
//! front would be wasted work. What the boundary pass records is small
//! (a few integers per header row) and every read slices the shared buffer.

mod framer;
mod scan;

use bytes::Bytes;

use crate::error::{ParseError, Shown};
use crate::header::{HeaderName, KNOWN};
use crate::lex::{first_element, parse_u64, CommaSplit};
use crate::uri::Uri;
use crate::values::{parse_cseq, split_cseq, CSeq, NameAddr, Via};

pub use framer::{frame_length, StreamFramer};
use scan::{content_end, content_length_of, leading_crlf, parse_start_line, scan_headers};

/// A byte range of the message buffer. `u32` halves the size of a header
/// row compared to `usize`; [`SipMessage::parse`] refuses buffers past 4 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Span {
        // Callers guarantee start <= end <= buffer length <= u32::MAX.
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    #[inline]
    pub(crate) fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// One header line (with its folded continuations).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeaderRow {
    /// Classified once, so lookups compare this byte, not the name text.
    pub(crate) kind: HeaderName,
    pub(crate) name: Span,
    /// The value, surrounding whitespace trimmed; inner folds kept.
    pub(crate) value: Span,
    /// The whole line from the name to past its final line break, so the
    /// editor can copy untouched rows verbatim.
    pub(crate) line: Span,
}

/// A SIP method. The common ones are variants so comparisons are cheap;
/// extension methods keep their text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// OPTIONS
    Options,
    /// REGISTER
    Register,
    /// PRACK
    Prack,
    /// SUBSCRIBE
    Subscribe,
    /// NOTIFY
    Notify,
    /// PUBLISH
    Publish,
    /// INFO
    Info,
    /// REFER
    Refer,
    /// MESSAGE
    Message,
    /// UPDATE
    Update,
    /// Any other method token, as written (methods are case-sensitive).
    Other(Bytes),
}

impl Method {
    /// Classify a method token; `Other` copies nothing but a reference to
    /// `buf`, which must contain `m`.
    pub(crate) fn from_slice(buf: &Bytes, m: &[u8]) -> Method {
        match m {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            b"PRACK" => Method::Prack,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"PUBLISH" => Method::Publish,
            b"INFO" => Method::Info,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"UPDATE" => Method::Update,
            _ => Method::Other(buf.slice_ref(m)),
        }
    }

    /// Classify a method token held anywhere (copies it for `Other`).
    pub fn from_bytes(m: &[u8]) -> Method {
        Method::from_slice(&Bytes::copy_from_slice(m), m)
    }

    /// The method token.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Method::Invite => b"INVITE",
            Method::Ack => b"ACK",
            Method::Bye => b"BYE",
            Method::Cancel => b"CANCEL",
            Method::Options => b"OPTIONS",
            Method::Register => b"REGISTER",
            Method::Prack => b"PRACK",
            Method::Subscribe => b"SUBSCRIBE",
            Method::Notify => b"NOTIFY",
            Method::Publish => b"PUBLISH",
            Method::Info => b"INFO",
            Method::Refer => b"REFER",
            Method::Message => b"MESSAGE",
            Method::Update => b"UPDATE",
            Method::Other(b) => b,
        }
    }
}

#[derive(Debug, Clone)]
enum StartLine {
    Request {
        method: Method,
        uri: Span,
        version: Span,
    },
    Response {
        code: u16,
        reason: Span,
        version: Span,
    },
}

/// A SIP request or response over a shared buffer.
///
/// Built by [`SipMessage::parse`]; every read borrows from the buffer or
/// slices it, and the editor ([`crate::Editor`]) copies untouched parts
/// verbatim.
#[derive(Debug, Clone)]
pub struct SipMessage {
    buf: Bytes,
    start: StartLine,
    /// The first line including its line break (after any leading CRLFs).
    pub(crate) start_line: Span,
    pub(crate) rows: Vec<HeaderRow>,
    /// Index + 1 of the first row of each known kind, 0 for none: the fast
    /// path that makes `top_via()`, `cseq()`... one array read.
    first: [u32; KNOWN],
    pub(crate) body: Span,
    content_length: Option<u64>,
    /// The top Via, once parsed (`None` inside: it did not parse): the
    /// host and the transaction layer read it several times per message.
    top_via: std::sync::OnceLock<Option<crate::values::ViaSpans>>,
    /// [`SipMessage::call_id_hash`], once computed: a request's picks its
    /// stripe twice and its part of the transaction table at least once.
    call_hash: std::sync::OnceLock<u64>,
    /// From and To, once parsed (`None` inside: it did not parse).
    from_to: [std::sync::OnceLock<Option<crate::values::NameAddrSpans>>; 2],
}

impl SipMessage {
    /// Parse a whole message: a datagram, or a frame cut by
    /// [`frame_length`]. Finds the first line and the header rows; values
    /// are parsed by the typed reads.
    ///
    /// The body is what Content-Length says: bytes past it are dropped (RFC
    /// 3261 §18.3), fewer is an error. Without Content-Length the body is
    /// the rest of the buffer.
    pub fn parse(buf: Bytes) -> Result<SipMessage, ParseError> {
        if buf.len() > u32::MAX as usize {
            return Err(ParseError::TooLarge {
                len: buf.len() as u64,
                max: u32::MAX as usize,
            });
        }
        let b = &buf[..];
        let pos = leading_crlf(b);
        if pos == b.len() {
            return Err(ParseError::Empty);
        }
        let nl = memchr::memchr(b'\n', &b[pos..])
            .map(|n| pos + n)
            .ok_or(ParseError::NoHeaderEnd)?;
        let end = content_end(b, pos, nl);
        let start = parse_start_line(&buf, pos, end)?;
        let mut rows = Vec::with_capacity(20);
        let (_, body_start) = scan_headers(b, nl + 1, &mut rows)?;
        let mut first = [0u32; KNOWN];
        for (i, r) in rows.iter().enumerate() {
            if let Some(slot) = first.get_mut(r.kind as usize) {
                if *slot == 0 {
                    *slot = i as u32 + 1;
                }
            }
        }
        let content_length = content_length_of(b, &rows)?;
        let available = b.len() - body_start;
        let body_end = match content_length {
            Some(cl) if cl > available as u64 => {
                return Err(ParseError::BodyTooShort {
                    declared: cl,
                    available,
                })
            }
            Some(cl) => body_start + cl as usize,
            None => b.len(),
        };
        Ok(SipMessage {
            start,
            start_line: Span::new(pos, nl + 1),
            rows,
            first,
            body: Span::new(body_start, body_end),
            content_length,
            buf,
            top_via: std::sync::OnceLock::new(),
            call_hash: std::sync::OnceLock::new(),
            from_to: Default::default(),
        })
    }

    /// The whole buffer the message was parsed from.
    pub fn buffer(&self) -> &Bytes {
        &self.buf
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The method of a request; `None` for a response.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI text of a request.
    pub fn request_uri_raw(&self) -> Option<&[u8]> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(&self.buf[uri.range()]),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI, parsed.
    pub fn request_uri(&self) -> Result<Uri<'_>, ParseError> {
        let raw = self
            .request_uri_raw()
            .ok_or(ParseError::WrongKind("a response has no Request-URI"))?;
        Uri::parse(raw)
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase of a response (may be empty).
    pub fn reason(&self) -> Option<&[u8]> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(&self.buf[reason.range()]),
            StartLine::Request { .. } => None,
        }
    }

    /// The SIP version as written (`SIP/2.0`). The parser accepts any
    /// `SIP/x.y` so a host can answer other versions with 505.
    pub fn version(&self) -> &[u8] {
        match &self.start {
            StartLine::Request { version, .. } | StartLine::Response { version, .. } => {
                &self.buf[version.range()]
            }
        }
    }

    #[inline]
    fn value(&self, r: &HeaderRow) -> &[u8] {
        &self.buf[r.value.range()]
    }

    /// The value of the first header of a known kind.
    #[inline]
    pub fn header_of(&self, kind: HeaderName) -> Option<&[u8]> {
        let i = *self.first.get(kind as usize)?;
        if i == 0 {
            return None;
        }
        self.rows.get(i as usize - 1).map(|r| self.value(r))
    }

    /// The values of every header of a known kind, in order.
    pub fn headers_of(&self, kind: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        let skip = self.first.get(kind as usize).map_or(self.rows.len(), |&i| {
            if i == 0 {
                self.rows.len()
            } else {
                i as usize - 1
            }
        });
        self.rows[skip..]
            .iter()
            .filter(move |r| r.kind == kind)
            .map(|r| self.value(r))
    }

    /// The value of the first header named `name` (any case, compact forms
    /// included). Values keep inner folds; see [`crate::unfold`].
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        let kind = HeaderName::classify(name.as_bytes());
        if kind != HeaderName::Other {
            return self.header_of(kind);
        }
        self.rows
            .iter()
            .find(|r| {
                r.kind == HeaderName::Other
                    && self.buf[r.name.range()].eq_ignore_ascii_case(name.as_bytes())
            })
            .map(|r| self.value(r))
    }

    /// The values of every header named `name`, in order.
    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        let kind = HeaderName::classify(name.as_bytes());
        self.rows
            .iter()
            .filter(move |r| {
                r.kind == kind
                    && (kind != HeaderName::Other
                        || self.buf[r.name.range()].eq_ignore_ascii_case(name.as_bytes()))
            })
            .map(|r| self.value(r))
    }

    /// Every header row as (name as written, value), in order.
    pub fn header_rows(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.rows
            .iter()
            .map(|r| (&self.buf[r.name.range()], self.value(r)))
    }

    /// Number of header rows.
    pub fn header_count(&self) -> usize {
        self.rows.len()
    }

    /// The comma-separated elements of every header of a kind (Via,
    /// Contact, Route...), commas inside quotes and `<>` respected.
    pub fn elements_of(&self, kind: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        self.headers_of(kind).flat_map(CommaSplit::new)
    }

    /// The top Via: the first value of the first Via row.
    pub fn top_via(&self) -> Result<Via<'_>, ParseError> {
        if let Some(Some(s)) = self.top_via.get() {
            return Ok(Via::from_spans(&self.buf, s));
        }
        let v = self
            .header_of(HeaderName::Via)
            .ok_or(ParseError::MissingHeader("Via"))?;
        let via = Via::parse(first_element(v));
        let _ = self
            .top_via
            .set(via.as_ref().ok().and_then(|v| v.spans(&self.buf)));
        via
    }

    /// Every Via value, top first; rows holding several comma-separated
    /// values are split.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'_>, ParseError>> + '_ {
        self.elements_of(HeaderName::Via).map(Via::parse)
    }

    /// The CSeq.
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        let v = self
            .header_of(HeaderName::CSeq)
            .ok_or(ParseError::MissingHeader("CSeq"))?;
        parse_cseq(v, |m| Method::from_slice(&self.buf, m))
    }

    /// The CSeq's method token, as written in the message.
    pub(crate) fn cseq_method_token(&self) -> Result<&[u8], ParseError> {
        let v = self
            .header_of(HeaderName::CSeq)
            .ok_or(ParseError::MissingHeader("CSeq"))?;
        Ok(split_cseq(v)?.1)
    }

    /// The From header.
    pub fn from(&self) -> Result<NameAddr<'_>, ParseError> {
        self.name_addr(0, HeaderName::From, "From")
    }

    /// The To header.
    pub fn to(&self) -> Result<NameAddr<'_>, ParseError> {
        self.name_addr(1, HeaderName::To, "To")
    }

    /// From (`which` 0) or To (1), parsed once and kept: the checks, the
    /// transaction layer, replies and the script's `$fu`, `$tt`... all
    /// read them.
    fn name_addr(
        &self,
        which: usize,
        kind: HeaderName,
        name: &'static str,
    ) -> Result<NameAddr<'_>, ParseError> {
        if let Some(Some(s)) = self.from_to[which].get() {
            return Ok(NameAddr::from_spans(&self.buf, s));
        }
        let v = self
            .header_of(kind)
            .ok_or(ParseError::MissingHeader(name))?;
        let na = NameAddr::parse(v);
        let _ = self.from_to[which].set(na.as_ref().ok().and_then(|n| n.spans(&self.buf)));
        na
    }

    /// The Call-ID: one word, no whitespace.
    pub fn call_id(&self) -> Result<&[u8], ParseError> {
        let v = self
            .header_of(HeaderName::CallId)
            .ok_or(ParseError::MissingHeader("Call-ID"))?;
        // Every byte looked at, no early exit: the compiler then checks
        // many at a time (a valid Call-ID, the usual case, has no space).
        if v.is_empty() || v.iter().fold(false, |sp, &c| sp | crate::lex::is_lws(c)) {
            return Err(ParseError::BadCallId(Shown::new(v)));
        }
        Ok(v)
    }

    /// The FNV-1a hash of the Call-ID (of the empty string when it is
    /// missing or bad), computed once: the host picks a call's router
    /// thread, stripe and part of the transaction table by it.
    pub(crate) fn call_id_hash(&self) -> u64 {
        *self
            .call_hash
            .get_or_init(|| crate::lex::fnv(self.call_id().unwrap_or_default()))
    }

    /// Max-Forwards, `None` when absent. Values past 255 are refused.
    pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
        let Some(v) = self.header_of(HeaderName::MaxForwards) else {
            return Ok(None);
        };
        parse_u64(v)
            .and_then(|n| u8::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| ParseError::BadMaxForwards(Shown::new(v)))
    }

    /// The Content-Length header's value (checked at parse), `None` when
    /// absent.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.buf[self.body.range()]
    }

    /// The body as a cheap slice of the shared buffer.
    pub fn body_bytes(&self) -> Bytes {
        self.buf.slice(self.body.range())
    }

    /// A slice of the shared buffer for bytes borrowed from this message
    /// (e.g. a field of a typed read), without copying; `None` when `part`
    /// does not lie inside this message's buffer.
    pub fn share(&self, part: &[u8]) -> Option<Bytes> {
        let base = self.buf.as_ptr() as usize;
        let p = part.as_ptr() as usize;
        (p >= base && p + part.len() <= base + self.buf.len()).then(|| {
            if part.is_empty() {
                Bytes::new()
            } else {
                self.buf.slice_ref(part)
            }
        })
    }
}

/// A header value with its folds (CRLF + whitespace) replaced by one space,
/// for callers that show or compare whole values.
pub fn unfold(v: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !v.contains(&b'\n') {
        return std::borrow::Cow::Borrowed(v);
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\r' || v[i] == b'\n' {
            while out.last().is_some_and(|&c| c == b' ' || c == b'\t') {
                out.pop();
            }
            out.push(b' ');
            i = crate::lex::skip_lws(v, i);
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    std::borrow::Cow::Owned(out)
}
