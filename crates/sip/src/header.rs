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

/// A name of 2 to 16 bytes as two little-endian words that together hold
/// every byte: its first and its last 8 bytes (8 to 16 bytes long), 4
/// bytes (4 to 7) or 2 bytes (2 and 3), overlapping in the middle. Two
/// names of the same length are equal when their words are. Other lengths
/// give (0, 0): [`HeaderName::classify`] compares no name of those
/// lengths by words.
#[inline(always)]
fn words(s: &[u8]) -> (u64, u64) {
    let n = s.len();
    match n {
        8..=16 => (le(&s[..8]), le(&s[n - 8..])),
        4..=7 => (le(&s[..4]), le(&s[n - 4..])),
        2..=3 => (le(&s[..2]), le(&s[n - 2..])),
        _ => (0, 0),
    }
}

/// Up to 8 bytes as a little-endian number.
#[inline(always)]
fn le(b: &[u8]) -> u64 {
    match b.len() {
        8 => u64::from_le_bytes(b.try_into().unwrap_or_default()),
        4 => u32::from_le_bytes(b.try_into().unwrap_or_default()).into(),
        2 => u16::from_le_bytes(b.try_into().unwrap_or_default()).into(),
        _ => 0,
    }
}

/// A long header name, lower case, as [`words`] splits it, with a mask
/// holding 0x20 at each byte that is a letter: a name's word OR'ed with
/// the mask equals the literal's exactly when the name's byte is the
/// letter in either case, and every other byte (`-`) is equal as is.
/// (OR'ing 0x20 into every byte would let a CR match `-`.)
struct Lit {
    lo: u64,
    hi: u64,
    fold_lo: u64,
    fold_hi: u64,
}

impl Lit {
    const fn new(lower: &[u8]) -> Lit {
        let n = lower.len();
        let k = if n >= 8 {
            8
        } else if n >= 4 {
            4
        } else {
            2
        };
        Lit {
            lo: word(lower, 0, k, false),
            hi: word(lower, n - k, k, false),
            fold_lo: word(lower, 0, k, true),
            fold_hi: word(lower, n - k, k, true),
        }
    }

    #[inline(always)]
    fn matches(&self, (lo, hi): (u64, u64)) -> bool {
        (lo | self.fold_lo) == self.lo && (hi | self.fold_hi) == self.hi
    }
}

/// `k` bytes of `s` from `at`, little-endian: the bytes themselves, or
/// (`fold`) 0x20 where the byte is a lower-case letter and 0 elsewhere.
const fn word(s: &[u8], at: usize, k: usize, fold: bool) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < k {
        let b = s[at + i];
        assert!(!b.is_ascii_uppercase(), "a Lit is written in lower case");
        let v = if !fold {
            b
        } else if b.is_ascii_lowercase() {
            0x20
        } else {
            0
        };
        w |= (v as u64) << (8 * i);
        i += 1;
    }
    w
}

/// The long names [`HeaderName::classify`] knows.
mod lit {
    use super::Lit;
    pub(super) const TO: Lit = Lit::new(b"to");
    pub(super) const VIA: Lit = Lit::new(b"via");
    pub(super) const FROM: Lit = Lit::new(b"from");
    pub(super) const CSEQ: Lit = Lit::new(b"cseq");
    pub(super) const ROUTE: Lit = Lit::new(b"route");
    pub(super) const CALL_ID: Lit = Lit::new(b"call-id");
    pub(super) const CONTACT: Lit = Lit::new(b"contact");
    pub(super) const EXPIRES: Lit = Lit::new(b"expires");
    pub(super) const REQUIRE: Lit = Lit::new(b"require");
    pub(super) const SUBJECT: Lit = Lit::new(b"subject");
    pub(super) const SUPPORTED: Lit = Lit::new(b"supported");
    pub(super) const MAX_FORWARDS: Lit = Lit::new(b"max-forwards");
    pub(super) const CONTENT_TYPE: Lit = Lit::new(b"content-type");
    pub(super) const RECORD_ROUTE: Lit = Lit::new(b"record-route");
    pub(super) const PROXY_REQUIRE: Lit = Lit::new(b"proxy-require");
    pub(super) const CONTENT_LENGTH: Lit = Lit::new(b"content-length");
    pub(super) const CONTENT_ENCODING: Lit = Lit::new(b"content-encoding");
}

