//! Kamailio's sanity checks (its sanity module), selected by the same bit
//! flags, run in the same order, failing with the same replies. Pure: the
//! caller sends the reply a [`SanityFailure`] asks for.
//!
//! Implemented: every check of [`MSG_CHECKS_DONE`] and every URI check.
//! [`VIA_SIP_VERSION`] and [`VIA_PROTOCOL`] pass, as they do in Kamailio
//! (its Via parser refuses those messages earlier; ours too).
//! [`CHECK_DIGEST`], [`CHECK_AUTHORIZATION`] and [`CHECK_SIZES`] are not
//! implemented and pass: there is no digest authentication here yet.

use crate::header::HeaderName;
use crate::message::SipMessage;
use crate::uri::{Scheme, Uri};
use crate::values::NameAddr;

/// The Request-URI's SIP version is 2.0 (else 505).
pub const RURI_SIP_VERSION: u32 = 1 << 0;
/// The Request-URI parses and has a known scheme (else 400, 416).
pub const RURI_SCHEME: u32 = 1 << 1;
/// From, To, Call-ID, CSeq and Via are present, the first four once.
pub const REQUIRED_HEADERS: u32 = 1 << 2;
/// The top Via's version (passes, as in Kamailio).
pub const VIA_SIP_VERSION: u32 = 1 << 3;
/// The top Via's transport (passes, as in Kamailio).
pub const VIA_PROTOCOL: u32 = 1 << 4;
/// The CSeq method is the request's method (else 400).
pub const CSEQ_METHOD: u32 = 1 << 5;
/// The CSeq number is below 2^31 (else 400).
pub const CSEQ_VALUE: u32 = 1 << 6;
/// Content-Length matches the bytes after the headers (else 400).
pub const CONTENT_LENGTH: u32 = 1 << 7;
/// An Expires header holds a 32-bit number (else 400).
pub const EXPIRES_VALUE: u32 = 1 << 8;
/// No Proxy-Require (no extension is supported; else 420).
pub const PROXY_REQUIRE: u32 = 1 << 9;
/// The URIs chosen by the URI flags parse (else 400).
pub const PARSE_URIS: u32 = 1 << 10;
/// Digest credentials (not implemented: passes).
pub const CHECK_DIGEST: u32 = 1 << 11;
/// From and To have at most one tag each (else fails, no reply).
pub const CHECK_DUPTAGS: u32 = 1 << 12;
/// The Authorization header (not implemented: passes).
pub const CHECK_AUTHORIZATION: u32 = 1 << 13;
/// The top Via parses and has a host and a branch (else fails, no reply).
pub const VIA1_HEADER: u32 = 1 << 14;
/// The top branch has the magic cookie, Route and Record-Route URIs have
/// `lr` (else fails, no reply).
pub const RFC3261_COMPLIANCE: u32 = 1 << 15;
/// Lengths of message parts (not implemented: passes).
pub const CHECK_SIZES: u32 = 1 << 16;
/// One past the highest message flag: flags must be below it.
pub const MSG_CHECKS_END: u32 = 1 << 17;
/// The message checks that do something here.
pub const MSG_CHECKS_DONE: u32 = RURI_SIP_VERSION
    | RURI_SCHEME
    | REQUIRED_HEADERS
    | CSEQ_METHOD
    | CSEQ_VALUE
    | CONTENT_LENGTH
    | EXPIRES_VALUE
    | PROXY_REQUIRE
    | PARSE_URIS
    | CHECK_DUPTAGS
    | VIA1_HEADER
    | RFC3261_COMPLIANCE;

/// URI check: the Request-URI.
pub const URI_RURI: u32 = 1 << 0;
/// URI check: the From URI.
pub const URI_FROM: u32 = 1 << 1;
/// URI check: the To URI.
pub const URI_TO: u32 = 1 << 2;
/// URI check: the Contact URIs.
pub const URI_CONTACT: u32 = 1 << 3;
/// One past the highest URI flag.
pub const URI_CHECKS_END: u32 = 1 << 4;

/// A failed check, and the reply Kamailio sends for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SanityFailure {
    /// Which check failed (its Kamailio name, for the log).
    pub check: &'static str,
    /// The reply's code; 0 when Kamailio sends none (the message is too
    /// broken to answer, or answering would not help).
    pub code: u16,
    /// The reply's reason phrase (Kamailio's), or what was wrong.
    pub reason: &'static str,
    /// A header line for the reply (`Unsupported: ...` with 420).
    pub header: Option<String>,
}

impl SanityFailure {
    fn reply(check: &'static str, code: u16, reason: &'static str) -> SanityFailure {
        SanityFailure {
            check,
            code,
            reason,
            header: None,
        }
    }

    fn silent(check: &'static str, reason: &'static str) -> SanityFailure {
        SanityFailure::reply(check, 0, reason)
    }
}

