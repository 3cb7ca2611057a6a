//! Frames separated by `\n--\n`, decoded by both codecs; everything that
//! decoded goes out as one batch frame per codec and must come back the
//! same, in order (see `src/checks.rs`).
#![no_main]

#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| checks::batch(bytes));
