//! Typed header values, parsed on demand from the raw value slices.

use crate::error::{ParseError, Shown};
use crate::lex::{is_lws, quoted_end, skip_lws, trim_lws};
use crate::message::Method;
use crate::uri::{parse_port, Uri};

/// Iterates a header-parameter list (`;a=b ; c ;d="x;y"`), as found after a
/// Via sent-by or a name-addr. Whitespace (folds included) is allowed
/// around `;` and `=`; names compare case-insensitively at the caller.
#[derive(Clone)]
pub struct Params<'a> {
    whole: &'a [u8],
    /// `Some(s)`: positioned just after a `;`, so a parameter must follow.
    rest: Option<&'a [u8]>,
}

impl<'a> Params<'a> {
    /// `s` is what follows the first `;` (the `;` itself removed).
    pub(crate) fn new(s: &'a [u8]) -> Self {
        Params {
            whole: s,
            rest: Some(s),
        }
    }

    /// An empty list.
    pub(crate) fn empty() -> Self {
        Params {
            whole: b"",
            rest: None,
        }
    }

    /// Look a parameter up by name (case-insensitive). `Ok(None)` when absent,
    /// `Ok(Some(None))` for a flag, `Ok(Some(Some(v)))` for `name=v`.
    pub fn get(&self, name: &str) -> Result<Option<Option<&'a [u8]>>, ParseError> {
        for p in self.clone() {
            let (n, v) = p?;
            if n.eq_ignore_ascii_case(name.as_bytes()) {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// The raw text of the list, without the leading `;`.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.whole
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = Result<(&'a [u8], Option<&'a [u8]>), ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let s = self.rest.take()?;
        let bad = || Some(Err(ParseError::BadParams(Shown::new(self.whole))));
        let i = skip_lws(s, 0);
        let name_end = i + s[i..]
            .iter()
            .position(|&b| !crate::header::is_token_char(b))
            .unwrap_or(s.len() - i);
        if name_end == i {
            // Nothing after a ';' (or a stray character): `;;` style garbage.
            return bad();
        }
        let name = &s[i..name_end];
        let mut j = skip_lws(s, name_end);
        let mut value = None;
        if s.get(j) == Some(&b'=') {
            j = skip_lws(s, j + 1);
            let v_start = j;
            if s.get(j) == Some(&b'"') {
                match quoted_end(s, j) {
                    Some(e) => j = e,
                    None => return bad(),
                }
            } else {
                while j < s.len() && s[j] != b';' && s[j] != b',' && !is_lws(s[j]) {
                    j += 1;
                }
            }
            if j == v_start {
                return bad();
            }
            value = Some(&s[v_start..j]);
            j = skip_lws(s, j);
        }
        match s.get(j) {
            None => {}
            Some(b';') => self.rest = Some(&s[j + 1..]),
            Some(_) => return bad(),
        }
        Some(Ok((name, value)))
    }
}

/// One Via value (a hop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// Protocol name, normally `SIP`.
    pub protocol: &'a [u8],
    /// Protocol version, normally `2.0`.
    pub version: &'a [u8],
    /// Transport as written (`UDP`, `TCP`, `TLS`, `WS`...).
    pub transport: &'a [u8],
    /// sent-by host; IPv6 references keep their brackets.
    pub host: &'a [u8],
    /// sent-by port, when written.
    pub port: Option<u16>,
    /// The `branch` parameter.
    pub branch: Option<&'a [u8]>,
    /// `None`: no `rport`; `Some(None)`: a bare `rport` (RFC 3581 request);
    /// `Some(Some(p))`: `rport=p`.
    pub rport: Option<Option<u16>>,
    /// The `received` parameter.
    pub received: Option<&'a [u8]>,
    /// The whole value as it appears in the message (no surrounding
    /// whitespace).
    pub raw: &'a [u8],
    params: Option<&'a [u8]>,
}

