//! Takeover-hint decoder: authenticated decode with the corpus key, and the
//! body parser past the tag check.
#![no_main]

use ironroot_cluster::hints::Hint;
use ironroot_cluster::wire::Key;
use libfuzzer_sys::fuzz_target;

const FUZZ_KEY: &[u8] = b"ironroot-fuzz-key-0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let key = Key::new(FUZZ_KEY.to_vec());
    if let Ok(hint) = Hint::decode(&key, data) {
        assert_eq!(Hint::decode(&key, &hint.encode(&key)), Ok(hint));
    }
    if let Ok(hint) = Hint::parse_signed(data) {
        let bytes = hint.encode(&key);
        assert_eq!(Hint::decode(&key, &bytes), Ok(hint));
    }
});
