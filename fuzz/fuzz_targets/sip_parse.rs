//! Fuzz the SIP message layer: `cargo fuzz run sip_parse` from `fuzz/`.
//! Any panic in framing, parsing, a typed read or the editor is a bug.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sip::{frame_length, Edit, HeaderName, NameAddr, SipMessage};

fuzz_target!(|data: &[u8]| {
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
});
