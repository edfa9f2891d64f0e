//! Integration tests of the store against the real filesystem.

#[path = "store/crash.rs"]
mod crash;
#[path = "store/full_disk.rs"]
mod full_disk;
#[path = "store/fuzz_corpus.rs"]
mod fuzz_corpus;
#[path = "store/generations.rs"]
mod generations;
#[path = "store/leases.rs"]
mod leases;
#[path = "store/replication_tcp.rs"]
mod replication_tcp;
#[path = "store/roundtrip.rs"]
mod roundtrip;
#[path = "store/sim.rs"]
mod sim;
