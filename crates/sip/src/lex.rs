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
        while i < s.len() {
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
                b',' if !in_angle => {
                    self.rest = Some(&s[i + 1..]);
                    return Some(&s[..i]);
                }
                _ => {}
            }
            i += 1;
        }
        self.rest = None;
        Some(s)
    }
}

/// The part before the first top-level comma (see [`CommaSplit`]).
pub(crate) fn first_element(s: &[u8]) -> &[u8] {
    CommaSplit::new(s).next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

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