type Check = Result<(), SanityFailure>;

/// Run the checks `msg_checks` selects (URI checks by `uri_checks`), in
/// Kamailio's order; the first failure is returned. Checks that read a
/// request line are skipped for a reply.
pub fn sanity_check(msg: &SipMessage, msg_checks: u32, uri_checks: u32) -> Check {
    let on = |bit: u32| msg_checks & bit != 0;
    let req = msg.is_request();
    if on(RURI_SIP_VERSION) && req {
        ruri_sip_version(msg)?;
    }
    if on(RURI_SCHEME) && req {
        ruri_scheme(msg)?;
    }
    if on(REQUIRED_HEADERS) {
        required_headers(msg)?;
    }
    if on(VIA1_HEADER) {
        via1_header(msg)?;
    }
    if on(RFC3261_COMPLIANCE) {
        rfc3261(msg)?;
    }
    if on(CSEQ_METHOD) && req {
        cseq_method(msg)?;
    }
    if on(CSEQ_VALUE) {
        cseq_value(msg)?;
    }
    if on(CONTENT_LENGTH) {
        content_length(msg)?;
    }
    if on(EXPIRES_VALUE) {
        expires_value(msg)?;
    }
    if on(PROXY_REQUIRE) && req {
        proxy_require(msg)?;
    }
    if on(PARSE_URIS) {
        parse_uris(msg, uri_checks, req)?;
    }
    if on(CHECK_DUPTAGS) {
        duptags(msg)?;
    }
    Ok(())
}

fn ruri_sip_version(msg: &SipMessage) -> Check {
    let v = msg.version();
    let after = v.iter().position(|&b| b == b'/').map(|i| &v[i + 1..]);
    match after {
        Some(b"2.0") => Ok(()),
        Some(_) => Err(SanityFailure::reply(
            "ruri_sip_version",
            505,
            "Version Not Supported (R-URI)",
        )),
        None => Err(SanityFailure::silent("ruri_sip_version", "no / in version")),
    }
}

fn ruri_scheme(msg: &SipMessage) -> Check {
    match msg.request_uri() {
        Err(_) => Err(SanityFailure::reply("ruri_scheme", 400, "Bad Request URI")),
        Ok(u) if u.scheme == Scheme::Other => Err(SanityFailure::reply(
            "ruri_scheme",
            416,
            "Unsupported URI Scheme in Request URI",
        )),
        Ok(_) => Ok(()),
    }
}

fn required_headers(msg: &SipMessage) -> Check {
    const C: &str = "required_headers";
    for (kind, name) in [
        (HeaderName::From, "missing From"),
        (HeaderName::To, "missing To"),
        (HeaderName::CallId, "missing Call-ID"),
        (HeaderName::CSeq, "missing CSeq"),
        (HeaderName::Via, "missing Via"),
    ] {
        if msg.header_of(kind).is_none() {
            return Err(SanityFailure::silent(C, name));
        }
    }
    for (kind, name) in [
        (HeaderName::From, "duplicated From"),
        (HeaderName::To, "duplicated To"),
        (HeaderName::CallId, "duplicated Call-ID"),
        (HeaderName::CSeq, "duplicated CSeq"),
    ] {
        if msg.headers_of(kind).nth(1).is_some() {
            return Err(SanityFailure::silent(C, name));
        }
    }
    Ok(())
}

fn via1_header(msg: &SipMessage) -> Check {
    const C: &str = "via1_header";
    let via = msg
        .top_via()
        .map_err(|_| SanityFailure::silent(C, "top Via does not parse"))?;
    if via.host.is_empty() {
        return Err(SanityFailure::silent(C, "top Via has no host"));
    }
    if via.branch.is_none_or(<[u8]>::is_empty) {
        return Err(SanityFailure::silent(C, "top Via has no branch"));
    }
    Ok(())
}

fn rfc3261(msg: &SipMessage) -> Check {
    const C: &str = "rfc3261_compliance";
    let via = msg
        .top_via()
        .map_err(|_| SanityFailure::silent(C, "top Via does not parse"))?;
    if !via.branch.unwrap_or_default().starts_with(b"z9hG4bK") {
        return Err(SanityFailure::silent(
            C,
            "top Via branch lacks the magic cookie",
        ));
    }
    for kind in [HeaderName::RecordRoute, HeaderName::Route] {
        for el in msg.elements_of(kind) {
            let lr = NameAddr::parse(el)
                .ok()
                .and_then(|na| na.parse_uri().ok())
                .is_some_and(|u| u.lr());
            if !lr {
                return Err(SanityFailure::silent(
                    C,
                    "a Route or Record-Route URI lacks lr",
                ));
            }
        }
    }
    Ok(())
}

