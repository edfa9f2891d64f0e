//! VIP control through rtnetlink plus gratuitous ARP.
//!
//! The address is added with IFA_CACHEINFO valid_lft = preferred_lft = the
//! spec's lifetime, so the kernel itself removes it when renewals stop (the
//! daemon died, hung or lost quorum without getting to `release`). Renewal
//! replaces the address (NLM_F_REPLACE), which resets both lifetimes.
//!
//! Each operation opens its own netlink socket: VIP operations are rare
//! (about one a second), and a socket opened by the calling task lives in
//! that task's network namespace, which is what tests running in a netns
//! need.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage, CacheInfo};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::AddressFamily;

use super::garp::{GarpSender, PacketSocket};
use crate::{VipControl, VipError, VipSpec};

/// Bound on one netlink request: the kernel answers at once, so a request
/// that takes longer means something is badly wrong.
pub const NETLINK_TIMEOUT: Duration = Duration::from_secs(2);
/// Most announcements one claim may ask for.
pub const GARP_COUNT_MAX: u32 = 100;
/// Longest gap between announcements one claim may ask for.
pub const GARP_INTERVAL_MAX: Duration = Duration::from_secs(10);
/// Longest a claim may wait for another holder to let the address go.
pub const PROBE_WAIT_MAX: Duration = Duration::from_secs(10);
/// IFA_CACHEINFO's "forever"; a VIP lifetime must stay below it, or a dead
/// daemon would leave the address behind for good.
const LIFETIME_INFINITE_SECS: u32 = u32::MAX;

/// What this host's VIP control has done, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipCounters {
    pub claims: u64,
    pub renewals: u64,
    pub releases: u64,
    pub garp_sent: u64,
    /// Announcements the kernel refused (queue full, interface down).
    pub garp_failed: u64,
    /// Probe rounds answered by another holder (a claim waited).
    pub probe_answers: u64,
}

#[derive(Debug, Default)]
struct AtomicCounters {
    claims: AtomicU64,
    renewals: AtomicU64,
    releases: AtomicU64,
    garp_sent: AtomicU64,
    garp_failed: AtomicU64,
    probe_answers: AtomicU64,
}

#[derive(Debug, Default)]
struct Shared {
    /// The background announcements of each VIP, aborted on release so a
    /// node that gave the VIP away never announces it again.
    announcers: Mutex<BTreeMap<Ipv4Addr, tokio::task::AbortHandle>>,
    /// The ARP socket of the VIP's interface, opened by `prepare` (or the
    /// first claim) and kept: opening one takes milliseconds.
    packet: Mutex<Option<Arc<PacketSocket>>>,
    counters: AtomicCounters,
}

/// VIP control of the host (of the network namespace the calling task runs
/// in). Clones share counters and background announcements.
#[derive(Clone, Debug, Default)]
pub struct TokioVip {
    shared: Arc<Shared>,
}

