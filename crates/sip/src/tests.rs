//! Unit tests of the message layer as a whole (parse, reads, framing,
//! editor, builders, keys).

use bytes::Bytes;

use crate::*;

const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;rport;branch=z9hG4bK776asdhds\r\n\
Via: SIP/2.0/TCP p1.example.com;branch=z9hG4bKa, SIP/2.0/UDP p2.example.com;received=192.0.2.9;branch=z9hG4bKb\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: \"Alice, A.\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Route: <sip:p1.example.com;lr>\r\n\
X-Custom: one\r\n\
\x20two\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\r";

fn parse(b: &[u8]) -> SipMessage {
    SipMessage::parse(Bytes::copy_from_slice(b)).unwrap()
}

#[test]
fn request_line_and_reads() {
    let m = parse(INVITE);
    assert!(m.is_request());
    assert_eq!(m.method(), Some(&Method::Invite));
    assert_eq!(
        m.request_uri_raw(),
        Some(&b"sip:bob@biloxi.example.com"[..])
    );
    assert_eq!(m.request_uri().unwrap().host, b"biloxi.example.com");
    assert_eq!(m.version(), b"SIP/2.0");
    let v = m.top_via().unwrap();
    assert_eq!(v.transport, b"UDP");
    assert_eq!(v.host, b"pc33.atlanta.example.com");
    assert_eq!(v.port, Some(5060));
    assert_eq!(v.branch, Some(&b"z9hG4bK776asdhds"[..]));
    assert_eq!(v.rport, Some(None));
    let vias: Vec<_> = m.vias().map(|v| v.unwrap()).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[2].host, b"p2.example.com");
    assert_eq!(vias[2].received, Some(&b"192.0.2.9"[..]));
    let c = m.cseq().unwrap();
    assert_eq!((c.number, c.method), (314159, Method::Invite));
    let f = m.from().unwrap();
    assert_eq!(f.tag, Some(&b"1928301774"[..]));
    assert_eq!(f.display, Some(&b"\"Alice, A.\""[..]));
    assert_eq!(m.to().unwrap().tag, None);
    assert_eq!(m.to().unwrap().uri, b"sip:bob@biloxi.example.com");
    assert_eq!(
        m.call_id().unwrap(),
        b"a84b4c76e66710@pc33.atlanta.example.com"
    );
    assert_eq!(m.max_forwards().unwrap(), Some(70));
    assert_eq!(m.content_length(), Some(4));
    assert_eq!(m.body(), b"v=0\r");
    assert_eq!(&m.body_bytes()[..], b"v=0\r");
    assert_eq!(m.header("x-custom"), Some(&b"one\r\n two"[..]));
    assert_eq!(&unfold(m.header("X-CUSTOM").unwrap())[..], b"one two");
    assert_eq!(m.header("c"), Some(&b"application/sdp"[..]));
    assert_eq!(m.header("v"), m.header("Via"));
    assert_eq!(m.headers("via").count(), 2);
    assert_eq!(m.header("nope"), None);
    assert_eq!(m.header_count(), 12);
    assert_eq!(m.status(), None);
    assert_eq!(m.reason(), None);
}

#[test]
fn response_line() {
    let m = parse(
        b"SIP/2.0 180 Ringing here\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nCSeq: 1 INVITE\r\n\r\n",
    );
    assert!(!m.is_request());
    assert_eq!(m.status(), Some(180));
    assert_eq!(m.reason(), Some(&b"Ringing here"[..]));
    assert!(m.request_uri().is_err());
    let m = parse(b"SIP/2.0 100\r\n\r\n");
    assert_eq!(m.reason(), Some(&b""[..]));
    let k = parse(b"SIP/2.0 487 Terminated\r\nVia: SIP/2.0/UDP h:5070;branch=z9hG4bKx\r\nCSeq: 1 INVITE\r\n\r\n")
        .transaction_key()
        .unwrap();
    assert_eq!(
        k,
        TransactionKey::Rfc3261 {
            branch: Bytes::from_static(b"z9hG4bKx"),
            host: Bytes::from_static(b"h"),
            port: Some(5070),
            method: Method::Invite
        }
    );
}

