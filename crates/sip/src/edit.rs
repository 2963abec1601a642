//! Building new messages from parsed ones: a proxy's edits to a request it
//! forwards, responses to a request, and CANCEL / ACK for a client
//! transaction.
//!
//! Edits are a list applied at serialization, as in Kamailio: the parsed
//! message is never mutated, untouched rows are copied verbatim, and the
//! output is sized by a first pass so it is written into one allocation.

use bytes::Bytes;

use crate::error::ParseError;
use crate::header::HeaderName;
use crate::lex::{first_element, parse_u64, skip_lws};
use crate::message::{HeaderRow, Method, SipMessage};

/// One change to apply when serializing a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Add a Via value on top (the value only, e.g.
    /// `SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1`). Of several, the last one
    /// given ends up on top.
    PrependVia(Bytes),
    /// Remove the top Via value: only that value when a row holds several
    /// comma-separated ones, the whole row otherwise.
    RemoveFirstVia,
    /// Replace the Request-URI (requests only; ignored on responses).
    SetRequestUri(Bytes),
    /// Decrement Max-Forwards, or insert it with this value when absent or
    /// unreadable. A value already 0 stays 0: replying 483 is the caller's
    /// decision, taken before forwarding.
    DecrementMaxForwards {
        /// Value to insert when the request has none.
        default: u8,
    },
    /// Set Max-Forwards to this value (inserted when absent); wins over
    /// [`Edit::DecrementMaxForwards`]. For a router that already processed
    /// Max-Forwards itself (Kamailio's `maxfwd` module).
    SetMaxForwards(u8),
    /// Append a header line after the existing ones.
    AppendHeader {
        /// Header name.
        name: Bytes,
        /// Header value.
        value: Bytes,
    },
    /// Remove every header with this name (any case, compact forms too).
    RemoveHeaders(Bytes),
    /// Add a Record-Route value (the whole value, `<sip:...;lr>`) above
    /// the existing ones. Several are written in the order given, the
    /// first on top.
    InsertRecordRoute(Bytes),
    /// Replace the route set: every Route row goes, and these values are
    /// written instead (one row each, in order) where the first Route row
    /// was, or after the other rows when there was none.
    SetRoutes(Vec<Bytes>),
    /// Replace the body; Content-Length is rewritten to match, and
    /// Content-Type too when one is given.
    SetBody {
        /// New Content-Type, or `None` to keep the existing rows.
        content_type: Option<Bytes>,
        /// The new body.
        body: Bytes,
    },
}

/// Where serialized bytes go: a counter for the sizing pass, a buffer for
/// the writing pass, so both passes run the same code.
trait Sink {
    fn put(&mut self, b: &[u8]);
}

struct Count(usize);
impl Sink for Count {
    fn put(&mut self, b: &[u8]) {
        self.0 += b.len();
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

/// Run `emit` once to size the output and once to write it.
fn build(emit: impl Fn(&mut dyn Sink)) -> Bytes {
    let mut c = Count(0);
    emit(&mut c);
    let mut out = Vec::with_capacity(c.0);
    emit(&mut out);
    Bytes::from(out)
}

/// Decimal digits of `n` without allocating.
fn put_num(s: &mut dyn Sink, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    s.put(&buf[i..]);
}

fn put_header(s: &mut dyn Sink, name: &[u8], value: &[u8]) {
    s.put(name);
    s.put(b": ");
    s.put(value);
    s.put(b"\r\n");
}

/// A message plus the edits to apply to it.
pub struct Editor<'m> {
    msg: &'m SipMessage,
    edits: Vec<Edit>,
}

impl<'m> Editor<'m> {
    /// Start with no edits.
    pub fn new(msg: &'m SipMessage) -> Self {
        Editor {
            msg,
            // A relay makes four to six edits: room for them up front, as
            // growing the list is a realloc, which takes glibc's arena lock
            // (a lock the router threads were seen to meet on).
            edits: Vec::with_capacity(8),
        }
    }

    /// Add an edit.
    pub fn push(&mut self, e: Edit) -> &mut Self {
        self.edits.push(e);
        self
    }

    /// Add an edit (builder style).
    pub fn with(mut self, e: Edit) -> Self {
        self.edits.push(e);
        self
    }

