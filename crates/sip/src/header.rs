//! Header names: the ones a proxy reads often get an enum value, so that a
//! lookup compares one byte instead of strings.

/// A header name, classified once when the message is split into rows.
///
/// Compact forms (RFC 3261 §7.3.3) map to the same value as the long form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HeaderName {
    /// `Via` / `v`
    Via = 0,
    /// `From` / `f`
    From,
    /// `To` / `t`
    To,
    /// `Call-ID` / `i`
    CallId,
    /// `CSeq`
    CSeq,
    /// `Max-Forwards`
    MaxForwards,
    /// `Content-Length` / `l`
    ContentLength,
    /// `Content-Type` / `c`
    ContentType,
    /// `Content-Encoding` / `e`
    ContentEncoding,
    /// `Contact` / `m`
    Contact,
    /// `Route`
    Route,
    /// `Record-Route`
    RecordRoute,
    /// `Supported` / `k`
    Supported,
    /// `Subject` / `s`
    Subject,
    /// `Require`
    Require,
    /// `Proxy-Require`
    ProxyRequire,
    /// `Expires`
    Expires,
    /// Any other name; compare the row's name text.
    Other,
}

/// Number of known names (everything before `Other`), the size of the
/// per-message "first row of this kind" table.
pub(crate) const KNOWN: usize = HeaderName::Other as usize;

impl HeaderName {
    /// Classify a header name as it appears on the wire (any case, compact
    /// or long form).
    pub fn classify(name: &[u8]) -> HeaderName {
        // Dispatch on length first: most names are then settled by a single
        // case-insensitive compare.
        let is = |lit: &[u8]| name.eq_ignore_ascii_case(lit);
        match name.len() {
            1 => match name[0].to_ascii_lowercase() {
                b'v' => HeaderName::Via,
                b'f' => HeaderName::From,
                b't' => HeaderName::To,
                b'i' => HeaderName::CallId,
                b'm' => HeaderName::Contact,
                b'l' => HeaderName::ContentLength,
                b'c' => HeaderName::ContentType,
                b'k' => HeaderName::Supported,
                b's' => HeaderName::Subject,
                b'e' => HeaderName::ContentEncoding,
                _ => HeaderName::Other,
            },
            2 if is(b"to") => HeaderName::To,
            3 if is(b"via") => HeaderName::Via,
            4 if is(b"from") => HeaderName::From,
            4 if is(b"cseq") => HeaderName::CSeq,
            5 if is(b"route") => HeaderName::Route,
            7 => {
                if is(b"call-id") {
                    HeaderName::CallId
                } else if is(b"contact") {
                    HeaderName::Contact
                } else if is(b"expires") {
                    HeaderName::Expires
                } else if is(b"require") {
                    HeaderName::Require
                } else if is(b"subject") {
                    HeaderName::Subject
                } else {
                    HeaderName::Other
                }
            }
            9 if is(b"supported") => HeaderName::Supported,
            12 => {
                if is(b"max-forwards") {
                    HeaderName::MaxForwards
                } else if is(b"content-type") {
                    HeaderName::ContentType
                } else if is(b"record-route") {
                    HeaderName::RecordRoute
                } else {
                    HeaderName::Other
                }
            }
            13 if is(b"proxy-require") => HeaderName::ProxyRequire,
            14 if is(b"content-length") => HeaderName::ContentLength,
            16 if is(b"content-encoding") => HeaderName::ContentEncoding,
            _ => HeaderName::Other,
        }
    }

    /// The long form, as written when we generate a header.
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::ContentEncoding => "Content-Encoding",
            HeaderName::Contact => "Contact",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::Supported => "Supported",
            HeaderName::Subject => "Subject",
            HeaderName::Require => "Require",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::Expires => "Expires",
            HeaderName::Other => "",
        }
    }
}

/// RFC 3261 `token` characters: what a method or header name may hold.
/// A table look-up: the parser asks this of every byte of every header
/// name and parameter name (the `matches!` form cost about ten
/// instructions a byte, called out of line; bench/instructions.py).
#[inline]
pub(crate) fn is_token_char(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

/// [`is_token_char`]'s table.
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_chars_are_rfc3261s() {
        let rfc: Vec<u8> = (0..=255u8)
            .filter(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(b))
            .collect();
        let ours: Vec<u8> = (0..=255u8).filter(|&b| is_token_char(b)).collect();
        assert_eq!(ours, rfc);
        assert_eq!(ours.len(), 62 + 10);
    }

    #[test]
    fn compact_and_long_forms_agree() {
        let pairs: &[(&[u8], &[u8], HeaderName)] = &[
            (b"v", b"VIA", HeaderName::Via),
            (b"F", b"from", HeaderName::From),
            (b"t", b"To", HeaderName::To),
            (b"i", b"call-ID", HeaderName::CallId),
            (b"m", b"Contact", HeaderName::Contact),
            (b"l", b"Content-Length", HeaderName::ContentLength),
            (b"c", b"content-type", HeaderName::ContentType),
            (b"k", b"Supported", HeaderName::Supported),
            (b"s", b"Subject", HeaderName::Subject),
            (b"e", b"Content-Encoding", HeaderName::ContentEncoding),
        ];
        for (short, long, want) in pairs {
            assert_eq!(HeaderName::classify(short), *want);
            assert_eq!(HeaderName::classify(long), *want);
        }
        assert_eq!(
            HeaderName::classify(b"MaX-fOrWaRdS"),
            HeaderName::MaxForwards
        );
        assert_eq!(HeaderName::classify(b"cseq"), HeaderName::CSeq);
        assert_eq!(HeaderName::classify(b"X-Foo"), HeaderName::Other);
        assert_eq!(HeaderName::classify(b"x"), HeaderName::Other);
        assert_eq!(HeaderName::classify(b""), HeaderName::Other);
    }
}
