//! The one pass over a message's bytes: the start line, the header
//! boundaries, Content-Length, and the framing of stream transports.

use bytes::Bytes;

use super::{HeaderRow, Method, Span, StartLine};
use crate::error::{ParseError, Shown};
use crate::header::{is_token_char, HeaderName};
use crate::lex::{parse_u64, trim_lws};

/// Length of a line break at `nl` (the index of a `\n`): 2 for CRLF, 1 for LF.
/// Returns the end of the line's content.
#[inline]
pub(super) fn content_end(b: &[u8], line_start: usize, nl: usize) -> usize {
    if nl > line_start && b[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    }
}

/// The boundary pass over the header section, from `pos` (just after the
/// start line). Pushes one row per header and returns (start of the empty
/// line, start of the body).
pub(super) fn scan_headers(
    b: &[u8],
    mut pos: usize,
    rows: &mut Vec<HeaderRow>,
) -> Result<(usize, usize), ParseError> {
    loop {
        let nl = match memchr::memchr(b'\n', b.get(pos..).unwrap_or(b"")) {
            Some(n) => pos + n,
            None => return Err(ParseError::NoHeaderEnd),
        };
        let end = content_end(b, pos, nl);
        let next = nl + 1;
        if end == pos {
            return Ok((pos, next));
        }
        let line = &b[pos..end];
        if line[0] == b' ' || line[0] == b'\t' {
            let Some(last) = rows.last_mut() else {
                return Err(ParseError::FoldBeforeHeader(Shown::new(line)));
            };
            let t = trim_lws(line);
            if !t.is_empty() {
                // `t` lies inside `line`, so this offset arithmetic is exact.
                let t_start = pos + (t.as_ptr() as usize - line.as_ptr() as usize);
                if last.value.start == last.value.end {
                    last.value.start = t_start as u32;
                }
                last.value.end = (t_start + t.len()) as u32;
            }
            last.line.end = next as u32;
        } else {
            let (name_end, colon) = header_name(line)?;
            let name = &line[..name_end];
            let v = trim_lws(&line[colon + 1..]);
            let v_start = if v.is_empty() {
                end
            } else {
                pos + (v.as_ptr() as usize - line.as_ptr() as usize)
            };
            rows.push(HeaderRow {
                kind: HeaderName::classify(name),
                name: Span::new(pos, pos + name_end),
                value: Span::new(v_start, v_start + v.len()),
                line: Span::new(pos, next),
            });
        }
        pos = next;
    }
}

/// Where a header line's name ends and where its colon is. The name is
/// read as it is checked (token characters, then spaces or tabs, then the
/// colon), so a well-formed line is not searched for its colon as well;
/// a malformed one is, to say what is wrong with it.
#[inline]
fn header_name(line: &[u8]) -> Result<(usize, usize), ParseError> {
    let name_end = line
        .iter()
        .position(|&c| !is_token_char(c))
        .unwrap_or(line.len());
    let mut colon = name_end;
    while colon < line.len() && (line[colon] == b' ' || line[colon] == b'\t') {
        colon += 1;
    }
    if name_end > 0 && line.get(colon) == Some(&b':') {
        return Ok((name_end, colon));
    }
    match memchr::memchr(b':', line) {
        None => Err(ParseError::NoColon(Shown::new(line))),
        Some(colon) => Err(ParseError::BadHeaderName(Shown::new(&line[..colon]))),
    }
}

/// Validates `SIP/<digits>.<digits>` (the literal "SIP" in any case).
pub(super) fn valid_version(v: &[u8]) -> bool {
    if v.len() < 7 || !v[..4].eq_ignore_ascii_case(b"SIP/") {
        return false;
    }
    let rest = &v[4..];
    let Some(dot) = memchr::memchr(b'.', rest) else {
        return false;
    };
    let (maj, min) = (&rest[..dot], &rest[dot + 1..]);
    !maj.is_empty()
        && !min.is_empty()
        && maj.iter().all(u8::is_ascii_digit)
        && min.iter().all(u8::is_ascii_digit)
}

pub(super) fn parse_start_line(
    buf: &Bytes,
    pos: usize,
    end: usize,
) -> Result<StartLine, ParseError> {
    let line = &buf[pos..end];
    let bad = || ParseError::BadStartLine(Shown::new(line));
    let sp1 = memchr::memchr(b' ', line).ok_or_else(bad)?;
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        let version = &line[..sp1];
        if !valid_version(version) {
            return Err(ParseError::BadVersion(Shown::new(version)));
        }
        let rest = &line[sp1 + 1..];
        let code_end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
        let code_text = &rest[..code_end];
        let code = match code_text {
            [a, b, c] if code_text.iter().all(u8::is_ascii_digit) => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return Err(ParseError::BadStatusCode(Shown::new(code_text))),
        };
        if !(100..=699).contains(&code) {
            return Err(ParseError::BadStatusCode(Shown::new(code_text)));
        }
        let reason_start = (pos + sp1 + 1 + code_end + 1).min(end);
        return Ok(StartLine::Response {
            code,
            reason: Span::new(reason_start, end),
            version: Span::new(pos, pos + sp1),
        });
    }
    let method = &line[..sp1];
    if method.is_empty() || !method.iter().all(|&c| is_token_char(c)) {
        return Err(ParseError::BadMethod(Shown::new(method)));
    }
    let rest = &line[sp1 + 1..];
    let sp2 = memchr::memchr(b' ', rest).ok_or_else(bad)?;
    let uri = &rest[..sp2];
    let version = &rest[sp2 + 1..];
    // Exactly one SP between elements and none at the end (RFC 4475
    // lwsstart, trws): anything else leaves an empty URI or a space in the
    // version.
    if uri.is_empty() || uri.iter().any(|&c| c <= b' ' || c == 0x7f) {
        return Err(bad());
    }
    // A Request-URI starts with its scheme (RFC 4475 ltgtruri: `<sip:...>`
    // is refused here, cheaply, rather than on a later URI read).
    if !uri[0].is_ascii_alphabetic() || memchr::memchr(b':', uri).is_none() {
        return Err(bad());
    }
    if version.contains(&b' ') {
        return Err(bad());
    }
    if !valid_version(version) {
        return Err(ParseError::BadVersion(Shown::new(version)));
    }
    let uri_start = pos + sp1 + 1;
    let version_start = uri_start + sp2 + 1;
    Ok(StartLine::Request {
        method: Method::from_slice(buf, method),
        uri: Span::new(uri_start, uri_start + sp2),
        version: Span::new(version_start, end),
    })
}

/// The Content-Length of a header section: the value all Content-Length
/// rows agree on, `None` when there is none.
pub(super) fn content_length_of(b: &[u8], rows: &[HeaderRow]) -> Result<Option<u64>, ParseError> {
    let mut found = None;
    for r in rows.iter().filter(|r| r.kind == HeaderName::ContentLength) {
        let v = &b[r.value.range()];
        let n = parse_u64(v).ok_or_else(|| ParseError::BadContentLength(Shown::new(v)))?;
        match found {
            Some(prev) if prev != n => return Err(ParseError::ConflictingContentLength(prev, n)),
            _ => found = Some(n),
        }
    }
    Ok(found)
}

/// Leading CR/LF bytes: RFC 3261 §7.5 says to ignore them before a start
/// line, and RFC 5626 keep-alives are made of them.
pub(super) fn leading_crlf(b: &[u8]) -> usize {
    b.iter().take_while(|&&c| c == b'\r' || c == b'\n').count()
}
