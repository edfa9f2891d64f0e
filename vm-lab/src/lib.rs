//! The QEMU lab: boots real clients (SeaBIOS or OVMF, the iPXE NIC ROM, the
//! Debian kernel with the boot crate's initramfs) by PXE from a server side
//! in network namespaces, and proves what the product promises — a
//! read-only NFS root that `rm -rf /` cannot damage — with phase timings
//! for every boot. The server side is pluggable: ironroot itself (two
//! nodes and a witness) and a baseline made of peers (dnsmasq, nfs-ganesha)
//! to compare with.
//!
//! It must never touch anything outside what it creates: its namespaces,
//! bridge and taps carry its PID, nothing is routed out of them, only
//! processes it started are killed (by PID), and everything is removed on
//! exit, failure or Ctrl-C. It never re-implements the boot tree: kernel,
//! initramfs, mount options and iPXE scripts come from `ironroot-boot`.

pub mod baseline;
pub mod bench;
pub mod bootsrc;
pub mod cases;
pub mod error;
pub mod host;
pub mod image;
pub mod ironroot;
pub mod lab;
pub mod live;
pub mod net;
pub mod phases;
pub mod qemu;
pub mod ra;
pub mod report;
pub mod server;

pub use cases::{run_case, Case, CaseRun, CASES};
pub use error::LabError;
pub use lab::{AccelChoice, LabOptions};
pub use server::ServerKind;
