//! Reading a REGISTER into a [`Register`] (Kamailio's registrar rules for
//! the AoR, Contact, `*`, expires and q), and writing the Contact line of
//! its 200 OK.

use super::error::RegError;
use super::table::{Binding, ContactIn, Contacts, Register};
use crate::header::HeaderName;
use crate::message::unfold;
use crate::request::Request;
use crate::uri::{Scheme, Uri};
use crate::values::NameAddr;

/// Longest contact URI stored (Kamailio's `contact_max_size`).
const CONTACT_MAX: usize = 512;
/// Longest Call-ID stored (Kamailio's `CALLID_MAX_SIZE`).
const CALLID_MAX: usize = 255;
/// Longest User-Agent stored; a longer one is stored as `n/a`.
const UA_MAX: usize = 255;
/// Longest AoR (Kamailio's `AOR_MAX_SIZE` less its terminator).
const AOR_MAX: usize = 255;

/// The address-of-record of a URI, as Kamailio's registrar forms it: the
/// user part %-unescaped, then `@host` when `use_domain`, all lower case.
/// A URI that does not parse, or gives an empty AoR, is refused.
pub fn aor_of(uri: &[u8], use_domain: bool) -> Result<String, RegError> {
    let shown = || RegError::BadAor(String::from_utf8_lossy(uri).into_owned());
    let u = Uri::parse(uri).map_err(|_| shown())?;
    if u.scheme == Scheme::Other {
        return Err(shown());
    }
    let mut aor = unescape(u.user.unwrap_or_default()).ok_or_else(shown)?;
    if use_domain && !u.host.is_empty() {
        if !aor.is_empty() {
            aor.push(b'@');
        }
        aor.extend_from_slice(u.host);
    }
    if aor.is_empty() {
        return Err(shown());
    }
    if aor.len() > AOR_MAX {
        return Err(RegError::AorTooLong(aor.len()));
    }
    aor.make_ascii_lowercase();
    Ok(String::from_utf8_lossy(&aor).into_owned())
}