impl<'a> Via<'a> {
    /// Parse one Via value (no commas).
    pub fn parse(v: &'a [u8]) -> Result<Via<'a>, ParseError> {
        let raw = trim_lws(v);
        let bad = || ParseError::BadVia(Shown::new(raw));
        let s = raw;
        let token = |i: usize| -> usize {
            i + s[i..]
                .iter()
                .position(|&b| !crate::header::is_token_char(b))
                .unwrap_or(s.len() - i)
        };
        let slash = |i: usize| -> Option<usize> {
            let i = skip_lws(s, i);
            (s.get(i) == Some(&b'/')).then(|| skip_lws(s, i + 1))
        };
        let p_end = token(0);
        let i = slash(p_end).ok_or_else(bad)?;
        let v_end = token(i);
        let version = &s[i..v_end];
        let i = slash(v_end).ok_or_else(bad)?;
        let t_end = token(i);
        let transport = &s[i..t_end];
        if p_end == 0 || version.is_empty() || transport.is_empty() {
            return Err(bad());
        }
        let h = skip_lws(s, t_end);
        if h == t_end {
            return Err(bad());
        }
        let h_end = if s.get(h) == Some(&b'[') {
            memchr::memchr(b']', &s[h..]).ok_or_else(bad)? + h + 1
        } else {
            h + s[h..]
                .iter()
                .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')))
                .unwrap_or(s.len() - h)
        };
        let host = &s[h..h_end];
        if host.is_empty() {
            return Err(bad());
        }
        let mut i = skip_lws(s, h_end);
        let mut port = None;
        if s.get(i) == Some(&b':') {
            let p = skip_lws(s, i + 1);
            let pe = p + s[p..]
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(s.len() - p);
            port = Some(parse_port(&s[p..pe]).ok_or_else(bad)?);
            i = skip_lws(s, pe);
        }
        let params = match s.get(i) {
            None => None,
            Some(b';') => Some(&s[i + 1..]),
            Some(_) => return Err(bad()),
        };
        let mut via = Via {
            protocol: &s[..p_end],
            version,
            transport,
            host,
            port,
            branch: None,
            rport: None,
            received: None,
            raw,
            params,
        };
        if let Some(list) = params {
            for p in Params::new(list) {
                let (name, value) = p.map_err(|_| bad())?;
                if name.eq_ignore_ascii_case(b"branch") {
                    via.branch = Some(value.ok_or_else(bad)?);
                } else if name.eq_ignore_ascii_case(b"rport") {
                    via.rport = Some(match value {
                        None => None,
                        Some(v) => Some(parse_port(v).ok_or_else(bad)?),
                    });
                } else if name.eq_ignore_ascii_case(b"received") {
                    via.received = Some(value.ok_or_else(bad)?);
                }
            }
        }
        Ok(via)
    }

    /// All parameters of this hop.
    pub fn params(&self) -> Params<'a> {
        self.params.map_or_else(Params::empty, Params::new)
    }

    /// Its parts as offsets into `base`, the buffer every slice of it is
    /// in (a message keeps its top Via this way, parsed once); `None` when
    /// it was not parsed from `base`.
    pub(crate) fn spans(&self, base: &[u8]) -> Option<ViaSpans> {
        let start = (self.raw.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
        if start + self.raw.len() > base.len() {
            return None;
        }
        // Every other part is inside `raw`.
        let at = |s: &[u8]| {
            let start = s.as_ptr() as usize - base.as_ptr() as usize;
            (start, start + s.len())
        };
        Some(ViaSpans {
            protocol: at(self.protocol),
            version: at(self.version),
            transport: at(self.transport),
            host: at(self.host),
            port: self.port,
            branch: self.branch.map(at),
            rport: self.rport,
            received: self.received.map(at),
            raw: at(self.raw),
            params: self.params.map(at),
        })
    }

    /// The Via whose parts `spans` gives, in `base`.
    pub(crate) fn from_spans(base: &'a [u8], s: &ViaSpans) -> Via<'a> {
        let get = |(a, b): (usize, usize)| &base[a..b];
        Via {
            protocol: get(s.protocol),
            version: get(s.version),
            transport: get(s.transport),
            host: get(s.host),
            port: s.port,
            branch: s.branch.map(get),
            rport: s.rport,
            received: s.received.map(get),
            raw: get(s.raw),
            params: s.params.map(get),
        }
    }
}

/// A [`Via`] as offsets into its buffer: see [`Via::spans`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ViaSpans {
    protocol: (usize, usize),
    version: (usize, usize),
    transport: (usize, usize),
    host: (usize, usize),
    port: Option<u16>,
    branch: Option<(usize, usize)>,
    rport: Option<Option<u16>>,
    received: Option<(usize, usize)>,
    raw: (usize, usize),
    params: Option<(usize, usize)>,
}

/// A From, To, Contact or Route value: `[display] <uri> ;params` or
/// `uri ;params`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name as written (quotes and escapes kept), if any.
    pub display: Option<&'a [u8]>,
    /// The URI text (without `<` `>`). Parse it with [`NameAddr::parse_uri`].
    pub uri: &'a [u8],
    /// The `tag` parameter.
    pub tag: Option<&'a [u8]>,
    params: Option<&'a [u8]>,
}

