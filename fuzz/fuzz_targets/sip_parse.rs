//! Fuzz the SIP message layer: `cargo fuzz run sip_parse` from `fuzz/`.
//! Any panic in framing, parsing, a typed read or the editor is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("sip_exercise.rs");

fuzz_target!(|data: &[u8]| exercise_sip(data));
