//! Fuzz the netstring decoder: `cargo fuzz run netstring_decode` from `fuzz/`.
//!
//! The input is cut into reads at points taken from its first bytes, so
//! frames split across reads are explored too. Checked: no panic; every
//! frame respects the limit; and a stream that decodes cleanly decodes to
//! the same frames whatever the cuts.
#![no_main]

use bytes::BytesMut;
use evapi::codec::NetstringCodec;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const LIMIT: usize = 4096;

fn decode(reads: &[&[u8]]) -> Result<Vec<Vec<u8>>, ()> {
    let mut codec = NetstringCodec::new(LIMIT);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => {
                    assert!(f.len() <= LIMIT);
                    frames.push(f.to_vec());
                }
                Ok(None) => break,
                Err(_) => return Err(()),
            }
        }
    }
    Ok(frames)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (cuts, input) = data.split_at(2);
    let a = (cuts[0] as usize).min(input.len());
    let b = (a + cuts[1] as usize).min(input.len());
    let split = decode(&[&input[..a], &input[a..b], &input[b..]]);
    let whole = decode(&[input]);
    if let (Ok(x), Ok(y)) = (&split, &whole) {
        assert_eq!(x, y, "the same stream decoded differently when split");
    }
    assert_eq!(split.is_err(), whole.is_err(), "an error must not depend on how reads are cut");
});
