//! Replays the inputs the `sip_parse` fuzz target found interesting
//! (fuzz/regression/sip_parse, minimised from the fuzzing runs, plus the
//! RFC 4475 messages it started from) with the target's own checks.

include!("../../../fuzz/fuzz_targets/sip_exercise.rs");

#[test]
fn sip_parse_corpus() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/regression/sip_parse"
    );
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("the regression corpus is in the repository") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| exercise_sip(&data));
        assert!(result.is_ok(), "{} panics", path.display());
        n += 1;
    }
    assert!(n >= 30, "corpus found ({n} inputs)");
}
