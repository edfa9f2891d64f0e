//! A request and a stream of client datagrams and timeouts through the
//! server and a transfer: no input may panic or break a transfer invariant.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ironroot_tftp::fuzz_transfer(data);
});
