//! SIP, SIPS and tel URIs, parsed into slices of the text they came from.

use crate::error::{ParseError, Shown};

/// The URI scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:` (RFC 3966)
    Tel,
    /// Any other scheme; only the scheme and the opaque rest are split.
    Other,
}

/// A parsed URI. Every field borrows from the input: nothing is unescaped
/// or copied, so a proxy that only routes on the host pays for no more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    /// The scheme, classified.
    pub scheme: Scheme,
    /// The scheme text as written (for [`Scheme::Other`]).
    pub scheme_text: &'a [u8],
    /// The user part (still %-escaped); for tel URIs, the number.
    pub user: Option<&'a [u8]>,
    /// The password part of the userinfo, if any.
    pub password: Option<&'a [u8]>,
    /// The host, an IPv6 reference keeps its brackets (`[::1]`); empty for
    /// tel and other schemes.
    pub host: &'a [u8],
    /// The port, when written.
    pub port: Option<u16>,
    /// Everything between the first `;` after the host and the `?`,
    /// without the leading `;`. Read it with [`Uri::param`].
    pub params: &'a [u8],
    /// Everything after `?`, when present.
    pub headers: Option<&'a [u8]>,
    /// For [`Scheme::Other`], everything after the `:`.
    pub opaque: &'a [u8],
}

impl<'a> Uri<'a> {
    /// Parse a URI. Whitespace anywhere is refused: callers pass the text
    /// between `<` and `>` or a Request-URI, neither of which may hold any.
    pub fn parse(s: &'a [u8]) -> Result<Uri<'a>, ParseError> {
        let bad = || ParseError::BadUri(Shown::new(s));
        let colon = memchr::memchr(b':', s).ok_or_else(bad)?;
        let scheme_text = &s[..colon];
        if scheme_text.is_empty()
            || !scheme_text[0].is_ascii_alphabetic()
            || !scheme_text
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(bad());
        }
        if s.iter().any(|&b| b <= b' ' || b == 0x7f) {
            return Err(bad());
        }
        let rest = &s[colon + 1..];
        let scheme = if scheme_text.eq_ignore_ascii_case(b"sip") {
            Scheme::Sip
        } else if scheme_text.eq_ignore_ascii_case(b"sips") {
            Scheme::Sips
        } else if scheme_text.eq_ignore_ascii_case(b"tel") {
            Scheme::Tel
        } else {
            Scheme::Other
        };
        let mut uri = Uri {
            scheme,
            scheme_text,
            user: None,
            password: None,
            host: b"",
            port: None,
            params: b"",
            headers: None,
            opaque: b"",
        };
        match scheme {
            Scheme::Other => {
                if rest.is_empty() {
                    return Err(bad());
                }
                uri.opaque = rest;
            }
            Scheme::Tel => {
                let end = memchr::memchr(b';', rest).unwrap_or(rest.len());
                if end == 0 {
                    return Err(bad());
                }
                uri.user = Some(&rest[..end]);
                uri.params = rest.get(end + 1..).unwrap_or(b"");
            }
            Scheme::Sip | Scheme::Sips => {
                // A user part may itself hold ';', '?' and ':' (RFC 4475
                // semiuri, intmeth) but never an unescaped '@', so the first
                // '@' ends the userinfo.
                let hostport = match memchr::memchr(b'@', rest) {
                    Some(at) => {
                        let userinfo = &rest[..at];
                        let (user, password) = match memchr::memchr(b':', userinfo) {
                            Some(c) => (&userinfo[..c], Some(&userinfo[c + 1..])),
                            None => (userinfo, None),
                        };
                        if user.is_empty() {
                            return Err(bad());
                        }
                        uri.user = Some(user);
                        uri.password = password;
                        &rest[at + 1..]
                    }
                    None => rest,
                };
                let (host, after) = split_host(hostport).ok_or_else(bad)?;
                uri.host = host;
                let mut tail = after;
                if let Some(t) = tail.strip_prefix(b":") {
                    let end = t
                        .iter()
                        .position(|&b| b == b';' || b == b'?')
                        .unwrap_or(t.len());
                    uri.port = Some(parse_port(&t[..end]).ok_or_else(bad)?);
                    tail = &t[end..];
                }
                if let Some(t) = tail.strip_prefix(b";") {
                    let end = memchr::memchr(b'?', t).unwrap_or(t.len());
                    uri.params = &t[..end];
                    tail = &t[end..];
                }
                if let Some(t) = tail.strip_prefix(b"?") {
                    uri.headers = Some(t);
                    tail = b"";
                }
                if !tail.is_empty() {
                    return Err(bad());
                }
            }
        }
        Ok(uri)
    }

