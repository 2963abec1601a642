//! What the router works on: a received request, where it came from, its
//! transaction (once there is one) and the edits the router made to it.
//!
//! Edits are kept as a list beside the parsed message and applied when the
//! request is forwarded, as in Kamailio: the parsed buffer is never
//! rewritten, so an edit costs nothing until the request is sent.

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::edit::Edit;
use crate::error::ParseError;
use crate::header::HeaderName;
use crate::message::SipMessage;
use crate::uri::Uri;

/// A transport protocol of a listening socket or a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// SIP over UDP: unreliable, so requests and final replies are
    /// retransmitted by timer.
    Udp,
    /// SIP over TCP: reliable and framed by Content-Length.
    Tcp,
}

impl Transport {
    /// Whether the transport delivers reliably (no retransmissions needed).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }

    /// The name as written in a Via header (`UDP`, `TCP`).
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// Identifies a stream connection while it is open, so a reply can go back
/// on the connection its request came in on (RFC 3261 §18.2.2).
pub type ConnId = u64;

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The transport it arrived on.
    pub transport: Transport,
    /// The peer's address (the packet's source, not what its Via claims).
    pub remote: SocketAddr,
    /// Our address it arrived at.
    pub local: SocketAddr,
    /// The stream connection, for TCP.
    pub conn: Option<ConnId>,
}

/// The name of a transaction: Kamailio's tm index (hash bucket) and label
/// (unique number), the pair a script hands across the event socket to
/// resume a suspended transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxRef {
    /// The hash bucket.
    pub index: u32,
    /// The number given to the transaction at creation, unique in the host.
    pub label: u32,
}

impl fmt::Display for TxRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.index, self.label)
    }
}

/// Why an edit of a [`Request`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The new Request-URI or destination URI does not parse.
    #[error("invalid URI {uri:?}: {reason}")]
    BadUri {
        /// The URI as given.
        uri: String,
        /// Why it was refused (in the message, so not also a `source`).
        reason: ParseError,
    },
    /// An appended header is not one `Name: value` line.
    #[error("invalid header line {0:?}: expected one \"Name: value\" line")]
    BadHeader(String),
}

/// A request as the router sees it.
///
/// Cloning is cheap: the message shares its buffer.
#[derive(Debug, Clone)]
pub struct Request {
    msg: SipMessage,
    source: Source,
    pub(crate) tx: Option<TxRef>,
    ruri: Option<Bytes>,
    dst_uri: Option<String>,
    /// Max-Forwards as the router set it (then relayed as is).
    max_forwards: Option<u8>,
    /// Names of headers removed from the original rows.
    removed: Vec<(HeaderName, String)>,
    /// Appended header lines (name, value), in order.
    appended: Vec<(String, String)>,
    pub(crate) failure_route: Option<String>,
    pub(crate) failure_code: Option<u16>,
    /// Header lines for the replies we build to this request.
    reply_headers: Vec<(String, String)>,
    /// Body for the replies we build: (Content-Type, body).
    reply_body: Option<(String, Bytes)>,
    /// The router's message flags (Kamailio's `setflag`, 0 to 31). They
    /// live here so the transaction's copy of the request carries them
    /// into its failure route and into a resumed route.
    flags: u32,
    /// The router's flags of branch 0 (Kamailio's `setbflag`).
    bflags: u32,
    /// Reply to the source port even without `rport` in the Via
    /// (Kamailio's `force_rport`).
    force_rport: bool,
    /// The router asked not to open a new connection for replies
    /// (Kamailio's `set_reply_no_connect`); recorded only, see
    /// [`Request::reply_no_connect`].
    reply_no_connect: bool,
    /// The message as it arrived, when the host rewrote its top Via
    /// (`received`, `rport`): what the router reads headers from. Shared,
    /// so the copies a transaction keeps do not copy its rows.
    as_received: Option<std::sync::Arc<SipMessage>>,
    /// Record-Route and the route set after loose routing.
    pub(crate) rr: crate::rr::RrState,
    /// Reply and branch routes armed, and what a failure route is told.
    pub(crate) routes: crate::tx_routes::TxRoutes,
    /// The dialog it belongs to, once tracked or matched
    /// ([`crate::Dialogs`]).
    pub(crate) dialog: Option<crate::dialog::DlgId>,
    /// It created that dialog (an initial INVITE).
    pub(crate) dialog_new: bool,
    /// In-dialog matching was done for it (once per request).
    pub(crate) dialog_seen: bool,
}

