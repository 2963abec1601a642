//! The spike's comparison, in one binary: our parser against `sipx-sip`
//! 1.0.1 on the same messages, with the same reads a proxy makes (top Via
//! branch, CSeq, From tag, To tag, Call-ID, Max-Forwards, transaction key).
//!
//! Run: `cargo bench -p sip --bench parse_vs_sipx --features compare-sipx`
//! (the feature pulls in sipx-sip, which nothing else needs).

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use sip::SipMessage;
use sipx_sip::headers::{CSeq, CallId, From, MaxForwards, To, Via};
use sipx_sip::{parse_datagram, Limits, Message, TransactionKey};

include!("common/messages.rs");

fn ours(buf: &Bytes) {
    let m = SipMessage::parse(black_box(buf.clone())).unwrap();
    black_box(m.top_via().unwrap().branch);
    black_box(m.cseq().unwrap());
    black_box(m.from().unwrap().tag);
    black_box(m.to().unwrap().tag);
    black_box(m.call_id().unwrap());
    black_box(m.max_forwards().unwrap());
    black_box(m.transaction_key().unwrap());
}

fn sipx(buf: &Bytes, limits: &Limits) {
    let Message::Request(req) = parse_datagram(black_box(buf.clone()), limits).unwrap() else {
        panic!("a request")
    };
    let h = &req.headers;
    black_box(h.typed::<Via>().unwrap().unwrap().branch().map(<[u8]>::len));
    black_box(h.typed::<CSeq>().unwrap().unwrap());
    black_box(h.typed::<From>().unwrap().unwrap().tag().map(<[u8]>::len));
    black_box(h.typed::<To>().unwrap().unwrap().tag().map(<[u8]>::len));
    black_box(h.typed::<CallId>().unwrap().unwrap());
    black_box(h.typed::<MaxForwards>().unwrap().unwrap());
    black_box(TransactionKey::from_request(&req).unwrap());
}

fn main() {
    const ITERS: u32 = 100_000;
    const ROUNDS: u32 = 7;
    let limits = Limits::default();
    println!("| message | ours: parse µs | ours: parse + reads µs | sipx-sip: parse µs | sipx-sip: parse + reads µs |");
    println!("|---|---|---|---|---|");
    for (name, raw) in [("INVITE", INVITE), ("OPTIONS", OPTIONS)] {
        let buf = Bytes::copy_from_slice(raw);
        let ours_parse = time(
            || {
                black_box(SipMessage::parse(black_box(buf.clone())).unwrap());
            },
            ITERS,
            ROUNDS,
        );
        let ours_reads = time(|| ours(&buf), ITERS, ROUNDS);
        let sipx_parse = time(
            || {
                black_box(parse_datagram(black_box(buf.clone()), &limits).unwrap());
            },
            ITERS,
            ROUNDS,
        );
        let sipx_reads = time(|| sipx(&buf, &limits), ITERS, ROUNDS);
        println!(
            "| {name} ({} B) | {:.2} | {:.2} | {:.2} | {:.2} |",
            raw.len(),
            ours_parse / 1000.0,
            ours_reads / 1000.0,
            sipx_parse / 1000.0,
            sipx_reads / 1000.0
        );
    }
}
