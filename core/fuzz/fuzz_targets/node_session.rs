//! A WebSocket session with a real node over an in-memory stream: a flags
//! byte (codec, auth, upgrade token, tight limits), then frames separated
//! by `\n--\n`. Every admitted submit must get exactly one answer, the
//! node must close exactly when the frames call for it, and nothing may be
//! left behind (see `src/checks.rs`).
#![no_main]

#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| checks::node_session(bytes));