    /// Write the edited message.
    pub fn serialize(&self) -> Bytes {
        let plan = Plan::new(self.msg, &self.edits);
        build(|s| plan.emit(s))
    }
}

/// The edits, resolved into what each part of the message needs.
struct Plan<'a> {
    m: &'a SipMessage,
    uri: Option<&'a [u8]>,
    vias: Vec<&'a [u8]>,
    remove_first_via: bool,
    mf_default: Option<u8>,
    mf_set: Option<u8>,
    appends: Vec<(&'a [u8], &'a [u8])>,
    removes: Vec<(HeaderName, &'a [u8])>,
    body: Option<(Option<&'a [u8]>, &'a [u8])>,
    record_routes: Vec<&'a [u8]>,
    routes: Option<&'a [Bytes]>,
}

impl<'a> Plan<'a> {
    fn new(m: &'a SipMessage, edits: &'a [Edit]) -> Self {
        let mut p = Plan {
            m,
            uri: None,
            vias: Vec::new(),
            remove_first_via: false,
            mf_default: None,
            mf_set: None,
            appends: Vec::new(),
            removes: Vec::new(),
            body: None,
            record_routes: Vec::new(),
            routes: None,
        };
        for e in edits {
            match e {
                Edit::PrependVia(v) => p.vias.push(v),
                Edit::RemoveFirstVia => p.remove_first_via = true,
                Edit::SetRequestUri(u) => p.uri = Some(u),
                Edit::DecrementMaxForwards { default } => p.mf_default = Some(*default),
                Edit::SetMaxForwards(v) => p.mf_set = Some(*v),
                Edit::AppendHeader { name, value } => p.appends.push((name, value)),
                Edit::RemoveHeaders(n) => p.removes.push((HeaderName::classify(n), n)),
                Edit::InsertRecordRoute(v) => p.record_routes.push(v),
                Edit::SetRoutes(r) => p.routes = Some(r),
                Edit::SetBody { content_type, body } => {
                    p.body = Some((content_type.as_deref(), body))
                }
            }
        }
        p
    }

    fn removed(&self, r: &HeaderRow) -> bool {
        let buf = self.m.buffer();
        if let Some((ct, _)) = self.body {
            if r.kind == HeaderName::ContentLength
                || (ct.is_some() && r.kind == HeaderName::ContentType)
            {
                return true;
            }
        }
        self.removes.iter().any(|(k, n)| {
            *k == r.kind && (*k != HeaderName::Other || buf[r.name.range()].eq_ignore_ascii_case(n))
        })
    }

    fn emit(&self, s: &mut dyn Sink) {
        let m = self.m;
        let buf = m.buffer();
        match (self.uri, m.method()) {
            (Some(uri), Some(method)) => {
                s.put(method.as_bytes());
                s.put(b" ");
                s.put(uri);
                s.put(b" ");
                s.put(m.version());
                s.put(b"\r\n");
            }
            _ => s.put(&buf[m.start_line.range()]),
        }
        let has_via = m.rows.iter().any(|r| r.kind == HeaderName::Via);
        let mut seen_via = false;
        let mut seen_mf = false;
        let mut seen_rr = false;
        let mut seen_route = false;
        if !has_via {
            self.put_vias(s);
        }
        for r in &m.rows {
            if r.kind == HeaderName::Via && !seen_via {
                seen_via = true;
                self.put_vias(s);
                if self.remove_first_via {
                    let v = &buf[r.value.range()];
                    let first = first_element(v);
                    if first.len() < v.len() {
                        // Keep the other values of the row, in their order.
                        let rest = &v[skip_lws(v, first.len() + 1)..];
                        put_header(s, &buf[r.name.range()], rest);
                    }
                    continue;
                }
            }
            if r.kind == HeaderName::MaxForwards && !seen_mf {
                seen_mf = true;
                if let Some(v) = self.mf_set {
                    s.put(b"Max-Forwards: ");
                    put_num(s, u64::from(v));
                    s.put(b"\r\n");
                    continue;
                }
                if let Some(default) = self.mf_default {
                    let n = parse_u64(&buf[r.value.range()])
                        .filter(|&n| n <= 255)
                        .map_or(u64::from(default), |n| n.saturating_sub(1));
                    s.put(b"Max-Forwards: ");
                    put_num(s, n);
                    s.put(b"\r\n");
                    continue;
                }
            }
            if r.kind == HeaderName::RecordRoute && !seen_rr {
                seen_rr = true;
                self.put_record_routes(s);
            }
            if r.kind == HeaderName::Route {
                if let Some(routes) = self.routes {
                    if !seen_route {
                        seen_route = true;
                        Self::put_routes(s, routes);
                    }
                    continue;
                }
            }
            if self.removed(r) {
                continue;
            }
            s.put(&buf[r.line.range()]);
        }
        if !seen_rr {
            self.put_record_routes(s);
        }
        if let (Some(routes), false) = (self.routes, seen_route) {
            Self::put_routes(s, routes);
        }
        if let (Some(v), false) = (self.mf_set.or(self.mf_default), seen_mf) {
            s.put(b"Max-Forwards: ");
            put_num(s, u64::from(v));
            s.put(b"\r\n");
        }
        for (n, v) in &self.appends {
            put_header(s, n, v);
        }
        let body = match self.body {
            Some((ct, body)) => {
                if let Some(ct) = ct {
                    put_header(s, b"Content-Type", ct);
                }
                s.put(b"Content-Length: ");
                put_num(s, body.len() as u64);
                s.put(b"\r\n");
                body
            }
            None => m.body(),
        };
        s.put(b"\r\n");
        s.put(body);
    }

    fn put_record_routes(&self, s: &mut dyn Sink) {
        for v in &self.record_routes {
            put_header(s, b"Record-Route", v);
        }
    }

    fn put_routes(s: &mut dyn Sink, routes: &[Bytes]) {
        for v in routes {
            put_header(s, b"Route", v);
        }
    }

