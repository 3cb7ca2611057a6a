//! Any bytes through the JSON frame decoder (single frames and batches):
//! never a panic, whatever decodes survives a re-encode in both codecs,
//! and the text path agrees with the bytes path (see `src/checks.rs`).
#![no_main]

#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| checks::decode(packetflow::Codec::Json, bytes));