impl TokioVip {
    pub fn new() -> TokioVip {
        TokioVip::default()
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> VipCounters {
        let c = &self.shared.counters;
        VipCounters {
            claims: c.claims.load(Ordering::Relaxed),
            renewals: c.renewals.load(Ordering::Relaxed),
            releases: c.releases.load(Ordering::Relaxed),
            garp_sent: c.garp_sent.load(Ordering::Relaxed),
            garp_failed: c.garp_failed.load(Ordering::Relaxed),
            probe_answers: c.probe_answers.load(Ordering::Relaxed),
        }
    }

    fn replace_announcer(&self, addr: Ipv4Addr, announcer: Option<tokio::task::AbortHandle>) {
        // A poisoned lock only means another thread panicked mid-insert;
        // the map is still a valid map.
        let mut announcers = self
            .shared
            .announcers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let previous = match announcer {
            Some(handle) => announcers.insert(addr, handle),
            None => announcers.remove(&addr),
        };
        if let Some(previous) = previous {
            previous.abort();
        }
    }

    /// Wait while another host answers ARP for the address (its daemon
    /// died but its kernel has not expired the address yet), at most
    /// `spec.probe_wait`. Skipped when `probe_wait` is zero or the
    /// interface has no Ethernet address.
    async fn probe(&self, spec: &VipSpec, link: &Link) -> Result<(), VipError> {
        let Some(mac) = link.mac.filter(|_| !spec.probe_wait.is_zero()) else {
            return Ok(());
        };
        let probe_error = |source| VipError::Garp {
            interface: spec.interface.clone(),
            source,
        };
        let socket = self
            .packet_socket(&spec.interface, link.index)
            .map_err(probe_error)?;
        let mut rounds: u32 = 0;
        loop {
            let answer = socket
                .probe_round(mac, spec.addr)
                .await
                .map_err(probe_error)?;
            let Some(holder) = answer else {
                return Ok(());
            };
            self.shared
                .counters
                .probe_answers
                .fetch_add(1, Ordering::Relaxed);
            // An answered round ends early: pause one round length before
            // the next, so each counts for at least PROBE_ROUND.
            rounds += 1;
            let waited = crate::vip::PROBE_ROUND * rounds;
            if waited >= spec.probe_wait {
                return Err(VipError::InUse {
                    addr: spec.addr,
                    holder: crate::mac_text(&holder),
                    waited,
                });
            }
            tokio::time::sleep(crate::vip::PROBE_ROUND).await;
        }
    }

    /// The interface's ARP socket, reused while the interface keeps its
    /// index (a re-created interface gets a new socket).
    fn packet_socket(&self, interface: &str, ifindex: u32) -> std::io::Result<Arc<PacketSocket>> {
        let mut slot = self.shared.packet.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(socket) = slot
            .as_ref()
            .filter(|s| s.ifindex == ifindex && s.interface == interface)
        {
            return Ok(Arc::clone(socket));
        }
        let socket = Arc::new(PacketSocket::open(interface, ifindex)?);
        *slot = Some(Arc::clone(&socket));
        Ok(socket)
    }

    /// Send the first announcement now and hand the rest to a task that
    /// replaces (aborts) the one an earlier claim of the same VIP started.
    fn announce(&self, spec: &VipSpec, link: &Link) -> Result<(), VipError> {
        self.replace_announcer(spec.addr, None);
        let garp_error = |source| VipError::Garp {
            interface: spec.interface.clone(),
            source,
        };
        let mac = link.mac.ok_or_else(|| {
            garp_error(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "the interface has no Ethernet (6-byte) hardware address",
            ))
        })?;
        let socket = self
            .packet_socket(&spec.interface, link.index)
            .map_err(garp_error)?;
        let sender = GarpSender::new(socket, mac, spec.addr);
        let counters = &self.shared.counters;
        match sender.send() {
            Ok(()) => counters.garp_sent.fetch_add(1, Ordering::Relaxed),
            Err(err) => {
                counters.garp_failed.fetch_add(1, Ordering::Relaxed);
                return Err(garp_error(err));
            }
        };
        if spec.garp_count <= 1 {
            return Ok(());
        }
        let task = tokio::spawn(repeat_announcements(
            sender,
            spec.garp_count - 1,
            spec.garp_interval,
            self.shared.clone(),
        ));
        self.replace_announcer(spec.addr, Some(task.abort_handle()));
        Ok(())
    }
}

