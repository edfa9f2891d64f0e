//! ironroot's TFTP server: read-only file service for network boot
//! (RFC 1350 with RFC 2347 option negotiation, RFC 2348 blksize, RFC 2349
//! timeout and tsize, RFC 7440 windowsize).
//!
//! Layers: [`wire`] decodes and encodes packets; [`transfer`] is the sans-IO
//! state machine of one read transfer; [`server`] turns a request into a
//! transfer, an error or nothing, under the concurrency limits; [`source`]
//! confines paths and opens files (boot tree, memory, generated per-client
//! configs); [`driver`] moves bytes between the seam and the machines.
//!
//! This crate must never accept a write, serve a path outside its source's
//! tree, read a clock or open a socket except through `ironroot_net`, or
//! panic on a peer's bytes.

mod blocks;
pub mod config;
pub mod driver;
mod fuzzing;
pub mod options;
mod rto;
pub mod server;
pub mod source;
pub mod transfer;
pub mod wire;

pub use config::{Config, ConfigError, TftpConfig};
pub use server::{Counters, CountersSnapshot, Decision, Server, Ticket};
pub use source::{
    DirSource, FileReader, FileSource, Generated, MemorySource, OpenError, OpenFile, TftpPath,
    WithGenerated,
};
pub use transfer::{Outcome, Transfer, TransferStats};

pub use fuzzing::{fuzz_decode, fuzz_transfer};
