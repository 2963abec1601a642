//! Property tests: no input makes parsing, framing, a typed read or the
//! editor panic.

use bytes::Bytes;
use proptest::prelude::*;
use sip::{frame_length, Edit, HeaderName, NameAddr, SipMessage};

const SEED: &[u8] = b"INVITE sip:bob@example.com;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/UDP [2001:db8::1]:5060;rport;branch=z9hG4bK776, SIP/2.0/TCP p.example.com;received=1.2.3.4\r\n\
v: SIP/2.0/UDP b.example.com:5070;branch=z9hG4bKx\r\n\
Max-Forwards: 70\r\n\
To: \"Bob, B\" <sip:bob@example.com>\r\n\
f: Alice <sip:alice@example.com>;tag=19\r\n\
i: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
m: <sip:alice@pc33.example.com>;q=0.5, <sip:a2@x>\r\n\
X-Fold: a\r\n\
\tb\r\n\
l: 4\r\n\
\r\n\
v=0\r";

fn exercise(buf: Bytes) {
    let _ = frame_length(&buf, 4096);
    let Ok(m) = SipMessage::parse(buf) else {
        return;
    };
    let _ = m.request_uri();
    let _ = m.top_via();
    let _ = m.vias().count();
    let _ = m.cseq();
    let _ = m.from().map(|f| f.parse_uri());
    let _ = m.to().map(|t| t.params().count());
    let _ = m.call_id();
    let _ = m.max_forwards();
    let _ = m.transaction_key().map(|k| k.for_invite());
    let _ = m
        .elements_of(HeaderName::Contact)
        .map(NameAddr::parse)
        .count();
    let _ = m.header("x-fold").map(sip::unfold);
    let _ = m.response(200, b"OK", Some(b"tag"), &[(b"X", b"y")]);
    let _ = m.cancel();
    let _ = m.ack(&m);
    let out = m
        .edit()
        .with(Edit::PrependVia(Bytes::from_static(
            b"SIP/2.0/UDP p;branch=z9hG4bKp",
        )))
        .with(Edit::RemoveFirstVia)
        .with(Edit::DecrementMaxForwards { default: 70 })
        .with(Edit::SetRequestUri(Bytes::from_static(b"sip:x@y")))
        .with(Edit::RemoveHeaders(Bytes::from_static(b"x-fold")))
        .with(Edit::AppendHeader {
            name: Bytes::from_static(b"X-A"),
            value: Bytes::from_static(b"b"),
        })
        .serialize();
    // What the editor writes from a parsed message must parse again.
    if let Err(e) = SipMessage::parse(out.clone()) {
        panic!(
            "edited message does not parse: {e}\n{:?}",
            String::from_utf8_lossy(&out)
        );
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let special = prop_oneof![
        Just(b'\r'),
        Just(b'\n'),
        Just(b' '),
        Just(b'\t'),
        Just(b','),
        Just(b';'),
        Just(b'"'),
        Just(b'<'),
        Just(b'>'),
        Just(b':'),
        Just(b'['),
        Just(b'='),
        Just(b'\\'),
        any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), special.clone()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), special).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        exercise(Bytes::from(b));
    }

    #[test]
    fn mutated_messages(ms in proptest::collection::vec(mutation(), 1..8)) {
        let mut b = SEED.to_vec();
        for m in ms {
            let n = b.len().max(1);
            match m {
                Mutation::Flip(i, c) => { if !b.is_empty() { let i = i % n; b[i] = c; } }
                Mutation::Insert(i, c) => b.insert(i % (b.len() + 1), c),
                Mutation::Remove(i) => { if !b.is_empty() { b.remove(i % n); } }
                Mutation::Truncate(i) => b.truncate(i % (b.len() + 1)),
            }
        }
        exercise(Bytes::from(b));
    }
}

#[test]
fn seed_is_valid() {
    let m = SipMessage::parse(Bytes::from_static(SEED)).unwrap();
    assert_eq!(m.vias().count(), 3);
    assert_eq!(m.elements_of(HeaderName::Contact).count(), 2);
    exercise(Bytes::from_static(SEED));
}