/// Split a whole header line (`"X-Foo: bar"`, with or without its CRLF)
/// into name and value; one line only, the name a token. A CR, LF or NUL
/// anywhere else is refused: it would end the line we write and let the
/// text add headers of its own.
fn split_header_line(line: &str) -> Result<(String, String), EditError> {
    let bad = || EditError::BadHeader(line.to_owned());
    let l = line.strip_suffix("\r\n").unwrap_or(line);
    if l.contains(['\r', '\n', '\0']) {
        return Err(bad());
    }
    let (name, value) = l.split_once(':').ok_or_else(bad)?;
    let name = name.trim_end();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
    {
        return Err(bad());
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

fn same_name(a_kind: HeaderName, a: &str, b_kind: HeaderName, b: &str) -> bool {
    a_kind == b_kind && (a_kind != HeaderName::Other || a.eq_ignore_ascii_case(b))
}

impl Request {
    /// Wrap a parsed request and where it came from. `msg` should be a
    /// request; the host only builds these for requests.
    pub fn new(msg: SipMessage, source: Source) -> Request {
        Request {
            msg,
            source,
            tx: None,
            ruri: None,
            dst_uri: None,
            max_forwards: None,
            removed: Vec::new(),
            appended: Vec::new(),
            failure_route: None,
            failure_code: None,
            reply_headers: Vec::new(),
            reply_body: None,
            flags: 0,
            bflags: 0,
            force_rport: false,
            reply_no_connect: false,
            as_received: None,
            rr: Default::default(),
            routes: Default::default(),
            dialog: None,
            dialog_new: false,
            dialog_seen: false,
        }
    }

    /// The dialog this request belongs to: the one `dlg_manage` created
    /// for it, or the one it was matched to ([`crate::Dialogs`]).
    pub fn dialog(&self) -> Option<crate::dialog::DlgId> {
        self.dialog
    }

    /// As [`Request::new`], for a message the host rewrote on arrival
    /// (`msg`, with `received` / `rport` in its top Via) from `original`
    /// (as it arrived): the router's header reads see `original`, while
    /// replies and relays are built from `msg`.
    pub(crate) fn with_original(msg: SipMessage, original: SipMessage, source: Source) -> Request {
        let mut r = Request::new(msg, source);
        r.as_received = Some(std::sync::Arc::new(original));
        r
    }

    /// The message exactly as it arrived: [`Request::msg`] but for the
    /// `received` and `rport` parameters the host adds to the top Via
    /// (RFC 3261 §18.2.1), which this one does not show.
    pub fn msg_as_received(&self) -> &SipMessage {
        self.as_received.as_deref().unwrap_or(&self.msg)
    }

    /// The router's message flags, one bit per flag (bit `n` is flag `n`).
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Replace the router's message flags.
    pub fn set_flags(&mut self, flags: u32) {
        self.flags = flags;
    }

    /// The router's flags of branch 0, one bit per flag.
    pub fn branch_flags(&self) -> u32 {
        self.bflags
    }

    /// Replace the router's flags of branch 0.
    pub fn set_branch_flags(&mut self, flags: u32) {
        self.bflags = flags;
    }

    /// Send replies to the packet's source port over UDP even when the
    /// top Via has no `rport` (RFC 3581 behaviour forced, as Kamailio's
    /// `force_rport`). Takes effect for replies whose destination is
    /// worked out after this call: a transaction records it when created.
    pub fn set_force_rport(&mut self) {
        self.force_rport = true;
    }

    /// Whether replies are forced to the source port.
    pub fn force_rport(&self) -> bool {
        self.force_rport
    }

    /// Record that replies should not open a new stream connection
    /// (Kamailio's `set_reply_no_connect`). Recorded only: the transport
    /// does not read it yet, and a reply whose connection closed opens a
    /// new one as RFC 3261 §18.2.2 says.
    pub fn set_reply_no_connect(&mut self) {
        self.reply_no_connect = true;
    }

    /// Whether the router asked not to open connections for replies.
    pub fn reply_no_connect(&self) -> bool {
        self.reply_no_connect
    }

    /// The message as received (edits are not applied to it).
    pub fn msg(&self) -> &SipMessage {
        &self.msg
    }

    /// Where it came from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Its transaction, once one was created or looked up for it.
    pub fn tx(&self) -> Option<TxRef> {
        self.tx
    }

    /// Replace the Request-URI (applied when relayed).
    pub fn set_ruri(&mut self, uri: &str) -> Result<(), EditError> {
        Uri::parse(uri.as_bytes()).map_err(|reason| EditError::BadUri {
            uri: uri.to_owned(),
            reason,
        })?;
        self.ruri = Some(Bytes::copy_from_slice(uri.as_bytes()));
        Ok(())
    }

    /// The Request-URI, with any edit applied.
    pub fn ruri(&self) -> &[u8] {
        match &self.ruri {
            Some(u) => u,
            None => self.msg.request_uri_raw().unwrap_or_default(),
        }
    }

    /// Set or clear the destination URI: where [`crate::SipHandle::t_relay`]
    /// sends the request instead of the Request-URI (Kamailio's `$du`).
    pub fn set_dst_uri(&mut self, uri: Option<&str>) -> Result<(), EditError> {
        if let Some(u) = uri {
            Uri::parse(u.as_bytes()).map_err(|reason| EditError::BadUri {
                uri: u.to_owned(),
                reason,
            })?;
        }
        self.dst_uri = uri.map(str::to_owned);
        Ok(())
    }

    /// The destination URI, when set.
    pub fn dst_uri(&self) -> Option<&str> {
        self.dst_uri.as_deref()
    }

    /// Append one header line, given whole (`"X-Foo: bar"`, with or without
    /// the final CRLF). It is added after the existing headers on relay.
    pub fn append_header(&mut self, line: &str) -> Result<(), EditError> {
        let (name, value) = split_header_line(line)?;
        self.appended.push((name, value));
        Ok(())
    }

    /// Remove every header with this name (compact forms included), those
    /// of the message and those appended; returns how many went.
    pub fn remove_header(&mut self, name: &str) -> usize {
        let kind = HeaderName::classify(name.as_bytes());
        let mut n = 0;
        if !self.is_removed(kind, name) {
            n += self.msg.headers(name).count();
            self.removed.push((kind, name.to_owned()));
        }
        let before = self.appended.len();
        self.appended
            .retain(|(a, _)| !same_name(HeaderName::classify(a.as_bytes()), a, kind, name));
        n + before - self.appended.len()
    }

    pub(crate) fn is_removed(&self, kind: HeaderName, name: &str) -> bool {
        self.removed
            .iter()
            .any(|(k, n)| same_name(*k, n, kind, name))
    }

    /// The value of the first header with this name, edits applied, as
    /// the message arrived (a top Via without the `received` / `rport`
    /// the host added).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        let kind = HeaderName::classify(name.as_bytes());
        if !self.is_removed(kind, name) {
            if let Some(v) = self.msg_as_received().header(name) {
                return Some(v);
            }
        }
        self.appended
            .iter()
            .find(|(a, _)| same_name(HeaderName::classify(a.as_bytes()), a, kind, name))
            .map(|(_, v)| v.as_bytes())
    }

    /// Whether a header with this name is present, edits applied.
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Max-Forwards: as set with [`Request::set_max_forwards`], else the
    /// message's (`None` when absent or unreadable).
    pub fn max_forwards(&self) -> Option<u8> {
        self.max_forwards
            .or_else(|| self.msg.max_forwards().ok().flatten())
    }

    /// Set the Max-Forwards value to relay with (Kamailio's
    /// `process_maxfwd` decrements it this way). Once set,
    /// [`crate::SipHandle::t_relay`] sends it as is instead of
    /// decrementing, and does not refuse a 0 itself.
    pub fn set_max_forwards(&mut self, value: u8) {
        self.max_forwards = Some(value);
    }

    /// Whether the router set Max-Forwards itself.
    pub(crate) fn max_forwards_set(&self) -> bool {
        self.max_forwards.is_some()
    }

    /// Add a header line to the replies built for this request by
    /// [`crate::SipHandle::t_reply`] and [`crate::SipHandle::sl_reply`]
    /// (Kamailio's `append_to_reply`), given as for
    /// [`Request::append_header`]: one `Name: value` line per call, its
    /// final CRLF optional (we write the terminator ourselves); a CR, LF
    /// or NUL anywhere else is refused, here and again when a reply is
    /// built.
    pub fn append_to_reply(&mut self, line: &str) -> Result<(), EditError> {
        let (name, value) = split_header_line(line)?;
        self.reply_headers.push((name, value));
        Ok(())
    }

    /// The header lines added with [`Request::append_to_reply`], as (name,
    /// value), in order.
    pub fn reply_headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.reply_headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Set the body of the replies built for this request (Kamailio's
    /// `set_reply_body`), e.g. an SDP answer from an event socket client.
    pub fn set_reply_body(&mut self, content_type: &str, body: &[u8]) -> Result<(), EditError> {
        if content_type.is_empty() || content_type.contains(['\r', '\n', '\0']) {
            return Err(EditError::BadHeader(format!(
                "Content-Type: {content_type}"
            )));
        }
        self.reply_body = Some((content_type.to_owned(), Bytes::copy_from_slice(body)));
        Ok(())
    }

    /// Build a reply to this request with the reply headers and body set on
    /// it.
    pub(crate) fn build_reply(
        &self,
        code: u16,
        reason: &str,
        to_tag: Option<&[u8]>,
    ) -> Result<Bytes, ParseError> {
        let mut extra: Vec<(&[u8], &[u8])> = self
            .reply_headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        let body: &[u8] = match &self.reply_body {
            Some((ct, b)) => {
                extra.push((b"Content-Type", ct.as_bytes()));
                b
            }
            None => b"",
        };
        self.msg
            .response_with_body(code, reason.as_bytes(), to_tag, &extra, body)
            // A broken To cannot take a tag: answer without one rather
            // than not at all.
            .or_else(|_| {
                self.msg
                    .response_with_body(code, reason.as_bytes(), None, &extra, body)
            })
    }

    /// The reply header lines (name, value) and the reply body's
    /// Content-Type, for the reply check.
    pub(crate) fn reply_parts(&self) -> (&[(String, String)], Option<&str>) {
        (
            &self.reply_headers,
            self.reply_body.as_ref().map(|(ct, _)| ct.as_str()),
        )
    }

    /// Take the reply headers and body of `other` (the same request, as
    /// the router edited it later).
    pub(crate) fn take_reply_parts(&mut self, other: &Request) {
        self.reply_headers.clone_from(&other.reply_headers);
        self.reply_body.clone_from(&other.reply_body);
    }

    /// Arm a failure route for the next relay: when its branch ends with a
    /// final reply >= 300 or times out, the router's
    /// [`crate::Router::failure`] runs with this name instead of the reply
    /// being forwarded. Armed for one relay only (as Kamailio's
    /// `t_on_failure`): re-arm it in the failure route before relaying again.
    pub fn set_failure_route(&mut self, name: &str) {
        self.failure_route = Some(name.to_owned());
    }

    /// The armed failure route, if any.
    pub fn failure_route(&self) -> Option<&str> {
        self.failure_route.as_deref()
    }

    /// In a failure route: the code of the final reply that ended the branch
    /// (408 for a timeout).
    pub fn failure_code(&self) -> Option<u16> {
        self.failure_code
    }

    /// Whether routing changed Max-Forwards itself (removed or appended
    /// it, as Kamailio's `maxfwd` module does from a script).
    fn max_forwards_edited(&self) -> bool {
        self.removed
            .iter()
            .any(|(kind, _)| *kind == HeaderName::MaxForwards)
            || self
                .appended
                .iter()
                .any(|(n, _)| HeaderName::classify(n.as_bytes()) == HeaderName::MaxForwards)
    }

    /// The request as it would be relayed with `via` on top: edits applied
    /// and Max-Forwards decremented (70 inserted when absent), unless
    /// routing already set it: a ported Kamailio script decrements it with
    /// `process_maxfwd`, and a second decrement here would count the hop
    /// twice.
    ///
    /// `out`: the socket it leaves from (transport and the address our Via
    /// advertises), for the Record-Route rows the router asked for (two
    /// when it differs from the one the request came in on); `None`: as
    /// if the same.
    pub(crate) fn serialize_for_relay(
        &self,
        via: &str,
        out: Option<(Transport, SocketAddr)>,
    ) -> Bytes {
        let mut e = self.msg.edit();
        e.push(Edit::PrependVia(Bytes::copy_from_slice(via.as_bytes())));
        for rr in self.record_route_values(out) {
            e.push(Edit::InsertRecordRoute(rr));
        }
        if let Some(routes) = self.rr.route_set() {
            // The script removing Route after loose routing removes the
            // rest of the route set too, as it would in Kamailio.
            if !self.is_removed(HeaderName::Route, "Route") {
                e.push(Edit::SetRoutes(routes));
            }
        }
        if !self.max_forwards_edited() {
            e.push(match self.max_forwards {
                Some(v) => Edit::SetMaxForwards(v),
                None => Edit::DecrementMaxForwards { default: 70 },
            });
        }
        if let Some(u) = &self.ruri {
            e.push(Edit::SetRequestUri(u.clone()));
        }
        for (_, n) in &self.removed {
            e.push(Edit::RemoveHeaders(Bytes::copy_from_slice(n.as_bytes())));
        }
        for (n, v) in &self.appended {
            e.push(Edit::AppendHeader {
                name: Bytes::copy_from_slice(n.as_bytes()),
                value: Bytes::copy_from_slice(v.as_bytes()),
            });
        }
        e.serialize()
    }

    /// Where a relay goes: the destination URI if set, else the
    /// Request-URI (edited).
    pub(crate) fn next_hop(&self) -> Vec<u8> {
        match &self.dst_uri {
            Some(d) => d.as_bytes().to_vec(),
            None => self.ruri().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests;
