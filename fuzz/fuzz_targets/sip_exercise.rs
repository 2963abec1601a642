// The checks of the `sip_parse` fuzz target, shared with the replay test
// (crates/sip/tests/fuzz_regression.rs) through `include!`.

/// Drive framing, parsing, every typed read, the builders and the editor
/// with `data`; panic on anything that is a bug.
pub fn exercise_sip(data: &[u8]) {
    use bytes::Bytes;
    use sip::{frame_length, Edit, HeaderName, NameAddr, SipMessage};

    let _ = frame_length(data, 65_535);
    let Ok(m) = SipMessage::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = m.request_uri();
    let _ = m.vias().count();
    let _ = m.top_via();
    let _ = m.cseq();
    let _ = m.from().map(|f| f.parse_uri());
    let _ = m.to();
    let _ = m.call_id();
    let _ = m.max_forwards();
    let _ = m.transaction_key();
    let _ = m
        .elements_of(HeaderName::Contact)
        .map(NameAddr::parse)
        .count();
    let _ = m.response(200, b"OK", Some(b"t"), &[]);
    let _ = m.cancel();
    let out = m
        .edit()
        .with(Edit::PrependVia(Bytes::from_static(
            b"SIP/2.0/UDP p;branch=z9hG4bK1",
        )))
        .with(Edit::RemoveFirstVia)
        .with(Edit::DecrementMaxForwards { default: 70 })
        .serialize();
    SipMessage::parse(out).expect("edited message parses");
}
