//! Untrusted bytes through ironroot_store::fuzzing::fuzz_tar: no input may
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ironroot_store::fuzzing::fuzz_tar(data);
});
