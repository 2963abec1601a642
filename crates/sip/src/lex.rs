//! Byte-level helpers shared by the value parsers.
//!
//! Header values keep their folding (CRLF followed by SP/HT) in place, so
//! every "skip whitespace" here treats CR and LF as whitespace too: inside a
//! value range a line break can only be part of a fold.

/// Linear whitespace inside a header value, folds included.
#[inline]
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// FNV-1a: the same Call-ID must pick the same router thread, stripe and
/// part of the transaction table from any thread.
pub(crate) fn fnv(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &c in b {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Index of the first byte at or after `i` that is not whitespace.
#[inline]
pub(crate) fn skip_lws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_lws(s[i]) {
        i += 1;
    }
    i
}

/// `s` without leading and trailing whitespace.
#[inline]
pub(crate) fn trim_lws(s: &[u8]) -> &[u8] {
    let start = skip_lws(s, 0);
    let mut end = s.len();
    while end > start && is_lws(s[end - 1]) {
        end -= 1;
    }
    &s[start..end]
}

/// Given `s[i] == b'"'`, the index just past the closing quote, honouring
/// backslash escapes; `None` when the string is not terminated.
pub(crate) fn quoted_end(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// Parse a run of ASCII digits (leading zeros allowed) into a `u64`,
/// refusing empty input, other bytes and overflow.
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Splits a header value at top-level commas: commas inside quoted strings
/// or `<...>` do not split, since both may legally hold commas (a display
/// name, a URI with `?` headers).
pub(crate) struct CommaSplit<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> CommaSplit<'a> {
    pub(crate) fn new(s: &'a [u8]) -> Self {
        CommaSplit { rest: Some(s) }
    }
}

impl<'a> Iterator for CommaSplit<'a> {
    /// One element, with surrounding whitespace kept so callers can report
    /// it exactly.
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let s = self.rest?;
        let mut i = 0;
        let mut in_angle = false;
        // Jumps from one byte that matters to the next: outside `<...>` a
        // comma, a quote or a `<`; inside, a quote or the `>`.
        loop {
            let next = if in_angle {
                memchr::memchr2(b'"', b'>', &s[i..])
            } else {
                memchr::memchr3(b',', b'"', b'<', &s[i..])
            };
            let Some(k) = next else { break };
            i += k;
            match s[i] {
                b'"' => match quoted_end(s, i) {
                    Some(j) => {
                        i = j;
                        continue;
                    }
                    // An unterminated quote swallows the rest: the element
                    // parser then reports it.
                    None => break,
                },
                b'<' => in_angle = true,
                b'>' => in_angle = false,
                _ => {
                    self.rest = Some(&s[i + 1..]);
                    return Some(&s[..i]);
                }
            }
            i += 1;
        }
        self.rest = None;
        Some(s)
    }
}

/// The IP address a host part of a Via or URI is (`[...]` around IPv6
/// taken off), if it is one. The common dotted IPv4 is read from the
/// bytes; anything else goes to the standard parser, which decides.
pub(crate) fn host_ip(host: &[u8]) -> Option<std::net::IpAddr> {
    let h = host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(host);
    if let Some(v4) = plain_ipv4(h) {
        return Some(v4.into());
    }
    std::str::from_utf8(h).ok()?.parse().ok()
}

/// Four decimal octets of 1–3 digits, no leading zero, each up to 255:
/// what the standard parser takes as IPv4, or `None` (then the standard
/// parser is asked, so an odd form is never taken differently).
fn plain_ipv4(h: &[u8]) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = h.split(|&b| b == b'.');
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || (p.len() > 1 && p[0] == b'0') {
            return None;
        }
        let mut n: u16 = 0;
        for &b in p {
            if !b.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u16::from(b - b'0');
        }
        *o = u8::try_from(n).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(std::net::Ipv4Addr::from(octets))
}

/// The part before the first top-level comma (see [`CommaSplit`]).
pub(crate) fn first_element(s: &[u8]) -> &[u8] {
    CommaSplit::new(s).next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte reader takes exactly what the standard parser takes,
    /// and reads the same address.
    #[test]
    fn host_ip_reads_what_the_standard_parser_reads() {
        let mut cases: Vec<String> = [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.04",
            "1..3.4",
            ".1.2.3",
            "1.2.3.4.",
            "1.2.3.-4",
            "1.2.3.4 ",
            "1.2.3.1000",
            "::1",
            "[::1]",
            "[2001:db8::1]",
            "2001:db8::1",
            "host.example",
            "1.2.3.4a",
            "a1.2.3.4",
            "",
            "[]",
            "[1.2.3.4]",
            "999.0.0.0",
            "0.0.0.00",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every octet value in each place, and near-misses around them.
        for v in 0..=300u32 {
            cases.push(format!("{v}.1.2.3"));
            cases.push(format!("1.{v}.2.3"));
            cases.push(format!("1.2.{v}.3"));
            cases.push(format!("1.2.3.{v}"));
            cases.push(format!("1.2.3.0{v}"));
        }
        for c in &cases {
            let h = c
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(c);
            let std = h.parse::<std::net::IpAddr>().ok();
            assert_eq!(host_ip(c.as_bytes()), std, "{c:?}");
        }
    }

    #[test]
    fn comma_split_respects_quotes_and_angles() {
        let v: Vec<&[u8]> = CommaSplit::new(b"\"a,b\" <sip:x?h=1,2>;p=1, <sip:y>, z").collect();
        assert_eq!(
            v,
            vec![
                &b"\"a,b\" <sip:x?h=1,2>;p=1"[..],
                &b" <sip:y>"[..],
                &b" z"[..]
            ]
        );
        let v: Vec<&[u8]> = CommaSplit::new(b"\"a\\\",b\",c").collect();
        assert_eq!(v.len(), 2);
        let v: Vec<&[u8]> = CommaSplit::new(b"\"open, c").collect();
        assert_eq!(v, vec![&b"\"open, c"[..]]);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b"0068"), Some(68));
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b"18446744073709551617"), None);
    }

    #[test]
    fn trims_folds() {
        assert_eq!(trim_lws(b" \r\n a \t"), b"a");
        assert_eq!(trim_lws(b"   "), b"");
        assert_eq!(quoted_end(b"\"a\\\"b\"x", 0), Some(6));
        assert_eq!(quoted_end(b"\"ab\\", 0), None);
    }
}
