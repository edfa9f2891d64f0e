//! Untrusted datagrams through the TFTP decoder: no input may panic, and
//! whatever decodes must re-encode to the same packet.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ironroot_tftp::fuzz_decode(data);
});
