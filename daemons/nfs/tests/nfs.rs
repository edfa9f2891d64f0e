//! Integration tests of ironroot-nfs, one module per RFC section plus
//! in-process client tests and real-peer tests with libnfs.

#[path = "nfs/support.rs"]
mod support;

#[path = "nfs/rfc5531_rpc.rs"]
mod rfc5531_rpc;

#[path = "nfs/rfc1833_portmap.rs"]
mod rfc1833_portmap;

#[path = "nfs/rfc1813_5_mount.rs"]
mod rfc1813_5_mount;

#[path = "nfs/rfc1813_3_3_procedures.rs"]
mod rfc1813_3_3_procedures;

#[path = "nfs/rfc1813_3_3_16_readdir.rs"]
mod rfc1813_3_3_16_readdir;

#[path = "nfs/handles.rs"]
mod handles;

#[path = "nfs/client_inprocess.rs"]
mod client_inprocess;

#[path = "nfs/libnfs_peer.rs"]
mod libnfs_peer;

#[path = "nfs/fuzz_corpus.rs"]
mod fuzz_corpus;

#[path = "nfs/turmoil_failover.rs"]
mod turmoil_failover;