    fn put_vias(&self, s: &mut dyn Sink) {
        for v in self.vias.iter().rev() {
            put_header(s, b"Via", v);
        }
    }
}

impl SipMessage {
    /// Start editing this message for forwarding.
    pub fn edit(&self) -> Editor<'_> {
        Editor::new(self)
    }

    /// Build a response to this request (RFC 3261 §8.2.6): Via rows, From,
    /// To, Call-ID and CSeq copied; a To tag added when `to_tag` is given
    /// and To has none; `extra` headers; `Content-Length: 0`.
    pub fn response(
        &self,
        code: u16,
        reason: &[u8],
        to_tag: Option<&[u8]>,
        extra: &[(&[u8], &[u8])],
    ) -> Result<Bytes, ParseError> {
        self.response_with_body(code, reason, to_tag, extra, b"")
    }

    /// As [`SipMessage::response`], with a body: Content-Length is written
    /// to match it; a Content-Type, if any, goes in `extra`.
    pub fn response_with_body(
        &self,
        code: u16,
        reason: &[u8],
        to_tag: Option<&[u8]>,
        extra: &[(&[u8], &[u8])],
        body: &[u8],
    ) -> Result<Bytes, ParseError> {
        if !self.is_request() {
            return Err(ParseError::WrongKind("cannot answer a response"));
        }
        let add_tag = match to_tag {
            Some(t) if self.to()?.tag.is_none() => Some(t),
            _ => None,
        };
        let buf = self.buffer();
        Ok(build(|s| {
            s.put(b"SIP/2.0 ");
            put_num(s, u64::from(code));
            s.put(b" ");
            s.put(reason);
            s.put(b"\r\n");
            let mut seen_to = false;
            for r in &self.rows {
                match r.kind {
                    HeaderName::To if !seen_to => {
                        seen_to = true;
                        match add_tag {
                            Some(tag) => {
                                s.put(b"To: ");
                                s.put(&buf[r.value.range()]);
                                s.put(b";tag=");
                                s.put(tag);
                                s.put(b"\r\n");
                            }
                            None => s.put(&buf[r.line.range()]),
                        }
                    }
                    HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                        s.put(&buf[r.line.range()])
                    }
                    _ => {}
                }
            }
            for (n, v) in extra {
                put_header(s, n, v);
            }
            s.put(b"Content-Length: ");
            put_num(s, body.len() as u64);
            s.put(b"\r\n\r\n");
            s.put(body);
        }))
    }

    /// Build the CANCEL for this request, which we sent as a client
    /// transaction (RFC 3261 §9.1): same Request-URI, Call-ID, From, To,
    /// CSeq number and Route set, and only our top Via.
    pub fn cancel(&self) -> Result<Bytes, ParseError> {
        self.client_request(b"CANCEL", None)
    }

    /// Build the ACK for a non-2xx final `response` to this INVITE, which we
    /// sent as a client transaction (RFC 3261 §17.1.1.3): as the CANCEL,
    /// but with the To header of the response (carrying its tag).
    pub fn ack(&self, response: &SipMessage) -> Result<Bytes, ParseError> {
        if response.is_request() {
            return Err(ParseError::WrongKind("an ACK acknowledges a response"));
        }
        let to = response
            .header_of(HeaderName::To)
            .ok_or(ParseError::MissingHeader("To"))?;
        self.client_request(b"ACK", Some(to))
    }

    fn client_request(&self, method: &[u8], to: Option<&[u8]>) -> Result<Bytes, ParseError> {
        let (Some(m), Some(uri)) = (self.method(), self.request_uri_raw()) else {
            return Err(ParseError::WrongKind(
                "CANCEL and ACK are built from a request",
            ));
        };
        if matches!(m, Method::Ack | Method::Cancel) {
            return Err(ParseError::WrongKind(
                "ACK and CANCEL cannot be cancelled or acknowledged",
            ));
        }
        let via = self.top_via()?.raw;
        let cseq = self.cseq()?.number;
        let from = self
            .header_of(HeaderName::From)
            .ok_or(ParseError::MissingHeader("From"))?;
        let to = match to {
            Some(t) => t,
            None => self
                .header_of(HeaderName::To)
                .ok_or(ParseError::MissingHeader("To"))?,
        };
        let call_id = self.call_id()?;
        let buf = self.buffer();
        Ok(build(|s| {
            s.put(method);
            s.put(b" ");
            s.put(uri);
            s.put(b" SIP/2.0\r\n");
            put_header(s, b"Via", via);
            for r in self.rows.iter().filter(|r| r.kind == HeaderName::Route) {
                s.put(&buf[r.line.range()]);
            }
            s.put(b"Max-Forwards: 70\r\n");
            put_header(s, b"From", from);
            put_header(s, b"To", to);
            put_header(s, b"Call-ID", call_id);
            s.put(b"CSeq: ");
            put_num(s, u64::from(cseq));
            s.put(b" ");
            s.put(method);
            s.put(b"\r\n");
            s.put(b"Content-Length: 0\r\n\r\n");
        }))
    }
}
