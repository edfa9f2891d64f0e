#![no_main]
//! Any bytes a peer can send: RPC header, credentials, every procedure's
//! arguments, and TCP record marking.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ironroot_nfs::fuzz_one(data);
});