fn cseq_method(msg: &SipMessage) -> Check {
    const C: &str = "cseq_method";
    let cseq = msg
        .cseq()
        .map_err(|_| SanityFailure::silent(C, "CSeq does not parse"))?;
    if Some(cseq.method.as_bytes()) != msg.method().map(|m| m.as_bytes()) {
        return Err(SanityFailure::reply(
            C,
            400,
            "CSeq method does not match request method",
        ));
    }
    Ok(())
}

fn cseq_value(msg: &SipMessage) -> Check {
    const C: &str = "cseq_value";
    let v = msg
        .header_of(HeaderName::CSeq)
        .ok_or_else(|| SanityFailure::silent(C, "missing CSeq"))?
        .trim_ascii();
    let number = &v[..v
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(v.len())];
    if number.is_empty() {
        return Err(SanityFailure::reply(
            C,
            400,
            "Missing number in CSeq header",
        ));
    }
    if number.len() > 10 || crate::lex::parse_u64(number).is_none_or(|n| n >= 1 << 31) {
        return Err(SanityFailure::reply(C, 400, "CSeq number is illegal"));
    }
    Ok(())
}

fn content_length(msg: &SipMessage) -> Check {
    let Some(cl) = msg.content_length() else {
        return Ok(());
    };
    // Like Kamailio, every byte after the headers counts: a datagram
    // carrying more than Content-Length says fails (we would drop them).
    let buf = msg.buffer();
    let body_start = (msg.body().as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    if (buf.len().saturating_sub(body_start)) as u64 != cl {
        return Err(SanityFailure::reply(
            "content_length",
            400,
            "Content-Length mis-match",
        ));
    }
    Ok(())
}

fn expires_value(msg: &SipMessage) -> Check {
    const C: &str = "expires_value";
    let Some(v) = msg.header_of(HeaderName::Expires) else {
        return Ok(());
    };
    let v = v.trim_ascii();
    if v.is_empty() {
        return Err(SanityFailure::reply(
            C,
            400,
            "Missing number in Expires header",
        ));
    }
    let fits = v.len() <= 10
        && v.iter().all(u8::is_ascii_digit)
        && crate::lex::parse_u64(v).is_some_and(|n| n <= u64::from(u32::MAX));
    if !fits {
        return Err(SanityFailure::reply(C, 400, "Expires value is illegal"));
    }
    Ok(())
}

fn proxy_require(msg: &SipMessage) -> Check {
    const C: &str = "proxy_require";
    let Some(v) = msg.header_of(HeaderName::ProxyRequire) else {
        return Ok(());
    };
    // No extension is supported: the first one named is refused.
    let first = v
        .split(|&b| b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if first.is_empty() {
        return Err(SanityFailure::reply(C, 400, "Bad Proxy Require Header"));
    }
    let mut f = SanityFailure::reply(C, 420, "Bad Proxy Require Extension");
    f.header = Some(format!("Unsupported: {}", String::from_utf8_lossy(first)));
    Err(f)
}

fn parse_uris(msg: &SipMessage, checks: u32, req: bool) -> Check {
    const C: &str = "parse_uris";
    if checks & URI_RURI != 0 && req && msg.request_uri().is_err() {
        return Err(SanityFailure::reply(C, 400, "Bad Request URI"));
    }
    for (bit, kind, reason) in [
        (URI_FROM, HeaderName::From, "Invalid From Header"),
        (URI_TO, HeaderName::To, "Invalid To Header"),
    ] {
        if checks & bit == 0 {
            continue;
        }
        let Some(v) = msg.header_of(kind) else {
            return Err(SanityFailure::silent(C, reason));
        };
        if NameAddr::parse(v).and_then(|na| na.parse_uri()).is_err() {
            return Err(SanityFailure::reply(C, 400, reason));
        }
    }
    if checks & URI_CONTACT != 0 {
        for (n, el) in msg.elements_of(HeaderName::Contact).enumerate() {
            if n == 0 && el.trim_ascii() == b"*" {
                continue;
            }
            let na = NameAddr::parse(el)
                .map_err(|_| SanityFailure::reply(C, 400, "Bad Contact Header"))?;
            if n == 0 && Uri::parse(na.uri).is_err() {
                return Err(SanityFailure::reply(C, 400, "Bad Contact URI"));
            }
        }
    }
    Ok(())
}

fn duptags(msg: &SipMessage) -> Check {
    for kind in [HeaderName::From, HeaderName::To] {
        let Some(v) = msg.header_of(kind) else {
            continue;
        };
        let Ok(na) = NameAddr::parse(v) else { continue };
        let tags = na
            .params()
            .filter_map(Result::ok)
            .filter(|(name, _)| name.eq_ignore_ascii_case(b"tag"))
            .count();
        if tags > 1 {
            return Err(SanityFailure::silent("duptags", "duplicated tag"));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "sanity_tests.rs"]
mod tests;