impl<'a> NameAddr<'a> {
    /// Parse one name-addr / addr-spec value (no top-level commas).
    pub fn parse(v: &'a [u8]) -> Result<NameAddr<'a>, ParseError> {
        let s = trim_lws(v);
        let bad = || ParseError::BadNameAddr(Shown::new(s));
        let (display, uri, after) = if s.first() == Some(&b'"') {
            let q = quoted_end(s, 0).ok_or_else(bad)?;
            let lt = skip_lws(s, q);
            if s.get(lt) != Some(&b'<') {
                return Err(bad());
            }
            let gt = memchr::memchr(b'>', &s[lt..]).ok_or_else(bad)? + lt;
            (Some(&s[..q]), &s[lt + 1..gt], &s[gt + 1..])
        } else if let Some(lt) = memchr::memchr(b'<', s) {
            let gt = memchr::memchr(b'>', &s[lt..]).ok_or_else(bad)? + lt;
            let d = trim_lws(&s[..lt]);
            // Unquoted display names are tokens separated by whitespace.
            if !d
                .iter()
                .all(|&b| crate::header::is_token_char(b) || is_lws(b))
            {
                return Err(bad());
            }
            let display = (!d.is_empty()).then_some(d);
            (display, &s[lt + 1..gt], &s[gt + 1..])
        } else {
            // addr-spec form: the URI cannot hold ';' here, so the first one
            // starts the header parameters (RFC 3261 §20.10).
            let end = s
                .iter()
                .position(|&b| b == b';' || is_lws(b))
                .unwrap_or(s.len());
            (None, &s[..end], &s[end..])
        };
        if uri.is_empty() || memchr::memchr(b':', uri).is_none() || uri.iter().any(|&b| is_lws(b)) {
            return Err(bad());
        }
        let a = skip_lws(after, 0);
        let params = match after.get(a) {
            None => None,
            Some(b';') => Some(&after[a + 1..]),
            Some(_) => return Err(bad()),
        };
        let mut na = NameAddr {
            display,
            uri,
            tag: None,
            params,
        };
        if let Some(list) = params {
            for p in Params::new(list) {
                let (name, value) = p.map_err(|_| bad())?;
                if name.eq_ignore_ascii_case(b"tag") {
                    na.tag = Some(value.ok_or_else(bad)?);
                }
            }
        }
        Ok(na)
    }

    /// Parse the URI part.
    pub fn parse_uri(&self) -> Result<Uri<'a>, ParseError> {
        Uri::parse(self.uri)
    }

    /// The header parameters (after the URI).
    pub fn params(&self) -> Params<'a> {
        self.params.map_or_else(Params::empty, Params::new)
    }

    /// Its parts as offsets into `base`, the buffer every slice of it is
    /// in (a message keeps its From and To this way, each parsed once);
    /// `None` when it was not parsed from `base`.
    pub(crate) fn spans(&self, base: &[u8]) -> Option<NameAddrSpans> {
        let start = (self.uri.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
        if start + self.uri.len() > base.len() || base.len() > u32::MAX as usize {
            return None;
        }
        // Every part is inside the header value, which is inside `base`.
        let at = |s: &[u8]| {
            let start = s.as_ptr() as usize - base.as_ptr() as usize;
            (start as u32, (start + s.len()) as u32)
        };
        Some(NameAddrSpans {
            display: self.display.map(at),
            uri: at(self.uri),
            tag: self.tag.map(at),
            params: self.params.map(at),
        })
    }

    /// The name-addr whose parts `spans` gives, in `base`.
    pub(crate) fn from_spans(base: &'a [u8], s: &NameAddrSpans) -> NameAddr<'a> {
        let get = |(a, b): (u32, u32)| &base[a as usize..b as usize];
        NameAddr {
            display: s.display.map(get),
            uri: get(s.uri),
            tag: s.tag.map(get),
            params: s.params.map(get),
        }
    }
}

/// A [`NameAddr`] as offsets into its buffer: see [`NameAddr::spans`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NameAddrSpans {
    display: Option<(u32, u32)>,
    uri: (u32, u32),
    tag: Option<(u32, u32)>,
    params: Option<(u32, u32)>,
}

/// A CSeq value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number.
    pub number: u32,
    /// The method.
    pub method: Method,
}

/// Parse `number LWS method`; the number must fit 32 bits (RFC 3261 §8.1.1.5).
pub(crate) fn parse_cseq(
    v: &[u8],
    to_method: impl Fn(&[u8]) -> Method,
) -> Result<CSeq, ParseError> {
    let (number, method) = split_cseq(v)?;
    Ok(CSeq {
        number,
        method: to_method(method),
    })
}

