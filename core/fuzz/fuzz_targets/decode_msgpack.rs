//! Any bytes through the MessagePack frame decoder: never a panic, and
//! every decoded message survives a re-encode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packetflow::Codec;

fuzz_target!(|bytes: &[u8]| {
    for message in Codec::MsgPack.decode(bytes).into_iter().flatten() {
        let again = Codec::MsgPack.encode_to_vec(&message);
        let back: Vec<_> = Codec::MsgPack.decode(&again).into_iter().collect();
        assert_eq!(back, vec![Ok(message)]);
    }
});
