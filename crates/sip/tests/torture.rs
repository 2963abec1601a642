//! RFC 4475 torture messages (files in `tests/torture/`, see its README for
//! the per-message verdicts).

use std::path::PathBuf;

use bytes::Bytes;
use sip::{frame_length, Edit, HeaderName, Method, ParseError, SipMessage, TransactionKey};

fn load(name: &str) -> Bytes {
    let p: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "torture",
        &format!("{name}.sip"),
    ]
    .iter()
    .collect();
    Bytes::from(std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

fn parse(name: &str) -> SipMessage {
    SipMessage::parse(load(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every read a proxy makes, which must not panic whatever the outcome.
fn all_reads(m: &SipMessage) {
    let _ = m.request_uri();
    let _ = m.top_via();
    let _ = m.vias().collect::<Vec<_>>();
    let _ = m.cseq();
    let _ = m.from();
    let _ = m.to();
    let _ = m.call_id();
    let _ = m.max_forwards();
    let _ = m.transaction_key();
    let _ = m
        .elements_of(HeaderName::Contact)
        .map(sip::NameAddr::parse)
        .collect::<Vec<_>>();
    let _ = m.response(400, b"Bad Request", Some(b"t"), &[]);
    let _ = m.cancel();
    let _ = m
        .edit()
        .with(Edit::RemoveFirstVia)
        .with(Edit::DecrementMaxForwards { default: 70 })
        .serialize();
}

/// The reads a proxy needs on a valid request must all succeed.
fn proxy_reads_ok(name: &str, m: &SipMessage) {
    m.top_via().unwrap_or_else(|e| panic!("{name}: {e}"));
    for v in m.vias() {
        v.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    m.cseq().unwrap_or_else(|e| panic!("{name}: {e}"));
    m.from().unwrap_or_else(|e| panic!("{name}: {e}"));
    m.to().unwrap_or_else(|e| panic!("{name}: {e}"));
    m.call_id().unwrap_or_else(|e| panic!("{name}: {e}"));
    m.max_forwards().unwrap_or_else(|e| panic!("{name}: {e}"));
    m.transaction_key()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    if m.is_request() {
        m.request_uri().unwrap_or_else(|e| panic!("{name}: {e}"));
        // Forwarding must give a message that parses to the same reads.
        let out = m
            .edit()
            .with(Edit::PrependVia(Bytes::from_static(
                b"SIP/2.0/UDP proxy.example.org;branch=z9hG4bKtorture",
            )))
            .with(Edit::DecrementMaxForwards { default: 70 })
            .serialize();
        let f = SipMessage::parse(out).unwrap_or_else(|e| panic!("{name} forwarded: {e}"));
        assert_eq!(f.vias().count(), m.vias().count() + 1, "{name}");
        assert_eq!(f.cseq().unwrap(), m.cseq().unwrap(), "{name}");
        assert_eq!(f.body(), m.body(), "{name}");
    }
}

const ALL: &[&str] = &[
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
    "unreason",
    "noreason",
    "badinv01",
    "clerr",
    "ncl",
    "scalar02",
    "scalarlg",
    "quotbal",
    "ltgtruri",
    "lwsruri",
    "lwsstart",
    "trws",
    "escruri",
    "baddate",
    "regbadct",
    "badaspec",
    "baddn",
    "badvers",
    "mismatch01",
    "mismatch02",
    "bigcode",
    "badbranch",
    "mcl01",
    "zeromf",
    "inv2543",
    "insuf",
];

#[test]
fn nothing_panics() {
    for name in ALL {
        let b = load(name);
        let _ = frame_length(&b, 1 << 16);
        if let Ok(m) = SipMessage::parse(b) {
            all_reads(&m);
        }
    }
}

#[test]
fn valid_messages_parse_with_right_reads() {
    for name in [
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
        "unreason",
        "noreason",
    ] {
        proxy_reads_ok(name, &parse(name));
    }

    let m = parse("wsinv");
    assert_eq!(
        m.request_uri_raw(),
        Some(&b"sip:vivekg@chair-dnrc.example.com;unknownparam"[..])
    );
    assert_eq!(m.to().unwrap().tag, Some(&b"1918181833n"[..]));
    assert_eq!(m.from().unwrap().tag, Some(&b"98asjd8"[..]));
    assert_eq!(m.max_forwards().unwrap(), Some(68));
    assert_eq!(m.cseq().unwrap().number, 9);
    assert_eq!(m.cseq().unwrap().method, Method::Invite);
    let vias: Vec<_> = m.vias().map(Result::unwrap).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].host, b"192.0.2.2");
    assert_eq!(vias[0].branch, Some(&b"390skdjuw"[..]));
    assert_eq!(vias[1].transport, b"TCP");
    assert_eq!(vias[1].branch, Some(&b"z9hG4bK9ikj8"[..]));
    assert_eq!(vias[2].host, b"192.168.255.111");
    assert_eq!(vias[2].branch, Some(&b"z9hG4bK30239"[..]));
    // Top branch lacks the cookie: the RFC 2543 key applies.
    assert!(matches!(
        m.transaction_key().unwrap(),
        TransactionKey::Rfc2543 { .. }
    ));
    assert_eq!(m.header("s"), Some(&b""[..]));
    assert_eq!(m.header("Subject"), Some(&b""[..]));
    assert_eq!(
        m.header("newfangledheader"),
        Some(&b"newfangled value\r\n continued newfangled value"[..])
    );
    assert_eq!(
        m.header("UnknownHeaderWithUnusualValue"),
        Some(&b";;,,;;,;"[..])
    );
    let contact = sip::NameAddr::parse(m.header("Contact").unwrap()).unwrap();
    assert_eq!(contact.uri, b"sip:jdrosen@example.com");
    assert_eq!(
        contact.params().get("newparam").unwrap(),
        Some(Some(&b"newvalue"[..]))
    );
    assert_eq!(contact.params().get("q").unwrap(), Some(Some(&b"0.33"[..])));
    assert_eq!(m.body().len(), 150);

    let m = parse("intmeth");
    assert_eq!(
        m.method().unwrap().as_bytes(),
        b"!interesting-Method0123456789_*+`.%indeed'~"
    );
    assert_eq!(m.request_uri().unwrap().host, b"example.com");
    assert_eq!(m.cseq().unwrap().method, *m.method().unwrap());
    assert_eq!(m.max_forwards().unwrap(), Some(255));
    assert_eq!(
        m.call_id().unwrap(),
        b"intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    );
    assert_eq!(m.from().unwrap().tag, Some(&b"_token~1'+`*%!-."[..]));
    assert_eq!(
        m.top_via().unwrap().branch,
        Some(&b"z9hG4bK-.!%66*_+`'~"[..])
    );

    let m = parse("esc01");
    assert_eq!(
        m.request_uri().unwrap().user,
        Some(&b"sips%3Auser%40example.com"[..])
    );
    assert_eq!(m.header("Content-Type"), Some(&b"application/sdp"[..]));

    let m = parse("esc02");
    assert_eq!(m.method().unwrap().as_bytes(), b"RE%47IST%45R");
    assert_ne!(m.method(), Some(&Method::Register));
    assert_eq!(m.headers_of(HeaderName::Contact).count(), 2);
    assert_eq!(m.headers("C%6Fntact").count(), 1);

    let m = parse("longreq");
    assert_eq!(m.vias().count(), 34);
    assert!(m.to().unwrap().parse_uri().unwrap().port == Some(6000));

    let m = parse("dblreq");
    assert_eq!(m.method(), Some(&Method::Register));
    assert_eq!(m.body(), b"");

    let m = parse("semiuri");
    let u = m.request_uri().unwrap();
    assert_eq!(u.user, Some(&b"user;par=u%40example.net"[..]));
    assert_eq!(u.host, b"example.com");

    let m = parse("transports");
    let t: Vec<_> = m.vias().map(|v| v.unwrap().transport.to_vec()).collect();
    assert_eq!(t, [&b"UDP"[..], b"SCTP", b"TLS", b"UNKNOWN", b"TCP"]);

    let m = parse("unreason");
    assert_eq!(m.status(), Some(200));
    assert!(m.reason().unwrap().starts_with(b"= 2**3 * 5**2 "));
    let m = parse("noreason");
    assert_eq!(m.status(), Some(100));
    assert_eq!(m.reason(), Some(&b""[..]));
}

fn parse_err(name: &str) -> ParseError {
    match SipMessage::parse(load(name)) {
        Ok(_) => panic!("{name} parsed"),
        Err(e) => e,
    }
}

#[test]
fn invalid_messages_are_refused_or_fail_on_the_broken_read() {
    // Refused at parse: no body boundary or start line to trust.
    assert!(matches!(
        parse_err("clerr"),
        ParseError::BodyTooShort { .. }
    ));
    assert!(matches!(parse_err("ncl"), ParseError::BadContentLength(_)));
    assert!(matches!(
        parse_err("scalarlg"),
        ParseError::BadContentLength(_)
    ));
    assert!(matches!(parse_err("ltgtruri"), ParseError::BadStartLine(_)));
    assert!(matches!(parse_err("lwsruri"), ParseError::BadStartLine(_)));
    assert!(matches!(parse_err("lwsstart"), ParseError::BadStartLine(_)));
    assert!(matches!(parse_err("trws"), ParseError::BadStartLine(_)));
    assert!(matches!(parse_err("bigcode"), ParseError::BadStatusCode(_)));
    assert!(matches!(
        parse_err("mcl01"),
        ParseError::ConflictingContentLength(13, 5)
    ));

    // Parsed (so a 400 can be built), the broken read fails cleanly.
    let m = parse("badinv01");
    assert!(matches!(m.top_via(), Err(ParseError::BadVia(_))));
    assert!(sip::NameAddr::parse(m.header("Contact").unwrap()).is_err());
    assert!(m.cseq().is_ok() && m.call_id().is_ok());

    let m = parse("scalar02");
    assert!(matches!(m.cseq(), Err(ParseError::BadCSeq(_))));
    assert!(matches!(
        m.max_forwards(),
        Err(ParseError::BadMaxForwards(_))
    ));

    let m = parse("quotbal");
    assert!(matches!(m.to(), Err(ParseError::BadNameAddr(_))));
    assert!(m.from().is_ok());

    let m = parse("badaspec");
    assert!(matches!(m.to(), Err(ParseError::BadNameAddr(_))));
    assert!(m.from().is_ok());

    let m = parse("baddn");
    assert!(m.from().is_err() && m.to().is_err());

    // Parsed, and the defect is visible to the layer that must act on it.
    let m = parse("escruri");
    assert!(m.request_uri().unwrap().headers.is_some());
    let m = parse("regbadct");
    let c = sip::NameAddr::parse(m.header("Contact").unwrap()).unwrap();
    assert!(c.parse_uri().unwrap().headers.is_some());
    let m = parse("badvers");
    assert_eq!(m.version(), b"SIP/7.0");
    let m = parse("mismatch01");
    assert_ne!(m.cseq().unwrap().method, *m.method().unwrap());
    let m = parse("mismatch02");
    assert_eq!(m.method().unwrap().as_bytes(), b"NEWMETHOD");
    assert_ne!(m.cseq().unwrap().method, *m.method().unwrap());
    let m = parse("baddate");
    proxy_reads_ok("baddate", &m);
}

#[test]
fn transaction_and_application_cases() {
    let m = parse("badbranch");
    let TransactionKey::Rfc3261 { branch, .. } = m.transaction_key().unwrap() else {
        panic!("badbranch key")
    };
    assert_eq!(&branch[..], b"z9hG4bK");

    assert_eq!(parse("zeromf").max_forwards().unwrap(), Some(0));

    let m = parse("inv2543");
    assert!(matches!(
        m.transaction_key().unwrap(),
        TransactionKey::Rfc2543 { from_tag: None, .. }
    ));
    assert_eq!(m.max_forwards().unwrap(), None);

    let m = parse("insuf");
    assert!(matches!(m.to(), Err(ParseError::MissingHeader("To"))));
    assert!(matches!(m.from(), Err(ParseError::MissingHeader("From"))));
    assert!(matches!(
        m.call_id(),
        Err(ParseError::MissingHeader("Call-ID"))
    ));
}