    /// A URI parameter by name (case-insensitive): `None` when absent,
    /// `Some(None)` for a flag like `lr`, `Some(Some(v))` for `name=v`.
    pub fn param(&self, name: &str) -> Option<Option<&'a [u8]>> {
        if self.params.is_empty() {
            return None;
        }
        for p in self.params.split(|&b| b == b';') {
            let (n, v) = match memchr::memchr(b'=', p) {
                Some(e) => (&p[..e], Some(&p[e + 1..])),
                None => (p, None),
            };
            if n.eq_ignore_ascii_case(name.as_bytes()) {
                return Some(v);
            }
        }
        None
    }

    /// The `transport` parameter.
    pub fn transport(&self) -> Option<&'a [u8]> {
        self.param("transport").flatten()
    }

    /// Whether the `lr` (loose routing) flag is present.
    pub fn lr(&self) -> bool {
        self.param("lr").is_some()
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&'a [u8]> {
        self.param("maddr").flatten()
    }
}

/// Split `hostport` into the host and what follows it (`:port`, `;params`,
/// `?headers`). The host must be non-empty and made of host characters.
fn split_host(s: &[u8]) -> Option<(&[u8], &[u8])> {
    if s.first() == Some(&b'[') {
        let close = memchr::memchr(b']', s)?;
        let inner = &s[1..close];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        return Some((&s[..=close], &s[close + 1..]));
    }
    let end = s
        .iter()
        .position(|&b| matches!(b, b':' | b';' | b'?'))
        .unwrap_or(s.len());
    let host = &s[..end];
    if host.is_empty()
        || !host
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return None;
    }
    Some((host, &s[end..]))
}

/// A port: 1 to 5 digits whose value fits 16 bits.
pub(crate) fn parse_port(s: &[u8]) -> Option<u16> {
    if s.len() > 5 {
        return None;
    }
    crate::lex::parse_u64(s).and_then(|n| u16::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_sip_uri() {
        let u = Uri::parse(
            b"sips:alice:secret@Example.COM:5061;transport=tcp;lr;maddr=1.2.3.4?subject=hi&x=y",
        )
        .unwrap();
        assert_eq!(u.scheme, Scheme::Sips);
        assert_eq!(u.user, Some(&b"alice"[..]));
        assert_eq!(u.password, Some(&b"secret"[..]));
        assert_eq!(u.host, b"Example.COM");
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport(), Some(&b"tcp"[..]));
        assert!(u.lr());
        assert_eq!(u.maddr(), Some(&b"1.2.3.4"[..]));
        assert_eq!(u.headers, Some(&b"subject=hi&x=y"[..]));
        assert_eq!(u.param("nope"), None);
    }

    #[test]
    fn ipv6_and_bare_host() {
        let u = Uri::parse(b"sip:[::1]:5070;lr").unwrap();
        assert_eq!(u.host, b"[::1]");
        assert_eq!(u.port, Some(5070));
        assert!(u.lr());
        assert_eq!(u.user, None);
        let u = Uri::parse(b"sip:[2001:db8::10]").unwrap();
        assert_eq!(u.host, b"[2001:db8::10]");
        assert_eq!(u.port, None);
        let u = Uri::parse(b"sip:example.com").unwrap();
        assert_eq!(u.host, b"example.com");
    }

    #[test]
    fn tricky_user_parts() {
        let u = Uri::parse(b"sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user, Some(&b"user;par=u%40example.net"[..]));
        assert_eq!(u.host, b"example.com");
        let u = Uri::parse(b"sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com").unwrap();
        assert_eq!(u.host, b"example.com");
        assert_eq!(
            u.password,
            Some(&b"&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"[..])
        );
    }

    #[test]
    fn tel_and_other() {
        let u = Uri::parse(b"tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(u.scheme, Scheme::Tel);
        assert_eq!(u.user, Some(&b"+1-201-555-0123"[..]));
        assert_eq!(u.param("phone-context"), Some(Some(&b"example.com"[..])));
        let u = Uri::parse(b"mailto:a@b").unwrap();
        assert_eq!(u.scheme, Scheme::Other);
        assert_eq!(u.opaque, b"a@b");
    }

    #[test]
    fn refusals() {
        for bad in [
            &b"example.com"[..],
            b"sip:",
            b"sip:@host",
            b"sip:host:99999",
            b"sip:host:",
            b"sip:ho st",
            b"sip:[::1",
            b"sip:[]",
            b":x",
            b"1sip:x",
            b"sip:user@example.com>",
        ] {
            assert!(
                Uri::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
