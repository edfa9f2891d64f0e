#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ironroot_boot::fuzzing::decode_ar(data);
});
