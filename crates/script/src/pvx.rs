//! Values read from a SIP message beyond its basic headers, shared by the
//! pseudo-variables (`$au`, `$ar`) and `KSR.kx` (`get_au`, `get_cturi`,
//! `get_srcuri`).

use crate::pv::MsgView;
use sip::{HeaderName, Method};

/// What `$au` and `$ar` read from the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthAttr {
    /// The user part of `username` (before any `@`): `$au`.
    User,
    /// `realm`: `$ar`.
    Realm,
}

/// An attribute of the request's credentials: Proxy-Authorization when
/// present, else Authorization, as Kamailio picks them. None for a reply,
/// an ACK or a CANCEL (they carry none), or when absent.
pub(crate) fn auth_attr(view: &dyn MsgView, attr: AuthAttr) -> Option<Vec<u8>> {
    let msg = view.msg();
    match msg.method() {
        None | Some(Method::Ack | Method::Cancel) => return None,
        Some(_) => {}
    }
    let hdr = view
        .header("Proxy-Authorization")
        .or_else(|| view.header("Authorization"))?;
    let value = match attr {
        AuthAttr::User => {
            let name = digest_param(hdr, "username")?;
            match name.iter().position(|&b| b == b'@') {
                Some(at) => name[..at].to_vec(),
                None => name,
            }
        }
        AuthAttr::Realm => digest_param(hdr, "realm")?,
    };
    Some(value)
}

/// The value of parameter `name` in credentials such as
/// `Digest username="alice", realm="x"` (quotes removed, `\` escapes
/// undone).
pub(crate) fn digest_param(creds: &[u8], name: &str) -> Option<Vec<u8>> {
    let creds = creds.trim_ascii();
    // Skip the scheme ("Digest").
    let start = creds.iter().position(|b| b.is_ascii_whitespace())?;
    let mut rest = creds[start..].trim_ascii_start();
    while !rest.is_empty() {
        let eq = rest.iter().position(|&b| b == b'=')?;
        let key = rest[..eq].trim_ascii();
        let after = rest[eq + 1..].trim_ascii_start();
        let (value, next) = if after.first() == Some(&b'"') {
            let mut v = Vec::new();
            let mut i = 1;
            loop {
                match after.get(i)? {
                    b'\\' => {
                        v.push(*after.get(i + 1)?);
                        i += 2;
                    }
                    b'"' => break,
                    &b => {
                        v.push(b);
                        i += 1;
                    }
                }
            }
            (v, &after[i + 1..])
        } else {
            let end = after.iter().position(|&b| b == b',').unwrap_or(after.len());
            (after[..end].trim_ascii().to_vec(), &after[end..])
        };
        if key.eq_ignore_ascii_case(name.as_bytes()) {
            return Some(value);
        }
        let comma = next.iter().position(|&b| b == b',');
        rest = match comma {
            Some(c) => next[c + 1..].trim_ascii_start(),
            None => &[],
        };
    }
    None
}

/// The URI of the first Contact (None for `*` or when absent).
pub(crate) fn contact_uri(view: &dyn MsgView) -> Option<Vec<u8>> {
    let first = view.msg().elements_of(HeaderName::Contact).next()?;
    if first.trim_ascii() == b"*" {
        return None;
    }
    Some(sip::NameAddr::parse(first).ok()?.uri.to_vec())
}

/// The source as a SIP URI: `sip:IP:PORT`, with `;transport=tcp` for a
/// stream (Kamailio's `get_srcuri`).
pub(crate) fn source_uri(view: &dyn MsgView) -> Option<String> {
    let (proto, remote, _) = view.source()?;
    let mut uri = format!("sip:{remote}");
    if proto != "udp" {
        uri.push_str(";transport=");
        uri.push_str(proto);
    }
    Some(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_params_are_read() {
        let h =
            br#"Digest username="alice@example.com", realm="ex\"ample", nonce=abc, uri="sip:x""#;
        assert_eq!(digest_param(h, "username").unwrap(), b"alice@example.com");
        assert_eq!(digest_param(h, "REALM").unwrap(), b"ex\"ample");
        assert_eq!(digest_param(h, "nonce").unwrap(), b"abc");
        assert_eq!(digest_param(h, "uri").unwrap(), b"sip:x");
        assert_eq!(digest_param(h, "cnonce"), None);
        assert_eq!(digest_param(b"Digest", "username"), None);
        assert_eq!(digest_param(br#"Digest username="open"#, "username"), None);
    }
}
