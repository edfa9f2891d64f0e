//! ironroot's DHCPv4 server: the first thing a diskless client's firmware
//! talks to. It answers reserved clients from the client registry (and,
//! optionally, others from a dynamic pool whose leases are made durable in
//! the replicated journal before they are acknowledged), and tells PXE and
//! iPXE clients what to boot from the VIP.
//!
//! The protocol logic ([`DhcpServer`]) is sans-IO: it never opens a socket,
//! reads a clock or draws a random number; [`driver`] moves bytes between it
//! and the `ironroot_net` seam. It must never answer from an address other
//! than the VIP, never hand one address to two clients, never acknowledge a
//! pool lease before the journal has it, and never panic on peer bytes.

pub mod config;
pub mod counters;
pub mod driver;
pub mod leases;
pub mod pxe;
pub mod registry;
pub mod reply;
pub mod server;
pub mod wire;

pub use config::{ArchFile, BootConfig, Config, ConfigError, Limits, Mode, PoolConfig};
pub use counters::{Counters, SharedCounters};
pub use driver::{serve, DriverOptions};
pub use leases::{
    LeaseLog, LeaseLogError, LeaseRecord, LeaseRecordKind, LeaseWrite, LeaseWriteId,
    MemoryLeaseLog, Pool,
};
pub use registry::{MemoryRegistry, Registry, RegistryError, Reservation};
pub use reply::{Outgoing, CLIENT_PORT, PXE_PORT, SERVER_PORT};
pub use server::{DhcpServer, Incoming};
pub use wire::{decode_request, ClientKey, DecodeError, Mac, Request};
