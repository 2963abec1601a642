//! The SIP parser spike: parse alone, parse plus the reads a proxy makes,
//! and the proxy's edit, for a typical INVITE and a short OPTIONS.
//!
//! Run: `cargo bench -p sip --bench parse`. Plain `Instant` timing: a
//! warm-up, then the best of several rounds of many iterations (the best
//! round is the least disturbed by the other load on the machine).

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use sip::{Edit, SipMessage};

include!("common/messages.rs");

fn reads(m: &SipMessage) {
    let v = m.top_via().unwrap();
    black_box(v.branch);
    black_box(m.cseq().unwrap());
    black_box(m.from().unwrap().tag);
    black_box(m.to().unwrap().tag);
    black_box(m.call_id().unwrap());
    black_box(m.max_forwards().unwrap());
    black_box(m.transaction_key().unwrap());
}

/// The proxy's edit: our Via on top, Max-Forwards down by one, serialized.
fn forward(m: &SipMessage, via: &Bytes) -> Bytes {
    m.edit()
        .with(Edit::PrependVia(via.clone()))
        .with(Edit::DecrementMaxForwards { default: 70 })
        .serialize()
}

fn bench(name: &str, raw: &'static [u8]) {
    // A datagram arrives in its own buffer: start from a shared `Bytes`
    // as a receive path would (cloning it is a reference-count increment).
    let buf = Bytes::copy_from_slice(raw);
    let _ = buf.clone(); // promote to the shared representation once
    const ITERS: u32 = 200_000;
    const ROUNDS: u32 = 7;
    let parse = time(
        || {
            black_box(SipMessage::parse(black_box(buf.clone())).unwrap());
        },
        ITERS,
        ROUNDS,
    );
    let parse_reads = time(
        || {
            let m = SipMessage::parse(black_box(buf.clone())).unwrap();
            reads(&m);
        },
        ITERS,
        ROUNDS,
    );
    let m = SipMessage::parse(buf.clone()).unwrap();
    let via = Bytes::from_static(b"SIP/2.0/UDP proxy.example.com:5060;branch=z9hG4bK-proxy-1");
    let edit = time(
        || {
            black_box(forward(&m, &via));
        },
        ITERS,
        ROUNDS,
    );
    let all = time(
        || {
            let m = SipMessage::parse(black_box(buf.clone())).unwrap();
            reads(&m);
            black_box(forward(&m, &via));
        },
        ITERS,
        ROUNDS,
    );
    println!(
        "| {name} ({} B) | {:.2} | {:.2} | {:.2} | {:.2} |",
        raw.len(),
        parse / 1000.0,
        parse_reads / 1000.0,
        edit / 1000.0,
        all / 1000.0
    );
}

fn main() {
    println!("| message | parse µs | parse + proxy reads µs | edit (add Via, Max-Forwards -1, serialize) µs | parse + reads + edit µs |");
    println!("|---|---|---|---|---|");
    bench("INVITE", INVITE);
    bench("OPTIONS", OPTIONS);
}