/// `%XX` escapes decoded; `None` for a broken escape.
fn unescape(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A q-value (`0`, `0.5`, `1.000`...) in thousandths.
pub fn parse_q(v: &[u8]) -> Option<u16> {
    let (int, frac) = match memchr::memchr(b'.', v) {
        Some(d) => (&v[..d], &v[d + 1..]),
        None => (v, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// A q-value as Kamailio writes it: `1`, `0`, `0.5`, `0.125`.
pub fn format_q(q: u16) -> String {
    match q {
        1000.. => "1".into(),
        0 => "0".into(),
        q => format!("0.{q:03}").trim_end_matches('0').to_owned(),
    }
}

/// A decimal number of seconds; past `u32::MAX` it saturates (it is cut
/// to `max_expires` anyway).
fn seconds(v: &[u8]) -> Option<u32> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        v.iter()
            .try_fold(0u32, |n, d| {
                n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
            })
            .unwrap_or(u32::MAX),
    )
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// Read a REGISTER: its AoR (from To), Contacts (or `*`, or none), the
/// expires of each (its `expires` parameter, else the Expires header, else
/// the table's default; an unreadable parameter means the default), q,
/// Call-ID, CSeq, source and User-Agent.
pub fn register_of(req: &Request, use_domain: bool) -> Result<Register, RegError> {
    let msg = req.msg();
    let to = msg.to().map_err(|_| RegError::Missing("To"))?;
    let aor = aor_of(to.uri, use_domain)?;
    let call_id = msg.call_id().map_err(|_| RegError::Missing("Call-ID"))?;
    if call_id.len() > CALLID_MAX {
        return Err(RegError::CallIdTooLong(call_id.len()));
    }
    let cseq = msg.cseq().map_err(|_| RegError::Missing("CSeq"))?.number;
    let expires_hdr = match msg.header_of(HeaderName::Expires) {
        None => None,
        Some(v) => Some(
            seconds(trim(v))
                .ok_or_else(|| RegError::BadExpires(String::from_utf8_lossy(v).into_owned()))?,
        ),
    };
    let mut star = false;
    let mut list = Vec::new();
    for (n, el) in msg.elements_of(HeaderName::Contact).enumerate() {
        let el = trim(el);
        if el == b"*" {
            if n > 0 {
                return Err(RegError::StarMixed);
            }
            star = true;
            continue;
        }
        if star {
            return Err(RegError::StarMixed);
        }
        list.push(contact_in(el, expires_hdr)?);
    }
    let contacts = if star {
        if expires_hdr != Some(0) {
            return Err(RegError::StarExpires);
        }
        Contacts::Star
    } else if list.is_empty() {
        Contacts::Fetch
    } else {
        Contacts::List(list)
    };
    let user_agent = match msg.header("User-Agent").map(unfold) {
        Some(ua) if !ua.is_empty() && ua.len() <= UA_MAX => {
            String::from_utf8_lossy(&ua).into_owned()
        }
        _ => "n/a".into(),
    };
    let src = req.source();
    Ok(Register {
        aor,
        contacts,
        call_id: String::from_utf8_lossy(call_id).into_owned(),
        cseq,
        received: src.remote,
        transport: src.transport,
        user_agent,
    })
}

fn contact_in(el: &[u8], expires_hdr: Option<u32>) -> Result<ContactIn, RegError> {
    let bad = || RegError::BadContact(String::from_utf8_lossy(el).into_owned());
    let na = NameAddr::parse(el).map_err(|_| bad())?;
    if na.uri.len() > CONTACT_MAX {
        return Err(RegError::ContactTooLong(na.uri.len()));
    }
    na.parse_uri().map_err(|_| bad())?;
    let uri = std::str::from_utf8(na.uri).map_err(|_| bad())?.to_owned();
    let mut expires = expires_hdr;
    let mut q = None;
    for p in na.params() {
        let (name, value) = p.map_err(|_| bad())?;
        let value = value.map(trim).unwrap_or_default();
        if name.eq_ignore_ascii_case(b"expires") {
            // Unreadable: the default, as Kamailio (not the header).
            expires = seconds(value);
        } else if name.eq_ignore_ascii_case(b"q") && !value.is_empty() {
            q = Some(
                parse_q(value)
                    .ok_or_else(|| RegError::BadQ(String::from_utf8_lossy(value).into_owned()))?,
            );
        }
    }
    Ok(ContactIn { uri, expires, q })
}

/// The Contact line of a 200 OK to a REGISTER: every binding as
/// `<uri>;q=..;expires=N` (seconds left), comma-separated on one line, as
/// Kamailio writes it; `None` when there is none.
pub fn contact_line(bindings: &[Binding], now: u64) -> Option<String> {
    if bindings.is_empty() {
        return None;
    }
    let mut line = String::from("Contact: ");
    for (i, b) in bindings.iter().enumerate() {
        if i > 0 {
            line.push_str(", ");
        }
        line.push('<');
        line.push_str(&b.uri);
        line.push('>');
        if let Some(q) = b.q {
            line.push_str(";q=");
            line.push_str(&format_q(q));
        }
        line.push_str(";expires=");
        line.push_str(&b.expires_in(now).to_string());
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::SipMessage;
    use crate::request::{Source, Transport};

    fn register(extra: &str) -> Request {
        let text = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1\r\n\
             From: <sip:Alice@Example.com>;tag=1\r\nTo: <sip:Al%69ce@Example.COM>\r\n\
             Call-ID: reg-1\r\nCSeq: 7 REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Request::new(
            SipMessage::parse(bytes::Bytes::from(text)).unwrap(),
            Source {
                transport: Transport::Udp,
                remote: "192.0.2.1:5070".parse().unwrap(),
                local: "127.0.0.1:5060".parse().unwrap(),
                conn: None,
            },
        )
    }

    #[test]
    fn aor_is_the_unescaped_lowercase_user_and_optionally_the_host() {
        assert_eq!(
            aor_of(b"sip:Al%69ce@Example.COM;transport=tcp", false).unwrap(),
            "alice"
        );
        assert_eq!(
            aor_of(b"sip:Alice@Example.COM", true).unwrap(),
            "alice@example.com"
        );
        assert_eq!(aor_of(b"sip:example.com", true).unwrap(), "example.com");
        assert_eq!(aor_of(b"tel:+1555", false).unwrap(), "+1555");
        for bad in [
            &b"sip:example.com"[..],
            b"sip:a%4@b",
            b"mailto:a@b",
            b"nonsense",
        ] {
            assert!(
                matches!(aor_of(bad, false), Err(RegError::BadAor(_))),
                "{bad:?}"
            );
        }
        let long = format!("sip:{}@b", "u".repeat(300));
        assert_eq!(
            aor_of(long.as_bytes(), false),
            Err(RegError::AorTooLong(300))
        );
    }

    #[test]
    fn q_values_read_and_write_as_kamailio() {
        for (text, q) in [
            ("0", 0),
            ("0.5", 500),
            ("0.125", 125),
            ("1", 1000),
            ("1.000", 1000),
            ("0.", 0),
        ] {
            assert_eq!(parse_q(text.as_bytes()), Some(q), "{text}");
        }
        for bad in ["1.5", "2", "0.1234", "-0.5", "x", ".5"] {
            assert_eq!(parse_q(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(
            [1000, 0, 500, 125, 100].map(format_q),
            ["1", "0", "0.5", "0.125", "0.1"]
        );
    }

    #[test]
    fn contacts_expires_and_q_are_read() {
        let r = register_of(
            &register(
                "Contact: <sip:a@192.0.2.1:5070>;expires=120;q=0.5, \"A\" <sip:a@h2>\r\n\
                 Contact: sip:a@h3;expires=oops\r\nExpires: 300\r\nUser-Agent: phone/1\r\n",
            ),
            false,
        )
        .unwrap();
        assert_eq!(
            (r.aor.as_str(), r.call_id.as_str(), r.cseq),
            ("alice", "reg-1", 7)
        );
        assert_eq!(
            (r.user_agent.as_str(), r.received.port()),
            ("phone/1", 5070)
        );
        let Contacts::List(l) = r.contacts else {
            panic!("{:?}", r.contacts)
        };
        assert_eq!(
            l,
            [
                ContactIn {
                    uri: "sip:a@192.0.2.1:5070".into(),
                    expires: Some(120),
                    q: Some(500)
                },
                ContactIn {
                    uri: "sip:a@h2".into(),
                    expires: Some(300),
                    q: None
                },
                ContactIn {
                    uri: "sip:a@h3".into(),
                    expires: None,
                    q: None
                },
            ]
        );
        let r = register_of(&register(""), false).unwrap();
        assert_eq!(
            (r.contacts, r.user_agent.as_str()),
            (Contacts::Fetch, "n/a")
        );
    }

    #[test]
    fn star_and_malformed_registers_are_refused_as_kamailio() {
        let star = register_of(&register("Contact: *\r\nExpires: 0\r\n"), false).unwrap();
        assert_eq!(star.contacts, Contacts::Star);
        for (extra, want) in [
            (
                "Contact: *\r\n",
                "* used in contact and expires is not zero",
            ),
            (
                "Contact: *\r\nExpires: 60\r\n",
                "* used in contact and expires is not zero",
            ),
            (
                "Contact: *, <sip:a@b>\r\nExpires: 0\r\n",
                "* used in contact and more than 1 contact",
            ),
            (
                "Contact: <sip:a@b>\r\nContact: *\r\nExpires: 0\r\n",
                "* used in contact and more than 1 contact",
            ),
            ("Contact: <sip:a@b>;q=2\r\n", "Invalid q param in contact"),
            ("Contact: <nonsense>\r\n", "Contact parse error"),
            (
                "Contact: <sip:a@b>\r\nExpires: soon\r\n",
                "Expires parse error",
            ),
        ] {
            let e = register_of(&register(extra), false).unwrap_err();
            assert_eq!((e.code(), e.info()), (400, want), "{extra:?}");
        }
        let long = format!("Contact: <sip:{}@b>\r\n", "x".repeat(600));
        assert!(matches!(
            register_of(&register(&long), false),
            Err(RegError::ContactTooLong(_))
        ));
    }

    #[test]
    fn the_200_lists_every_binding_on_one_line() {
        let mut t = super::super::Table::new(super::super::UsrlocConfig::default());
        let r = register_of(
            &register("Contact: <sip:a@h1>;q=0.5;expires=120, <sip:a@h2>\r\n"),
            false,
        )
        .unwrap();
        let s = t.save(&r, false, 0).unwrap();
        assert_eq!(
            contact_line(&s.bindings, 20_000).unwrap(),
            "Contact: <sip:a@h1>;q=0.5;expires=100, <sip:a@h2>;expires=3580"
        );
        assert_eq!(contact_line(&[], 0), None);
    }
}
