//! Replays the inputs the `netstring_decode` fuzz target found interesting
//! (fuzz/regression/netstring_decode, minimised from the fuzzing runs) with
//! the target's own checks, so what fuzzing found stays fixed.

use evapi::codec::NetstringCodec;

const LIMIT: usize = 4096;

#[test]
fn netstring_corpus() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/regression/netstring_decode"
    );
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("the regression corpus is in the repository") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        n += 1;
        if data.len() < 2 {
            continue;
        }
        // As the fuzz target: the first two bytes say where to cut.
        let (cuts, input) = data.split_at(2);
        let a = (cuts[0] as usize).min(input.len());
        let b = (a + cuts[1] as usize).min(input.len());
        let split =
            NetstringCodec::new(LIMIT).decode_reads(&[&input[..a], &input[a..b], &input[b..]]);
        let whole = NetstringCodec::new(LIMIT).decode_reads(&[input]);
        match (&split, &whole) {
            (Ok(x), Ok(y)) => {
                assert_eq!(x, y, "same stream, same frames, whatever the cuts");
                assert!(x.iter().all(|f| f.len() <= LIMIT));
            }
            (Err(_), Err(_)) => {}
            _ => panic!("an error must not depend on the cuts: {split:?} vs {whole:?}"),
        }
    }
    assert!(n >= 3, "corpus found ({n} inputs)");
}
