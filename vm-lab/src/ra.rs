//! An IPv6 router advertisement with router lifetime 0, sent on the lab's
//! bridge: it tells iPXE that no IPv6 router exists, so iPXE stops waiting
//! (~13 s) for one. The frame is built here (Ethernet + IPv6 + ICMPv6) and
//! sent on an AF_PACKET socket in the switch namespace, so it needs no
//! IPv6 address on the bridge and no daemon.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::LabError;

/// The lab's router MAC (locally administered) and its link-local address.
pub const RA_SOURCE_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xff, 0xff, 0xfe];
/// Unsolicited advertisements every this often: iPXE's wait ends at the
/// first one it sees after opening the NIC.
pub const RA_INTERVAL_MS: u64 = 500;
/// Stops after this many even if nobody stops it (a leaked sender is bounded).
pub const RA_SENDS_MAX: u64 = 7_200;

const ETHERTYPE_IPV6: u16 = 0x86dd;
const ICMPV6: u8 = 58;
const ROUTER_ADVERTISEMENT: u8 = 134;

fn link_local(mac: [u8; 6]) -> [u8; 16] {
    let mut addr = [0u8; 16];
    addr[0] = 0xfe;
    addr[1] = 0x80;
    addr[8] = mac[0] ^ 0x02;
    addr[9] = mac[1];
    addr[10] = mac[2];
    addr[11] = 0xff;
    addr[12] = 0xfe;
    addr[13] = mac[3];
    addr[14] = mac[4];
    addr[15] = mac[5];
    addr
}

/// ICMPv6 checksum (RFC 4443 2.3) over the pseudo-header and `message`.
pub fn icmpv6_checksum(src: &[u8; 16], dst: &[u8; 16], message: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(src);
    add(dst);
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The whole Ethernet frame: RA (RFC 4861 4.2) to all-nodes, router
/// lifetime 0, no M/O flags (no DHCPv6 either), one source link-layer
/// address option.
pub fn router_advertisement(mac: [u8; 6]) -> Vec<u8> {
    let src = link_local(mac);
    let mut dst = [0u8; 16];
    dst[0] = 0xff;
    dst[1] = 0x02;
    dst[15] = 0x01;
    let mut icmp = vec![
        ROUTER_ADVERTISEMENT,
        0, // code
        0,
        0,  // checksum, below
        64, // cur hop limit
        0,  // flags
        0,
        0, // router lifetime 0: not a default router
    ];
    icmp.extend_from_slice(&[0; 8]); // reachable time, retrans timer
    icmp.extend_from_slice(&[1, 1]); // source link-layer address, 8 bytes
    icmp.extend_from_slice(&mac);
    let checksum = icmpv6_checksum(&src, &dst, &icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());

    let mut frame = vec![0x33, 0x33, 0, 0, 0, 1];
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    frame.push(ICMPV6);
    frame.push(255); // hop limit 255, required for ND messages
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&icmp);
    frame
}

pub struct RaSender {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl RaSender {
    /// Enters `netns` on a dedicated thread (setns changes only the calling
    /// thread), opens the socket there and sends until dropped.
    pub fn start(netns: &str, iface: &str) -> Result<RaSender, LabError> {
        let socket = open_in_namespace(netns, iface)?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let frame = router_advertisement(RA_SOURCE_MAC);
        let (stop_flag, counter) = (Arc::clone(&stop), Arc::clone(&sent));
        let thread = std::thread::spawn(move || {
            let (fd, ifindex) = socket;
            for _ in 0..RA_SENDS_MAX {
                if stop_flag.load(Ordering::SeqCst) {
                    break;
                }
                if send_frame(&fd, ifindex, &frame) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(RA_INTERVAL_MS));
            }
        });
        Ok(RaSender {
            stop,
            sent,
            thread: Some(thread),
        })
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for RaSender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A packet socket bound to nothing, created inside `netns`, and the
/// interface index of `iface` there. The socket keeps its namespace after
/// the creating thread exits.
fn open_in_namespace(netns: &str, iface: &str) -> Result<(OwnedFd, i32), LabError> {
    let path = format!("/run/netns/{netns}");
    let iface = iface.to_string();
    let handle = std::thread::spawn(move || -> Result<(OwnedFd, i32), LabError> {
        let ns = std::fs::File::open(&path).map_err(LabError::io(&path))?;
        let sys = |what| {
            move |_| LabError::Sys {
                what,
                source: std::io::Error::last_os_error(),
            }
        };
        // SAFETY: setns on a valid namespace fd; affects only this thread,
        // which exits right after creating the socket.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(sys("setns into the switch namespace")(()));
        }
        let name = std::ffi::CString::new(iface).map_err(|_| LabError::Sys {
            what: "interface name",
            source: std::io::ErrorKind::InvalidInput.into(),
        })?;
        // SAFETY: if_nametoindex reads a NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(sys("if_nametoindex of the bridge")(()));
        }
        // Protocol 0: send-only, receives nothing.
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(sys("AF_PACKET socket")(()));
        }
        // SAFETY: fd is a fresh socket we own.
        Ok((unsafe { OwnedFd::from_raw_fd(fd) }, ifindex as i32))
    });
    handle.join().unwrap_or(Err(LabError::Sys {
        what: "namespace thread panicked",
        source: std::io::ErrorKind::Other.into(),
    }))
}

fn send_frame(fd: &OwnedFd, ifindex: i32, frame: &[u8]) -> bool {
    // SAFETY: sockaddr_ll is plain data; zeroed then filled.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETHERTYPE_IPV6.to_be();
    addr.sll_ifindex = ifindex;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: buffer and address are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    sent == frame.len() as isize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4861_4_2_router_advertisement_layout() {
        let frame = router_advertisement(RA_SOURCE_MAC);
        assert_eq!(frame.len(), 14 + 40 + 24);
        assert_eq!(&frame[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&frame[12..14], &[0x86, 0xdd]);
        let ip = &frame[14..54];
        assert_eq!(ip[6], ICMPV6);
        assert_eq!(ip[7], 255, "ND messages need hop limit 255");
        assert_eq!(&ip[8..10], &[0xfe, 0x80]);
        let icmp = &frame[54..];
        assert_eq!(icmp[0], ROUTER_ADVERTISEMENT);
        assert_eq!(&icmp[6..8], &[0, 0], "router lifetime must be 0");
        assert_eq!(&icmp[18..24], &RA_SOURCE_MAC);
        // A correct checksum makes the sum over everything come out as 0.
        let src: [u8; 16] = ip[8..24].try_into().unwrap();
        let dst: [u8; 16] = ip[24..40].try_into().unwrap();
        assert_eq!(icmpv6_checksum(&src, &dst, icmp), 0);
    }

    #[test]
    fn link_local_is_eui64() {
        let addr = link_local([0x52, 0x54, 0, 0xff, 0xff, 0xfe]);
        let text = std::net::Ipv6Addr::from(addr).to_string();
        assert_eq!(text, "fe80::5054:ff:feff:fffe");
    }
}
