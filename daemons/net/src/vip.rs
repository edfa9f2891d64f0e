//! The virtual IP: the address clients use, owned by the active node.
//!
//! `claim` adds the address with a short lifetime (IPv4 `valid_lft`) and
//! announces it with gratuitous ARP; `renew` extends the lifetime while the
//! daemon is healthy; `release` removes it. If the daemon dies, renewals stop
//! and the kernel (or the simulated segment) drops the address by itself when
//! the lifetime runs out — the bound the cluster manager's timing argument
//! rests on.

use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Which VIP, where, and how it is announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipSpec {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    /// Interface the address lives on (`eth0`); ignored in `sim`.
    pub interface: String,
    /// Address lifetime; renewed well before it runs out.
    pub lifetime: Duration,
    /// Gratuitous ARP announcements per claim (Heartbeat IPaddr2: 5).
    pub garp_count: u32,
    /// Gap between announcements (Heartbeat IPaddr2: 200 ms).
    pub garp_interval: Duration,
    /// Longest a claim waits while another host still answers ARP for the
    /// address (RFC 5227 probing); zero claims without probing. A dead
    /// daemon's address lingers in its kernel until the lifetime check runs,
    /// which Linux may do up to 250 ms late: the probe closes that window.
    pub probe_wait: Duration,
}

impl VipSpec {
    /// Defaults like Heartbeat's IPaddr2: 5 GARPs 200 ms apart; a 3 s lifetime.
    pub fn new(addr: Ipv4Addr, prefix_len: u8, interface: impl Into<String>) -> VipSpec {
        VipSpec {
            addr,
            prefix_len,
            interface: interface.into(),
            lifetime: Duration::from_secs(3),
            garp_count: 5,
            garp_interval: Duration::from_millis(200),
            probe_wait: Duration::from_millis(500),
        }
    }
}

/// Why a VIP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("interface {0} not found")]
    NoSuchInterface(String),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("gratuitous ARP on {interface}: {source}")]
    Garp {
        interface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid VIP: {0}")]
    Invalid(String),
    #[error(
        "{addr} is still answered by {holder} after probing for {waited:?}: another host holds it"
    )]
    InUse {
        addr: Ipv4Addr,
        /// The answering host: its MAC, or its address in `sim`.
        holder: String,
        waited: Duration,
    },
}

/// One probe round: two ARP probes 10 ms apart, then listening until 20 ms.
pub const PROBE_ROUND: Duration = Duration::from_millis(20);

/// VIP control of one host.
pub trait VipControl: Clone + Send + Sync + 'static {
    /// Get ready to claim `spec` fast later (open what a claim needs);
    /// a failure here only means the claim opens it itself.
    fn prepare(&self, spec: &VipSpec) -> impl Future<Output = Result<(), VipError>> + Send {
        let _ = spec;
        async { Ok(()) }
    }
    /// Probe for another holder (up to `spec.probe_wait`, failing with
    /// [`VipError::InUse`] if one still answers), add the address (lifetime
    /// `spec.lifetime`) and announce it. Returns once the address is
    /// configured; the announcements after the first continue in the
    /// background.
    fn claim(&self, spec: &VipSpec) -> impl Future<Output = Result<(), VipError>> + Send;
    /// Extend the lifetime of a held address; fails if it is gone (e.g. it
    /// expired), in which case the caller must `claim` again.
    fn renew(&self, spec: &VipSpec) -> impl Future<Output = Result<(), VipError>> + Send;
    /// Remove the address (idempotent).
    fn release(&self, spec: &VipSpec) -> impl Future<Output = Result<(), VipError>> + Send;
    /// Whether this host holds the address now.
    fn holds(&self, spec: &VipSpec) -> impl Future<Output = Result<bool, VipError>> + Send;
}
