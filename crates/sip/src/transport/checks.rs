//! The checks and the Via fix-up every incoming request gets before
//! routing.

use bytes::Bytes;

use crate::error::ParseError;
use crate::message::SipMessage;
use crate::request::{Source, Transport};

/// What a request must have before the router sees it: replies copy these
/// (RFC 3261 §8.2.6).
pub(crate) fn check_request(m: &SipMessage) -> Result<(), (u16, &'static str, ParseError)> {
    let bad = |e| (400, "Bad Request", e);
    m.call_id().map_err(bad)?;
    m.from().map_err(bad)?;
    m.to().map_err(bad)?;
    let cseq = m.cseq().map_err(bad)?;
    m.max_forwards().map_err(bad)?;
    m.request_uri().map_err(bad)?;
    if Some(&cseq.method) != m.method() {
        return Err(bad(ParseError::WrongKind(
            "CSeq method differs from the request method",
        )));
    }
    if !m.version().eq_ignore_ascii_case(b"SIP/2.0") {
        return Err((
            505,
            "Version Not Supported",
            ParseError::WrongKind("not SIP/2.0"),
        ));
    }
    Ok(())
}

/// [`via_rewritten`], or the message itself when it needs no change.
#[cfg(test)]
pub(crate) fn fix_via(msg: SipMessage, src: &Source) -> Result<SipMessage, ParseError> {
    Ok(via_rewritten(&msg, src)?.unwrap_or(msg))
}

/// The request `msg` with `received` added and `rport` filled in its top
/// Via (RFC 3261 §18.2.1, RFC 3581), so replies built from it, and
/// replies coming back through us, reach the real sender; `None` when it
/// needs neither (the message is then used as it is: nothing is moved or
/// copied). The buffer is rewritten only when a parameter is needed.
pub(crate) fn via_rewritten(
    msg: &SipMessage,
    src: &Source,
) -> Result<Option<SipMessage>, ParseError> {
    let via = msg.top_via()?;
    let want_rport = via.rport == Some(None) && src.transport == Transport::Udp;
    let host_ip = crate::lex::host_ip(via.host);
    let want_received = want_rport || host_ip != Some(src.remote.ip());
    if !want_rport && !want_received {
        return Ok(None);
    }
    let raw = via.raw;
    let params = via.params();
    let plist = params.as_bytes();
    let head_len = if plist.is_empty() && !raw.ends_with(b";") {
        raw.len()
    } else {
        (plist.as_ptr() as usize).saturating_sub(raw.as_ptr() as usize + 1)
    };
    let mut v = Vec::with_capacity(raw.len() + 48);
    v.extend_from_slice(raw.get(..head_len).unwrap_or(raw));
    for p in params {
        let (name, value) = p?;
        if name.eq_ignore_ascii_case(b"received") || name.eq_ignore_ascii_case(b"rport") {
            continue;
        }
        v.push(b';');
        v.extend_from_slice(name);
        if let Some(val) = value {
            v.push(b'=');
            v.extend_from_slice(val);
        }
    }
    v.extend_from_slice(format!(";received={}", src.remote.ip()).as_bytes());
    if want_rport {
        v.extend_from_slice(format!(";rport={}", src.remote.port()).as_bytes());
    }
    let buf = msg.buffer();
    let off = (raw.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    let (Some(before), Some(after)) = (buf.get(..off), buf.get(off + raw.len()..)) else {
        return Ok(None);
    };
    let mut nb = Vec::with_capacity(buf.len() + 48);
    nb.extend_from_slice(before);
    nb.extend_from_slice(&v);
    nb.extend_from_slice(after);
    Ok(Some(SipMessage::parse(Bytes::from(nb))?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Method;
    use crate::request::Request;

    #[test]
    fn via_gets_received_and_rport() {
        let m = SipMessage::parse(Bytes::from_static(
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP pc.example.com:5070;rport;branch=z9hG4bK1, SIP/2.0/UDP x\r\nCall-ID: c\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        let src = Source {
            transport: Transport::Udp,
            remote: "192.0.2.7:40000".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        };
        let m = fix_via(m, &src).unwrap();
        let v = m.top_via().unwrap();
        assert_eq!(v.received, Some(&b"192.0.2.7"[..]));
        assert_eq!(v.rport, Some(Some(40000)));
        assert_eq!(v.branch, Some(&b"z9hG4bK1"[..]));
        assert_eq!(m.vias().count(), 2);
        // Already right: untouched.
        let m2 = SipMessage::parse(Bytes::from_static(
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7:40000;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        let before = m2.buffer().clone();
        assert_eq!(fix_via(m2, &src).unwrap().buffer(), &before);
    }

    /// RFC 4475 through the host's checks and the transaction table: the
    /// valid requests are accepted and get a transaction and a reply, the
    /// invalid ones are refused (400 / 505) or left to the application as
    /// the README of the torture files says; nothing panics.
    #[test]
    fn torture_messages_through_checks_and_table() {
        use crate::tm::{TableConfig, Tm};
        let valid = [
            "wsinv",
            "intmeth",
            "esc01",
            "escnull",
            "esc02",
            "lwsdisp",
            "longreq",
            "dblreq",
            "semiuri",
            "transports",
            "badbranch",
            "zeromf",
            "inv2543",
        ];
        // Invalid, but for the application (registrar, UA) to refuse.
        let app = ["escruri", "baddate", "regbadct"];
        let mut tm = Tm::new(TableConfig {
            live: Default::default(),
            t1: 500,
            t2: 4000,
            fr: 30_000,
            fr_inv: 120_000,
            wait: 5000,
            max: 1000,
            listeners: vec![(Transport::Udp, "127.0.0.1:5060".parse().unwrap())],
            myself: Default::default(),
        });
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torture");
        let src = Source {
            transport: Transport::Udp,
            remote: "192.0.2.99:5060".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        };
        let mut checked = 0;
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let path = e.path();
            let Some(name) = path.file_stem().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if path.extension().and_then(|x| x.to_str()) != Some("sip") {
                continue;
            }
            let data = Bytes::from(std::fs::read(&path).unwrap());
            let accepted = SipMessage::parse(data)
                .ok()
                .filter(SipMessage::is_request)
                .and_then(|m| fix_via(m, &src).ok())
                .map(|m| (check_request(&m).map_err(|(c, _, _)| c), m));
            let mut out = Vec::new();
            match accepted {
                Some((Ok(()), m)) => {
                    assert!(
                        valid.contains(&name.as_str()) || app.contains(&name.as_str()),
                        "{name}: invalid but accepted"
                    );
                    let mut req = Request::new(m, src.clone());
                    if req.msg().method() != Some(&Method::Ack) {
                        tm.newtran(&mut req, 0, &mut out)
                            .unwrap_or_else(|e| panic!("{name}: {e}"));
                        tm.reply(&mut req, 404, "Not Found", 0, &mut out).unwrap();
                    }
                    checked += 1;
                }
                Some((Err(code), _)) => {
                    assert!(
                        !valid.contains(&name.as_str()),
                        "{name}: valid but refused {code}"
                    );
                    match name.as_str() {
                        "badvers" => assert_eq!(code, 505),
                        _ => assert_eq!(code, 400, "{name}"),
                    }
                }
                None => assert!(
                    !valid.contains(&name.as_str()),
                    "{name}: valid but unparsed"
                ),
            }
        }
        assert!(checked >= valid.len(), "{checked}");
        let mut out = Vec::new();
        tm.on_timer(10_000_000, &mut out);
        tm.on_timer(20_000_000, &mut out);
        assert_eq!(tm.stats().live, 0);
    }
}