#[test]
fn compact_forms_and_lf_only() {
    let m = parse(b"OPTIONS sip:a@b SIP/2.0\nv: SIP/2.0/UDP h;branch=z9hG4bK1\nf: <sip:x@y>;tag=1\nt: sip:a@b\ni: cid\nl: 0\n\n");
    assert_eq!(m.top_via().unwrap().host, b"h");
    assert_eq!(m.from().unwrap().tag, Some(&b"1"[..]));
    assert_eq!(m.call_id().unwrap(), b"cid");
    assert_eq!(m.content_length(), Some(0));
    assert_eq!(m.max_forwards().unwrap(), None);
    assert_eq!(m.header("Content-Length"), Some(&b"0"[..]));
}

#[test]
fn parse_refusals() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "empty message"),
        (b"\r\n\r\n", "empty message"),
        (b"INVITE sip:a@b SIP/2.0\r\nTo: x\r\n", "no empty line"),
        (b"INVITE  sip:a@b SIP/2.0\r\n\r\n", "bad start line"),
        (b"INVITE sip:a@b SIP/2.0 \r\n\r\n", "bad start line"),
        (b"INVITE sip:a@b\r\n\r\n", "bad start line"),
        (b"INV@TE sip:a@b SIP/2.0\r\n\r\n", "bad method"),
        (b"INVITE sip:a@b HTTP/1.1\r\n\r\n", "bad SIP version"),
        (b"SIP/2.0 4294967301 x\r\n\r\n", "bad status code"),
        (b"SIP/2.0 099 x\r\n\r\n", "bad status code"),
        (b"SIP/2.0 20 x\r\n\r\n", "bad status code"),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nNoColon\r\n\r\n",
            "without a colon",
        ),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
            "bad header name",
        ),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nX-A@b: x\r\n\r\n",
            "bad header name \"X-A@b\"",
        ),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nNo-Colon x\r\n\r\n",
            "without a colon",
        ),
        (b"OPTIONS sip:a@b SIP/2.0\r\n\tx: y\r\n\r\n", "folded line"),
        (b"OPTIONS sip:a@b SIP/2.0\r\n : x\r\n\r\n", "folded line"),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: abc\r\n\r\n",
            "bad Content-Length value \"abc\"",
        ),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nl: -999\r\n\r\n",
            "bad Content-Length",
        ),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab",
            "conflicting",
        ),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nl: 9999\r\n\r\nab",
            "exceeds the 2 body bytes",
        ),
    ];
    for (msg, want) in cases {
        let e = SipMessage::parse(Bytes::copy_from_slice(msg)).unwrap_err();
        assert!(
            e.to_string().contains(want),
            "{e} for {:?}",
            String::from_utf8_lossy(msg)
        );
    }
}

#[test]
fn body_is_cut_at_content_length_and_leading_crlf_skipped() {
    let m = parse(b"\r\nOPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\nabcdef");
    assert_eq!(m.body(), b"ab");
    let m = parse(b"OPTIONS sip:a@b SIP/2.0\r\n\r\nabcdef");
    assert_eq!(m.body(), b"abcdef");
    assert_eq!(m.content_length(), None);
}