impl HeaderName {
    /// Classify a header name as it appears on the wire (any case, compact
    /// or long form).
    pub fn classify(name: &[u8]) -> HeaderName {
        // Dispatch on length first; a long name is then settled by
        // comparing two words against each candidate of that length (see
        // [`Lit`]), not byte by byte.
        let w = words(name);
        let is = |lit: &Lit| lit.matches(w);
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
            2 if is(&lit::TO) => HeaderName::To,
            3 if is(&lit::VIA) => HeaderName::Via,
            4 if is(&lit::FROM) => HeaderName::From,
            4 if is(&lit::CSEQ) => HeaderName::CSeq,
            5 if is(&lit::ROUTE) => HeaderName::Route,
            7 => {
                if is(&lit::CALL_ID) {
                    HeaderName::CallId
                } else if is(&lit::CONTACT) {
                    HeaderName::Contact
                } else if is(&lit::EXPIRES) {
                    HeaderName::Expires
                } else if is(&lit::REQUIRE) {
                    HeaderName::Require
                } else if is(&lit::SUBJECT) {
                    HeaderName::Subject
                } else {
                    HeaderName::Other
                }
            }
            9 if is(&lit::SUPPORTED) => HeaderName::Supported,
            12 => {
                if is(&lit::MAX_FORWARDS) {
                    HeaderName::MaxForwards
                } else if is(&lit::CONTENT_TYPE) {
                    HeaderName::ContentType
                } else if is(&lit::RECORD_ROUTE) {
                    HeaderName::RecordRoute
                } else {
                    HeaderName::Other
                }
            }
            13 if is(&lit::PROXY_REQUIRE) => HeaderName::ProxyRequire,
            14 if is(&lit::CONTENT_LENGTH) => HeaderName::ContentLength,
            16 if is(&lit::CONTENT_ENCODING) => HeaderName::ContentEncoding,
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

    /// The long names and what they classify as, for [`by_bytes`].
    const LONG: [(&[u8], HeaderName); 17] = [
        (b"to", HeaderName::To),
        (b"via", HeaderName::Via),
        (b"from", HeaderName::From),
        (b"cseq", HeaderName::CSeq),
        (b"route", HeaderName::Route),
        (b"call-id", HeaderName::CallId),
        (b"contact", HeaderName::Contact),
        (b"expires", HeaderName::Expires),
        (b"require", HeaderName::Require),
        (b"subject", HeaderName::Subject),
        (b"supported", HeaderName::Supported),
        (b"max-forwards", HeaderName::MaxForwards),
        (b"content-type", HeaderName::ContentType),
        (b"record-route", HeaderName::RecordRoute),
        (b"proxy-require", HeaderName::ProxyRequire),
        (b"content-length", HeaderName::ContentLength),
        (b"content-encoding", HeaderName::ContentEncoding),
    ];

    /// Byte by byte, as the classifier was before it compared words.
    fn by_bytes(name: &[u8]) -> HeaderName {
        if name.len() == 1 {
            return HeaderName::classify(name);
        }
        LONG.iter()
            .find(|(lit, _)| name.eq_ignore_ascii_case(lit))
            .map_or(HeaderName::Other, |(_, k)| *k)
    }

    #[test]
    fn words_classify_as_bytes_do() {
        // Every known long name, in upper and lower case, with each byte
        // replaced by each of 256 values (CR for `-` among them, `@` and
        // `_` whose bit 0x20 is clear, the letter's other case): the word
        // compare and the byte compare must agree on every one.
        let mut checked = 0;
        for (name, _) in LONG {
            for base in [name.to_vec(), name.to_ascii_uppercase()] {
                assert_ne!(HeaderName::classify(&base), HeaderName::Other, "{base:?}");
                for i in 0..base.len() {
                    for b in 0..=255u8 {
                        let mut m = base.clone();
                        m[i] = b;
                        assert_eq!(HeaderName::classify(&m), by_bytes(&m), "{m:?}");
                        checked += 1;
                    }
                }
                // One byte shorter, at either end, and one longer.
                for m in [&base[1..], &base[..base.len() - 1]] {
                    assert_eq!(HeaderName::classify(m), by_bytes(m), "{m:?}");
                }
                let mut longer = base.clone();
                longer.push(b'x');
                assert_eq!(HeaderName::classify(&longer), by_bytes(&longer));
            }
        }
        assert!(checked > 50_000);
        // Mixed case, as written on the wire.
        assert_eq!(HeaderName::classify(b"Call-ID"), HeaderName::CallId);
        assert_eq!(
            HeaderName::classify(b"CONTENT-length"),
            HeaderName::ContentLength
        );
        assert_eq!(HeaderName::classify(b"Call\rID"), HeaderName::Other);
        assert_eq!(HeaderName::classify(b"max_forwards"), HeaderName::Other);
    }
}
