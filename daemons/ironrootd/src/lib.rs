//! `ironrootd`: the node daemon. One process per control node (role
//! `node`) composes the cluster manager, the replicated store and the NFS,
//! TFTP and DHCP services; a third machine may run the `witness` role. It
//! also serves the admin API (for the `ironroot` CLI) and Prometheus metrics.
//!
//! It must never serve a client while another node may be active: the
//! services are resources the cluster manager starts and stops in order.

pub mod admin;
pub mod bootfiles;
pub mod boottree;
pub mod config;
pub mod dhcpregistry;
pub mod diff;
pub mod guardian;
pub mod handler;
pub mod leaselog;
pub mod metrics;
pub mod node;
pub mod ownthread;
pub mod reload;
pub mod replstatus;
pub mod resolve;
pub mod retention;
pub mod seen;
pub mod services;
pub mod shell;
pub mod storefs;
pub mod takeover;
pub mod witness;

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
