//! Heartbeat/witness packet decoder: authenticated decode with the corpus
//! key, and the body parser past the tag check.
#![no_main]

use ironroot_cluster::wire::{Key, Packet};
use libfuzzer_sys::fuzz_target;

const FUZZ_KEY: &[u8] = b"ironroot-fuzz-key-0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let key = Key::new(FUZZ_KEY.to_vec());
    if let Ok(packet) = Packet::decode(&key, data) {
        assert_eq!(Packet::decode(&key, &packet.encode(&key)), Ok(packet));
    }
    if let Ok(packet) = Packet::parse_signed(data) {
        let bytes = packet.encode(&key);
        assert_eq!(Packet::decode(&key, &bytes), Ok(packet));
    }
});