/// A CSeq value checked and split: the number, and the method token as
/// written (a slice of `v`).
pub(crate) fn split_cseq(v: &[u8]) -> Result<(u32, &[u8]), ParseError> {
    let s = trim_lws(v);
    let bad = || ParseError::BadCSeq(Shown::new(s));
    let n_end = s.iter().position(|b| !b.is_ascii_digit()).ok_or_else(bad)?;
    let number = crate::lex::parse_u64(&s[..n_end])
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(bad)?;
    let m = skip_lws(s, n_end);
    if m == n_end {
        return Err(bad());
    }
    let method = &s[m..];
    if method.is_empty() || !method.iter().all(|&b| crate::header::is_token_char(b)) {
        return Err(bad());
    }
    Ok((number, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_folds_and_params() {
        let v =
            Via::parse(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;rport;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, b"UDP");
        assert_eq!(v.host, b"192.0.2.2");
        assert_eq!(v.port, None);
        assert_eq!(v.branch, Some(&b"390skdjuw"[..]));
        assert_eq!(v.rport, Some(None));
        let v = Via::parse(b" SIP/2.0/TCP spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ")
            .unwrap();
        assert_eq!(v.branch, Some(&b"z9hG4bK9ikj8"[..]));
        assert_eq!(v.host, b"spindle.example.com");
        let v = Via::parse(b"SIP/2.0/UDP [2001:db8::9:1]:5070;received=[2001:db8::9:255];rport=5071;branch=z9hG4bKas3-111").unwrap();
        assert_eq!(v.host, b"[2001:db8::9:1]");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.received, Some(&b"[2001:db8::9:255]"[..]));
        assert_eq!(v.rport, Some(Some(5071)));
        let v = Via::parse(b"SIP/2.0/WSS h : 5061 ; BRANCH=\"q;x\"").unwrap();
        assert_eq!(v.port, Some(5061));
        assert_eq!(v.branch, Some(&b"\"q;x\""[..]));
    }

    #[test]
    fn via_refusals() {
        for bad in [
            &b"SIP/2.0/UDP 192.0.2.15;;"[..],
            b"SIP/2.0/UDP 192.0.2.15;",
            b"SIP/2.0/UDP",
            b"SIP/2.0 host",
            b"SIP/2.0/UDP host:port",
            b"SIP/2.0/UDP host x",
            b"SIP/2.0/UDP host;branch",
            b"SIP/2.0/UDP host;rport=abc",
            b"SIP/2.0/UDP [::1",
            b"",
        ] {
            assert!(
                Via::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(
            b"\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8",
        )
        .unwrap();
        assert_eq!(n.uri, b"sip:jdrosen@example.com");
        assert_eq!(n.tag, Some(&b"98asjd8"[..]));
        assert_eq!(n.display, Some(&b"\"J Rosenberg \\\\\\\"\""[..]));
        let n = NameAddr::parse(b"sip:caller@example.net;tag=134161461246").unwrap();
        assert_eq!(n.uri, b"sip:caller@example.net");
        assert_eq!(n.tag, Some(&b"134161461246"[..]));
        let n = NameAddr::parse(b"caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display, Some(&b"caller"[..]));
        assert_eq!(n.tag, Some(&b"323"[..]));
        let n = NameAddr::parse(b"<sip:a@b;lr>").unwrap();
        assert_eq!(n.parse_uri().unwrap().host, b"b");
        assert_eq!(n.tag, None);
        assert_eq!(n.params().count(), 0);
    }

    #[test]
    fn name_addr_refusals() {
        for bad in [
            &b"\"Mr. J. User <sip:j.user@example.com>"[..],
            b"< sip:t.watson@example.org >",
            b"<sip:a@b",
            b"nouri",
            b"<sip:a@b> junk",
            b"<sip:a@b>;tag",
            b"<sip:a@b>;;",
            b"",
        ] {
            assert!(
                NameAddr::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn params_iteration() {
        let p: Vec<_> = Params::new(b"a=1 ; b ;c=\"x;y\"").collect();
        assert_eq!(p.len(), 3);
        assert_eq!(p[2].as_ref().unwrap().1, Some(&b"\"x;y\""[..]));
        assert!(Params::new(b"a;;b").any(|r| r.is_err()));
        assert!(Params::new(b"a=").any(|r| r.is_err()));
        assert!(Params::new(b"").any(|r| r.is_err()));
    }
}