async fn repeat_announcements(
    sender: GarpSender,
    count: u32,
    interval: Duration,
    shared: Arc<Shared>,
) {
    for _ in 0..count {
        tokio::time::sleep(interval).await;
        match sender.send() {
            Ok(()) => shared.counters.garp_sent.fetch_add(1, Ordering::Relaxed),
            Err(err) => {
                tracing::warn!(error = %err, "gratuitous ARP failed");
                shared.counters.garp_failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

impl VipControl for TokioVip {
    async fn prepare(&self, spec: &VipSpec) -> Result<(), VipError> {
        validate(spec)?;
        let netlink = Netlink::open()?;
        let link = netlink.link(&spec.interface).await?;
        self.packet_socket(&spec.interface, link.index)
            .map(|_| ())
            .map_err(|source| VipError::Garp {
                interface: spec.interface.clone(),
                source,
            })
    }

    async fn claim(&self, spec: &VipSpec) -> Result<(), VipError> {
        validate(spec)?;
        let netlink = Netlink::open()?;
        let link = netlink.link(&spec.interface).await?;
        self.probe(spec, &link).await?;
        // Stale sockets on the address from an earlier tenure would answer
        // the clients' segments instead of the RST that makes them
        // reconnect (see `sockdiag`): gone before the address comes back.
        destroy_stale_sockets(spec.addr, "claim");
        netlink.replace_address(spec, link.index, "claim").await?;
        self.shared.counters.claims.fetch_add(1, Ordering::Relaxed);
        if spec.garp_count == 0 {
            // Whatever an earlier claim still had to announce stops too.
            self.replace_announcer(spec.addr, None);
            return Ok(());
        }
        self.announce(spec, &link)
    }

    async fn renew(&self, spec: &VipSpec) -> Result<(), VipError> {
        validate(spec)?;
        let netlink = Netlink::open()?;
        let link = netlink.link(&spec.interface).await?;
        // The kernel re-creates a missing address even without NLM_F_CREATE,
        // so check first: a VIP that expired must be claimed again (with
        // announcements), never silently re-added. The address could still
        // expire between the two requests; then it comes back unannounced,
        // held by a node that is healthy enough to renew.
        if !netlink.has_address(spec, link.index).await? {
            return Err(VipError::Netlink(format!(
                "renew {}/{} on {}: the address is gone (expired or removed), claim it again",
                spec.addr, spec.prefix_len, spec.interface
            )));
        }
        netlink.replace_address(spec, link.index, "renew").await?;
        self.shared
            .counters
            .renewals
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn release(&self, spec: &VipSpec) -> Result<(), VipError> {
        validate(spec)?;
        self.replace_announcer(spec.addr, None);
        let netlink = Netlink::open()?;
        match netlink.link(&spec.interface).await {
            Ok(link) => {
                netlink.delete_address(spec, link.index).await?;
                // The address is gone, so these can send nothing: no FIN
                // reaches a client, and no orphan outlives this tenure.
                destroy_stale_sockets(spec.addr, "release");
            }
            // An interface that is gone holds no address: nothing serves
            // the VIP here, which is all release promises.
            Err(VipError::NoSuchInterface(_)) => {}
            Err(err) => return Err(err),
        }
        self.shared
            .counters
            .releases
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn holds(&self, spec: &VipSpec) -> Result<bool, VipError> {
        validate(spec)?;
        let netlink = Netlink::open()?;
        let link = netlink.link(&spec.interface).await?;
        netlink.has_address(spec, link.index).await
    }
}

/// Destroy the TCP sockets on `addr`; a failure (no CAP_NET_ADMIN, a kernel
/// without SOCK_DESTROY) is logged, never fatal to the VIP operation.
fn destroy_stale_sockets(addr: Ipv4Addr, during: &str) {
    match super::sockdiag::destroy_tcp_sockets(addr) {
        Ok(0) => {}
        Ok(count) => tracing::info!(%addr, count, during, "destroyed TCP sockets left on the VIP"),
        Err(error) => {
            tracing::warn!(%addr, %error, during, "cannot destroy TCP sockets left on the VIP")
        }
    }
}

fn validate(spec: &VipSpec) -> Result<(), VipError> {
    let vip = format!("{}/{} on {:?}", spec.addr, spec.prefix_len, spec.interface);
    let invalid = |why: &str| Err(VipError::Invalid(format!("{vip}: {why}")));
    if spec.interface.is_empty() || spec.interface.len() >= libc::IFNAMSIZ {
        return invalid("interface name must be 1 to 15 bytes");
    }
    if !(1..=32).contains(&spec.prefix_len) {
        return invalid("prefix length must be 1 to 32");
    }
    let addr = spec.addr;
    if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() || addr.is_loopback() {
        return invalid("not a unicast address");
    }
    if spec.lifetime.is_zero() || lifetime_secs(spec.lifetime) == LIFETIME_INFINITE_SECS {
        return invalid("lifetime must be between 1 s and 136 years");
    }
    if spec.garp_count > GARP_COUNT_MAX {
        return invalid(&format!("garp_count above {GARP_COUNT_MAX}"));
    }
    if spec.garp_interval > GARP_INTERVAL_MAX {
        return invalid(&format!("garp_interval above {GARP_INTERVAL_MAX:?}"));
    }
    if spec.probe_wait > PROBE_WAIT_MAX {
        return invalid(&format!("probe_wait above {PROBE_WAIT_MAX:?}"));
    }
    Ok(())
}

/// Whole seconds, rounded up, at least 1 (the kernel counts in seconds;
/// rounding down could expire the address before the caller's deadline).
pub fn lifetime_secs(lifetime: Duration) -> u32 {
    let secs = lifetime.as_secs() + u64::from(lifetime.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(LIFETIME_INFINITE_SECS)
}

/// What the VIP needs to know about its interface.
#[derive(Clone, Copy, Debug)]
struct Link {
    index: u32,
    mac: Option<[u8; 6]>,
}

/// One netlink socket and the task that drives it; dropping it stops both
/// (the connection task would otherwise outlive its last handle).
struct Netlink {
    handle: rtnetlink::Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Netlink {
    fn open() -> Result<Netlink, VipError> {
        let (connection, handle, _unsolicited) = rtnetlink::new_connection()
            .map_err(|err| VipError::Netlink(format!("opening a NETLINK_ROUTE socket: {err}")))?;
        let task = tokio::spawn(connection);
        Ok(Netlink { handle, task })
    }

    async fn link(&self, interface: &str) -> Result<Link, VipError> {
        let request = self
            .handle
            .link()
            .get()
            .match_name(interface.to_owned())
            .execute();
        let first = bounded(&format!("looking up interface {interface}"), async move {
            futures::pin_mut!(request);
            request.try_next().await
        })
        .await?;
        let message = match first {
            Ok(Some(message)) => message,
            Ok(None) => return Err(VipError::NoSuchInterface(interface.to_owned())),
            Err(err) if errno(&err) == Some(libc::ENODEV) => {
                return Err(VipError::NoSuchInterface(interface.to_owned()))
            }
            Err(err) => {
                return Err(VipError::Netlink(format!(
                    "looking up interface {interface}: {err}"
                )))
            }
        };
        let mac = message
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
                _ => None,
            });
        Ok(Link {
            index: message.header.index,
            mac,
        })
    }

    async fn replace_address(
        &self,
        spec: &VipSpec,
        index: u32,
        operation: &str,
    ) -> Result<(), VipError> {
        let lifetime = lifetime_secs(spec.lifetime);
        let mut request = self
            .handle
            .address()
            .add(index, IpAddr::V4(spec.addr), spec.prefix_len)
            .replace();
        let mut cache_info = CacheInfo::default();
        cache_info.ifa_preferred = lifetime;
        cache_info.ifa_valid = lifetime;
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::CacheInfo(cache_info));
        let doing = format!(
            "{operation} {}/{} on {} for {lifetime} s",
            spec.addr, spec.prefix_len, spec.interface
        );
        bounded(&doing, request.execute())
            .await?
            .map_err(|err| VipError::Netlink(format!("{doing}: {err}")))
    }

    async fn delete_address(&self, spec: &VipSpec, index: u32) -> Result<(), VipError> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = spec.prefix_len;
        message.header.index = index;
        message
            .attributes
            .push(AddressAttribute::Local(IpAddr::V4(spec.addr)));
        let doing = format!(
            "release {}/{} on {}",
            spec.addr, spec.prefix_len, spec.interface
        );
        match bounded(&doing, self.handle.address().del(message).execute()).await? {
            Ok(()) => Ok(()),
            // Already gone (released before, or expired): what release wants.
            Err(err) if matches!(errno(&err), Some(libc::EADDRNOTAVAIL | libc::ENOENT)) => Ok(()),
            Err(err) => Err(VipError::Netlink(format!("{doing}: {err}"))),
        }
    }

    async fn has_address(&self, spec: &VipSpec, index: u32) -> Result<bool, VipError> {
        let mut request = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(IpAddr::V4(spec.addr));
        request.message_mut().header.family = AddressFamily::Inet;
        let stream = request.execute();
        let doing = format!("listing addresses of {}", spec.interface);
        let found = bounded(&doing, async move {
            futures::pin_mut!(stream);
            stream.try_next().await
        })
        .await?
        .map_err(|err| VipError::Netlink(format!("{doing}: {err}")))?;
        Ok(found.is_some())
    }
}

/// Run one netlink exchange under [`NETLINK_TIMEOUT`].
async fn bounded<T>(
    doing: &str,
    request: impl std::future::Future<Output = T>,
) -> Result<T, VipError> {
    tokio::time::timeout(NETLINK_TIMEOUT, request)
        .await
        .map_err(|_| VipError::Netlink(format!("{doing}: no answer within {NETLINK_TIMEOUT:?}")))
}

/// The positive errno of a netlink NACK.
fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| -code.get()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_rounds_up_to_whole_seconds() {
        assert_eq!(lifetime_secs(Duration::from_millis(1)), 1);
        assert_eq!(lifetime_secs(Duration::from_secs(3)), 3);
        assert_eq!(lifetime_secs(Duration::from_millis(3001)), 4);
        assert_eq!(lifetime_secs(Duration::from_secs(u64::MAX)), u32::MAX);
    }

    #[test]
    fn invalid_specs_are_refused_before_any_syscall() {
        let good = VipSpec::new(Ipv4Addr::new(10, 0, 0, 10), 24, "eth0");
        assert!(validate(&good).is_ok());
        let cases = [
            VipSpec {
                prefix_len: 33,
                ..good.clone()
            },
            VipSpec {
                prefix_len: 0,
                ..good.clone()
            },
            VipSpec {
                interface: String::new(),
                ..good.clone()
            },
            VipSpec {
                interface: "a-very-long-interface".into(),
                ..good.clone()
            },
            VipSpec {
                addr: Ipv4Addr::BROADCAST,
                ..good.clone()
            },
            VipSpec {
                addr: Ipv4Addr::LOCALHOST,
                ..good.clone()
            },
            VipSpec {
                lifetime: Duration::ZERO,
                ..good.clone()
            },
            VipSpec {
                lifetime: Duration::from_secs(u64::MAX),
                ..good.clone()
            },
            VipSpec {
                garp_count: GARP_COUNT_MAX + 1,
                ..good.clone()
            },
        ];
        for spec in cases {
            assert!(
                matches!(validate(&spec), Err(VipError::Invalid(_))),
                "{spec:?}"
            );
        }
    }
}