#[test]
fn bad_values_are_read_errors_not_parse_errors() {
    let m = parse(b"OPTIONS sip:a@b SIP/2.0\r\nVia: junk\r\nCSeq: x\r\nFrom: \"open <sip:a@b>\r\nCall-ID: a b\r\nMax-Forwards: 300\r\n\r\n");
    assert!(matches!(m.top_via(), Err(ParseError::BadVia(_))));
    assert!(matches!(m.cseq(), Err(ParseError::BadCSeq(_))));
    assert!(matches!(m.from(), Err(ParseError::BadNameAddr(_))));
    assert!(matches!(m.to(), Err(ParseError::MissingHeader("To"))));
    assert!(matches!(m.call_id(), Err(ParseError::BadCallId(_))));
    assert!(matches!(
        m.max_forwards(),
        Err(ParseError::BadMaxForwards(_))
    ));
    assert!(m.transaction_key().is_err());
    let m = parse(b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: 4294967296 OPTIONS\r\n\r\n");
    assert!(m.cseq().is_err());
    let m = parse(b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: 4294967295 OPTIONS\r\n\r\n");
    assert_eq!(m.cseq().unwrap().number, u32::MAX);
    let m = parse(b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: 7 FOO\r\n\r\n");
    assert_eq!(m.cseq().unwrap().method.as_bytes(), b"FOO");
}

#[test]
fn framing() {
    let msg = b"OPTIONS sip:a@b SIP/2.0\r\nl: 3\r\nX: y\r\n\r\nabcNEXT";
    assert_eq!(frame_length(msg, 4096), Ok(Some(msg.len() - 4)));
    for cut in 0..msg.len() - 4 {
        assert_eq!(frame_length(&msg[..cut], 4096), Ok(None), "cut at {cut}");
    }
    assert_eq!(frame_length(b"\r\n\r\nOPTIONS", 4096), Ok(Some(4)));
    // Folded and compact Content-Length.
    let msg = b"OPTIONS sip:a@b SIP/2.0\nContent-Length:\n 2\n\nab";
    assert_eq!(frame_length(msg, 4096), Ok(Some(msg.len())));
    assert!(matches!(
        frame_length(b"OPTIONS sip:a@b SIP/2.0\r\nl: 99999999999\r\n\r\n", 4096),
        Err(ParseError::TooLarge { .. })
    ));
    assert!(matches!(
        frame_length(
            b"OPTIONS sip:a@b SIP/2.0\r\nl: 99999999999999999999999\r\n\r\n",
            4096
        ),
        Err(ParseError::BadContentLength(_))
    ));
    assert!(matches!(
        frame_length(&[b'a'; 5000], 4096),
        Err(ParseError::TooLarge { .. })
    ));
    assert_eq!(
        frame_length(b"OPTIONS sip:a@b SIP/2.0\r\nX: y\r\n\r\n", 4096),
        Err(ParseError::MissingHeader("Content-Length"))
    );
}

#[test]
fn transaction_keys() {
    let m = parse(INVITE);
    let k = m.transaction_key().unwrap();
    let TransactionKey::Rfc3261 {
        branch,
        port,
        method,
        ..
    } = &k
    else {
        panic!("{k:?}")
    };
    assert_eq!(&branch[..], b"z9hG4bK776asdhds");
    assert_eq!(*port, Some(5060));
    assert_eq!(*method, Method::Invite);
    // The ACK to a non-2xx shares the INVITE's branch and maps to INVITE.
    let ack = parse(b"ACK sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds\r\n\r\n");
    assert_eq!(ack.transaction_key().unwrap(), k);
    // CANCEL is its own transaction but finds the INVITE's.
    let cancel = parse(b"CANCEL sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds\r\n\r\n");
    let ck = cancel.transaction_key().unwrap();
    assert_ne!(ck, k);
    assert_eq!(ck.for_invite(), k);
    // RFC 2543 fallback.
    let old = parse(b"INVITE sip:b@c SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1234\r\nFrom: <sip:a@c>;tag=f\r\nTo: <sip:b@c>\r\nCall-ID: x\r\nCSeq: 5 INVITE\r\n\r\n");
    let k = old.transaction_key().unwrap();
    let TransactionKey::Rfc2543 {
        from_tag,
        to_tag,
        cseq,
        top_via,
        ..
    } = &k
    else {
        panic!("{k:?}")
    };
    assert_eq!(from_tag.as_deref(), Some(&b"f"[..]));
    assert_eq!(*to_tag, None);
    assert_eq!(*cseq, 5);
    assert_eq!(&top_via[..], b"SIP/2.0/UDP h;branch=1234");
}

/// A key borrowed from a message finds what its owned key was stored
/// under, and nothing else: both kinds, a reply, an ACK (as the INVITE),
/// a CANCEL (as itself, and as its INVITE), another method, another
/// branch, another extension method.
#[test]
fn borrowed_keys_find_what_owned_keys_stored() {
    use crate::key::AsKeyRef;
    use std::collections::HashMap;
    let stored = [
        INVITE,
        b"INVITE sip:b@c SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1234\r\nFrom: <sip:a@c>;tag=f\r\nTo: <sip:b@c>\r\nCall-ID: x\r\nCSeq: 5 INVITE\r\n\r\n",
        b"FOO sip:b@c SIP/2.0\r\nVia: SIP/2.0/UDP h:5070;branch=z9hG4bKfoo\r\nCSeq: 1 FOO\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP us:5060;branch=z9hG4bKours\r\nCSeq: 7 BAR\r\n\r\n",
    ];
    let mut map: HashMap<TransactionKey, usize, foldhash::fast::RandomState> = HashMap::default();
    for (i, raw) in stored.iter().enumerate() {
        let m = parse(raw);
        let k = m.transaction_key().unwrap();
        assert_eq!(k.key_ref(), m.transaction_key_ref().unwrap(), "{i}");
        map.insert(k, i);
    }
    let find = |raw: &[u8]| {
        let m = parse(raw);
        let k = m.transaction_key_ref().unwrap();
        map.get(&k as &dyn AsKeyRef).copied()
    };
    for (i, raw) in stored.iter().enumerate() {
        assert_eq!(find(raw), Some(i), "{i}");
    }
    let ack = b"ACK sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds\r\n\r\n";
    assert_eq!(find(ack), Some(0));
    let cancel = parse(b"CANCEL sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds\r\n\r\n");
    let ck = cancel.transaction_key_ref().unwrap();
    assert_eq!(map.get(&ck as &dyn AsKeyRef), None);
    assert_eq!(map.get(&ck.for_invite() as &dyn AsKeyRef), Some(&0));
    assert_eq!(
        ck.for_invite(),
        cancel.transaction_key().unwrap().for_invite().key_ref()
    );
    assert_eq!(find(b"BYE sip:b@c SIP/2.0\r\nVia: SIP/2.0/UDP h:5070;branch=z9hG4bKfoo\r\nCSeq: 1 BYE\r\n\r\n"), None);
    assert_eq!(find(b"FOO sip:b@c SIP/2.0\r\nVia: SIP/2.0/UDP h:5070;branch=z9hG4bKfo0\r\nCSeq: 1 FOO\r\n\r\n"), None);
    assert_eq!(find(b"FOOX sip:b@c SIP/2.0\r\nVia: SIP/2.0/UDP h:5070;branch=z9hG4bKfoo\r\nCSeq: 1 FOOX\r\n\r\n"), None);
    assert_eq!(find(b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP us:5060;branch=z9hG4bKours\r\nCSeq: 7 BAR\r\n\r\n"), Some(3));
}

#[test]
fn editor_proxy_edits() {
    let m = parse(INVITE);
    let out = m
        .edit()
        .with(Edit::PrependVia(Bytes::from_static(
            b"SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1",
        )))
        .with(Edit::DecrementMaxForwards { default: 70 })
        .with(Edit::SetRequestUri(Bytes::from_static(
            b"sip:bob@192.0.2.4",
        )))
        .with(Edit::AppendHeader {
            name: Bytes::from_static(b"Record-Route"),
            value: Bytes::from_static(b"<sip:proxy.example.com;lr>"),
        })
        .with(Edit::RemoveHeaders(Bytes::from_static(b"x-custom")))
        .serialize();
    let e = SipMessage::parse(out.clone()).unwrap();
    assert_eq!(e.request_uri_raw(), Some(&b"sip:bob@192.0.2.4"[..]));
    assert_eq!(e.top_via().unwrap().host, b"proxy.example.com");
    assert_eq!(e.vias().count(), 4);
    assert_eq!(e.max_forwards().unwrap(), Some(69));
    assert_eq!(
        e.header("Record-Route"),
        Some(&b"<sip:proxy.example.com;lr>"[..])
    );
    assert_eq!(e.header("X-Custom"), None);
    assert_eq!(e.body(), b"v=0\r");
    assert_eq!(e.from().unwrap().tag, Some(&b"1928301774"[..]));
    // No edits: byte-identical.
    assert_eq!(&m.edit().serialize()[..], INVITE);
}

#[test]
fn editor_removes_only_the_first_via_value() {
    let m = parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1 , SIP/2.0/UDP b;branch=z9hG4bK2\r\nVia: SIP/2.0/UDP c\r\nl: 0\r\n\r\n");
    let e = SipMessage::parse(m.edit().with(Edit::RemoveFirstVia).serialize()).unwrap();
    let hosts: Vec<_> = e.vias().map(|v| v.unwrap().host.to_vec()).collect();
    assert_eq!(hosts, vec![b"b".to_vec(), b"c".to_vec()]);
    let e2 = SipMessage::parse(e.edit().with(Edit::RemoveFirstVia).serialize()).unwrap();
    assert_eq!(e2.vias().count(), 1);
    assert_eq!(e2.top_via().unwrap().host, b"c");
}

#[test]
fn editor_body_and_max_forwards_insert() {
    let m = parse(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Type: text/plain\r\nl: 2\r\n\r\nhi");
    let out = m
        .edit()
        .with(Edit::SetBody {
            content_type: Some(Bytes::from_static(b"application/json")),
            body: Bytes::from_static(b"{\"a\":1}"),
        })
        .with(Edit::DecrementMaxForwards { default: 70 })
        .serialize();
    let e = SipMessage::parse(out).unwrap();
    assert_eq!(e.body(), b"{\"a\":1}");
    assert_eq!(e.content_length(), Some(7));
    assert_eq!(e.headers("Content-Length").count(), 1);
    assert_eq!(e.header("content-type"), Some(&b"application/json"[..]));
    assert_eq!(e.max_forwards().unwrap(), Some(70));
    let z = parse(b"MESSAGE sip:a@b SIP/2.0\r\nMax-Forwards: 0\r\n\r\n");
    let e = SipMessage::parse(
        z.edit()
            .with(Edit::DecrementMaxForwards { default: 70 })
            .serialize(),
    )
    .unwrap();
    assert_eq!(e.max_forwards().unwrap(), Some(0));
}

#[test]
fn build_response() {
    let m = parse(INVITE);
    let r = m
        .response(
            180,
            b"Ringing",
            Some(b"abc"),
            &[(b"Contact", b"<sip:bob@192.0.2.4>")],
        )
        .unwrap();
    let r = SipMessage::parse(r).unwrap();
    assert_eq!(r.status(), Some(180));
    assert_eq!(r.reason(), Some(&b"Ringing"[..]));
    assert_eq!(r.vias().count(), 3);
    assert_eq!(r.to().unwrap().tag, Some(&b"abc"[..]));
    assert_eq!(r.from().unwrap().tag, Some(&b"1928301774"[..]));
    assert_eq!(r.call_id().unwrap(), m.call_id().unwrap());
    assert_eq!(r.cseq().unwrap(), m.cseq().unwrap());
    assert_eq!(r.content_length(), Some(0));
    assert_eq!(r.header("contact"), Some(&b"<sip:bob@192.0.2.4>"[..]));
    assert_eq!(r.header("Route"), None);
    assert_eq!(r.transaction_key().unwrap(), m.transaction_key().unwrap());
    // An existing To tag is kept, not doubled.
    let r2 = SipMessage::parse(r.buffer().clone()).unwrap();
    assert!(r2.response(200, b"OK", None, &[]).is_err());
    let tagged = parse(b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>;tag=t1\r\nFrom: <sip:c@d>;tag=f\r\nCall-ID: c\r\nCSeq: 2 BYE\r\n\r\n");
    let r = SipMessage::parse(tagged.response(200, b"OK", Some(b"t2"), &[]).unwrap()).unwrap();
    assert_eq!(r.to().unwrap().tag, Some(&b"t1"[..]));
}

#[test]
fn build_cancel_and_ack() {
    let sent = parse(INVITE);
    let c = SipMessage::parse(sent.cancel().unwrap()).unwrap();
    assert_eq!(c.method(), Some(&Method::Cancel));
    assert_eq!(c.request_uri_raw(), sent.request_uri_raw());
    assert_eq!(c.vias().count(), 1);
    assert_eq!(c.top_via().unwrap(), sent.top_via().unwrap());
    assert_eq!(c.cseq().unwrap().number, 314159);
    assert_eq!(c.cseq().unwrap().method, Method::Cancel);
    assert_eq!(c.header("Route"), Some(&b"<sip:p1.example.com;lr>"[..]));
    assert_eq!(c.to().unwrap().tag, None);
    assert_eq!(c.from().unwrap().tag, Some(&b"1928301774"[..]));
    assert_eq!(
        c.transaction_key().unwrap().for_invite(),
        sent.transaction_key().unwrap()
    );
    let resp = parse(b"SIP/2.0 486 Busy\r\nVia: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds\r\nTo: Bob <sip:bob@biloxi.example.com>;tag=xyz\r\nCSeq: 314159 INVITE\r\n\r\n");
    let a = SipMessage::parse(sent.ack(&resp).unwrap()).unwrap();
    assert_eq!(a.method(), Some(&Method::Ack));
    assert_eq!(a.to().unwrap().tag, Some(&b"xyz"[..]));
    assert_eq!(a.cseq().unwrap().method, Method::Ack);
    assert_eq!(
        a.transaction_key().unwrap(),
        sent.transaction_key().unwrap()
    );
    assert!(resp.cancel().is_err());
    assert!(sent.ack(&sent).is_err());
}

/// The top Via is parsed once and kept as offsets: a second read, and a
/// clone's, give the same parts; one that does not parse fails every time.
#[test]
fn top_via_read_again_is_the_same() {
    let m = parse(
        b"INVITE sip:a@b SIP/2.0\r\nVia: SIP / 2.0 / UDP [::1]:5070 ;rport=9;branch=z9hG4bKx;received=10.0.0.1, SIP/2.0/TCP h\r\nCall-ID: c\r\n\r\n",
    );
    let first = m.top_via().unwrap();
    let again = m.top_via().unwrap();
    let clone = m.clone();
    for v in [&again, &clone.top_via().unwrap()] {
        assert_eq!(v.raw, first.raw);
        assert_eq!(
            (v.protocol, v.version, v.transport, v.host),
            (&b"SIP"[..], &b"2.0"[..], &b"UDP"[..], &b"[::1]"[..])
        );
        assert_eq!((v.port, v.rport), (Some(5070), Some(Some(9))));
        assert_eq!(
            (v.branch, v.received),
            (Some(&b"z9hG4bKx"[..]), Some(&b"10.0.0.1"[..]))
        );
        assert_eq!(v.params().count(), first.params().count());
    }
    let bad = parse(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP\r\nCall-ID: c\r\n\r\n");
    assert!(bad.top_via().is_err());
    assert!(
        bad.top_via().is_err(),
        "a Via that failed is not kept as good"
    );
}

#[test]
fn from_and_to_are_parsed_once_and_read_the_same_every_time() {
    let m = parse(
        b"OPTIONS sip:a@b SIP/2.0\r\n\
          From: \"Alice A\" <sip:alice@atlanta.example.com;transport=udp>;tag=1928;x\r\n\
          To: sip:bob@biloxi.example.com ; tag = 77\r\n\
          Call-ID: c\r\nContent-Length: 0\r\n\r\n",
    );
    let first = (m.from().unwrap(), m.to().unwrap());
    for _ in 0..3 {
        let (f, t) = (m.from().unwrap(), m.to().unwrap());
        assert_eq!((f, t), first);
        assert_eq!(f.display, Some(&b"\"Alice A\""[..]));
        assert_eq!(f.uri, b"sip:alice@atlanta.example.com;transport=udp");
        assert_eq!(f.tag, Some(&b"1928"[..]));
        let names: Vec<_> = f.params().map(|p| p.unwrap().0.to_vec()).collect();
        assert_eq!(names, [b"tag".to_vec(), b"x".to_vec()]);
        assert_eq!(
            (t.display, t.uri, t.tag),
            (None, &b"sip:bob@biloxi.example.com"[..], Some(&b"77"[..]))
        );
    }
    // A copy reads the same, from its own buffer.
    let c = m.clone();
    assert_eq!((c.from().unwrap(), c.to().unwrap()), first);

    // What does not parse gives its error every time, and nothing kept
    // stands in for it.
    let bad = parse(b"OPTIONS sip:a@b SIP/2.0\r\nTo: <sip:b@c\r\nCall-ID: c\r\n\r\n");
    for _ in 0..2 {
        assert!(
            matches!(bad.to(), Err(ParseError::BadNameAddr(_))),
            "{:?}",
            bad.to()
        );
        assert!(matches!(bad.from(), Err(ParseError::MissingHeader("From"))));
    }
}
