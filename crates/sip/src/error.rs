//! The one error type of the message layer.

use std::fmt;

/// Why a message, or one value read from it, was refused.
///
/// Each variant is one cause; the `Display` text names what was wrong and
/// shows the offending bytes (cut to a readable length), so a log line or
/// a 400 reason phrase can be built from it directly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The buffer held nothing but line breaks, or nothing at all.
    #[error("empty message")]
    Empty,
    /// The message (or its declared size) exceeds the configured maximum.
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Bytes the message has or announces.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// The first line is neither a request line nor a status line.
    #[error("bad start line {0}")]
    BadStartLine(Shown),
    /// The method token of a request line has characters a token may not.
    #[error("bad method {0}")]
    BadMethod(Shown),
    /// The protocol version is not `SIP/<digits>.<digits>`.
    #[error("bad SIP version {0}")]
    BadVersion(Shown),
    /// The status code is not three digits in 100..=699.
    #[error("bad status code {0}")]
    BadStatusCode(Shown),
    /// No empty line ends the header section.
    #[error("no empty line ends the headers")]
    NoHeaderEnd,
    /// A header line has no colon.
    #[error("header line without a colon {0}")]
    NoColon(Shown),
    /// A header name is empty or has characters a token may not.
    #[error("bad header name {0}")]
    BadHeaderName(Shown),
    /// A continuation line (starting with SP or HT) came before any header.
    #[error("folded line before the first header {0}")]
    FoldBeforeHeader(Shown),
    /// A header a read needs is absent.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// Content-Length is not a decimal number that fits.
    #[error("bad Content-Length value {0}")]
    BadContentLength(Shown),
    /// Several Content-Length headers disagree.
    #[error("conflicting Content-Length values {0} and {1}")]
    ConflictingContentLength(u64, u64),
    /// Content-Length announces more body than the datagram holds.
    #[error("Content-Length {declared} exceeds the {available} body bytes present")]
    BodyTooShort {
        /// What Content-Length says.
        declared: u64,
        /// What is there.
        available: usize,
    },
    /// A Via value does not follow `SIP/2.0/transport host[:port] *(;param)`.
    #[error("bad Via value {0}")]
    BadVia(Shown),
    /// A CSeq value is not `number method`, or the number does not fit 32 bits.
    #[error("bad CSeq value {0}")]
    BadCSeq(Shown),
    /// A Max-Forwards value is not a number in 0..=255.
    #[error("bad Max-Forwards value {0}")]
    BadMaxForwards(Shown),
    /// A From, To, Contact or Route value is not a name-addr or addr-spec.
    #[error("bad address value {0}")]
    BadNameAddr(Shown),
    /// A URI does not parse.
    #[error("bad URI {0}")]
    BadUri(Shown),
    /// A `;name=value` parameter list is malformed (empty name, stray `=`).
    #[error("bad parameter list {0}")]
    BadParams(Shown),
    /// A Call-ID value is empty or holds whitespace.
    #[error("bad Call-ID value {0}")]
    BadCallId(Shown),
    /// The read only makes sense on a request (or only on a response).
    #[error("{0}")]
    WrongKind(&'static str),
}

/// Bytes from the message, quoted and cut for an error text.
///
/// Kept as a `String` so the error owns no part of the message buffer and
/// can outlive it (a log line, a reply built after the buffer is gone).
#[derive(Clone, PartialEq, Eq)]
pub struct Shown(String);

/// How many bytes of an offending value an error keeps.
const SHOWN_MAX: usize = 64;

impl Shown {
    /// Quote `bytes` for display, escaping control bytes and cutting long values.
    pub fn new(bytes: &[u8]) -> Self {
        let cut = bytes.len() > SHOWN_MAX;
        let part = &bytes[..bytes.len().min(SHOWN_MAX)];
        let mut s = String::with_capacity(part.len() + 8);
        s.push('"');
        for chunk in part.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '"' => s.push_str("\\\""),
                    '\\' => s.push_str("\\\\"),
                    c if c.is_control() => s.push_str(&c.escape_default().to_string()),
                    c => s.push(c),
                }
            }
            for b in chunk.invalid() {
                s.push_str(&format!("\\x{b:02x}"));
            }
        }
        s.push('"');
        if cut {
            s.push_str("...");
        }
        Shown(s)
    }

    /// The quoted text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_value() {
        let e = ParseError::BadContentLength(Shown::new(b"abc"));
        assert_eq!(e.to_string(), "bad Content-Length value \"abc\"");
    }

    #[test]
    fn shown_escapes_and_cuts() {
        let s = Shown::new(b"a\r\n\"\xff");
        assert_eq!(s.as_str(), "\"a\\r\\n\\\"\\xff\"");
        let long = vec![b'x'; 100];
        assert!(Shown::new(&long).as_str().ends_with("\"..."));
    }
}
