//! Fuzz the netstring decoder: `cargo fuzz run netstring_decode` from `fuzz/`.
//!
//! The input is cut into reads at points taken from its first bytes, so
//! frames split across reads are explored too. Checked: no panic; every
//! frame respects the limit; and a stream decodes to the same frames (or
//! fails) whatever the cuts. `crates/evapi/tests/fuzz_regression.rs`
//! replays the saved inputs with the same checks.
#![no_main]

use evapi::codec::NetstringCodec;
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (cuts, input) = data.split_at(2);
    let a = (cuts[0] as usize).min(input.len());
    let b = (a + cuts[1] as usize).min(input.len());
    let split = NetstringCodec::new(LIMIT).decode_reads(&[&input[..a], &input[a..b], &input[b..]]);
    let whole = NetstringCodec::new(LIMIT).decode_reads(&[input]);
    match (&split, &whole) {
        (Ok(x), Ok(y)) => {
            assert_eq!(x, y, "the same stream decoded differently when split");
            assert!(x.iter().all(|f| f.len() <= LIMIT));
        }
        (Err(_), Err(_)) => {}
        _ => panic!("an error must not depend on how reads are cut"),
    }
});
