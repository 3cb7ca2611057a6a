//! Any bytes through the JSON frame decoder (single frames and batches):
//! it must never panic, and whatever decodes must encode and decode again
//! to the same messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packetflow::Codec;

fuzz_target!(|bytes: &[u8]| {
    for message in Codec::Json.decode(bytes).into_iter().flatten() {
        let again = Codec::Json.encode_to_vec(&message);
        let back: Vec<_> = Codec::Json.decode(&again).into_iter().collect();
        assert_eq!(back, vec![Ok(message)]);
    }
});
