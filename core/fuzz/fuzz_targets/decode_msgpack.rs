//! Any bytes through the MessagePack frame decoder (single frames and
//! batches): never a panic, and whatever decodes survives a re-encode in
//! both codecs (see `src/checks.rs`).
#![no_main]

#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| checks::decode(packetflow::Codec::MsgPack, bytes));
