//! Gratuitous ARP: an ARP request whose sender and target IP are both the
//! VIP, broadcast from the interface's MAC, so every neighbour (and switch)
//! on the segment points the VIP at this host at once instead of waiting for
//! its ARP cache entry for the old owner to go stale.

use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::tcp::context;

/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// An Ethernet header (14 bytes) plus an IPv4-over-Ethernet ARP body (28).
pub const GARP_FRAME_LEN: usize = 42;
const BROADCAST_MAC: [u8; 6] = [0xff; 6];
const ARP_HTYPE_ETHERNET: u16 = 1;
const ARP_PTYPE_IPV4: u16 = 0x0800;
const ARP_OPER_REQUEST: u16 = 1;

/// The frame: ARP request, sender = target = `ip`, sender MAC `mac`, sent
/// to ff:ff:ff:ff:ff:ff. The target MAC is zero (RFC 5227 2.3: ignored).
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; GARP_FRAME_LEN] {
    let mut frame = [0u8; GARP_FRAME_LEN];
    frame[0..6].copy_from_slice(&BROADCAST_MAC);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    frame[14..16].copy_from_slice(&ARP_HTYPE_ETHERNET.to_be_bytes());
    frame[16..18].copy_from_slice(&ARP_PTYPE_IPV4.to_be_bytes());
    frame[18] = 6; // hardware address length
    frame[19] = 4; // protocol address length
    frame[20..22].copy_from_slice(&ARP_OPER_REQUEST.to_be_bytes());
    frame[22..28].copy_from_slice(&mac);
    frame[28..32].copy_from_slice(&ip.octets());
    // 32..38: target MAC, zero
    frame[38..42].copy_from_slice(&ip.octets());
    frame
}

/// An RFC 5227 probe: ARP request for `ip` with sender IP 0.0.0.0, so no
/// neighbour learns anything from it; a host holding `ip` answers it.
pub fn probe_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; GARP_FRAME_LEN] {
    let mut frame = garp_frame(mac, ip);
    frame[28..32].copy_from_slice(&[0; 4]);
    frame
}

/// The sender MAC of an ARP frame (request or reply) whose sender IP is
/// `ip`: evidence that the sender holds `ip`. `None` for anything else,
/// including truncated or non-IPv4 ARP frames.
pub fn claimed_by(frame: &[u8], ip: Ipv4Addr) -> Option<[u8; 6]> {
    if frame.len() < GARP_FRAME_LEN || frame[12..14] != ETH_P_ARP.to_be_bytes() {
        return None;
    }
    let header_ok = frame[14..16] == ARP_HTYPE_ETHERNET.to_be_bytes()
        && frame[16..18] == ARP_PTYPE_IPV4.to_be_bytes()
        && frame[18] == 6
        && frame[19] == 4;
    let op = u16::from_be_bytes([frame[20], frame[21]]);
    if !header_ok || !(op == ARP_OPER_REQUEST || op == ARP_OPER_REPLY) {
        return None;
    }
    if frame[28..32] != ip.octets() {
        return None;
    }
    <[u8; 6]>::try_from(&frame[22..28]).ok()
}

/// An AF_PACKET socket for ARP on one interface, opened once and shared by
/// probes and announcements: opening one costs the kernel a network-wide
/// RCU synchronisation (milliseconds, measured 7 to 19 ms here), which a
/// failover should not pay.
#[derive(Debug)]
pub(super) struct PacketSocket {
    fd: tokio::io::unix::AsyncFd<Socket>,
    pub(super) ifindex: u32,
    pub(super) interface: String,
}

impl PacketSocket {
    /// Open and bind; must run inside a tokio runtime (the socket is
    /// registered with its reactor).
    pub(super) fn open(interface: &str, ifindex: u32) -> io::Result<PacketSocket> {
        let protocol = Protocol::from(i32::from(ETH_P_ARP.to_be()));
        let socket = Socket::new(Domain::PACKET, Type::RAW, Some(protocol))
            .map_err(|err| context(err, format!("opening an AF_PACKET socket for {interface}")))?;
        socket
            .bind(&link_addr(ifindex)?)
            .map_err(|err| context(err, format!("binding the AF_PACKET socket to {interface}")))?;
        socket.set_nonblocking(true)?;
        // SAFETY: a socket2 Socket owns its descriptor and always returns
        // the same one from as_raw_fd; the AsyncFd owns the Socket until
        // dropped.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE)
        }
        .map_err(io::Error::from)?;
        Ok(PacketSocket {
            fd,
            ifindex,
            interface: interface.to_owned(),
        })
    }

    /// Send one frame. Never blocks: a full queue is an error the caller
    /// counts.
    pub(super) fn send(&self, frame: &[u8], what: &str) -> io::Result<()> {
        let sent = self
            .fd
            .get_ref()
            .send_with_flags(frame, libc::MSG_DONTWAIT)
            .map_err(|err| context(err, format!("sending {what} on {}", self.interface)))?;
        if sent != frame.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "{what} on {}: sent {sent} of {} bytes",
                    self.interface,
                    frame.len()
                ),
            ));
        }
        Ok(())
    }

    /// Read every queued frame, calling `seen` on each; stops at the first
    /// `true` (returned) or when the queue is empty. Bounded by the
    /// socket's receive buffer.
    fn drain(
        &self,
        buf: &mut [std::mem::MaybeUninit<u8>],
        mut seen: impl FnMut(&[u8]) -> bool,
    ) -> io::Result<bool> {
        loop {
            match self.fd.get_ref().recv(buf) {
                Ok(len) => {
                    let bytes: Vec<u8> = buf[..len]
                        .iter()
                        // SAFETY: recv initialised the first `len` bytes.
                        .map(|b| unsafe { b.assume_init() })
                        .collect();
                    if seen(&bytes) {
                        return Ok(true);
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) => return Err(err),
            }
        }
    }

    /// Probe for another holder of `ip`: one round of two probes
    /// [`PROBE_GAP`] apart, listening until [`crate::vip::PROBE_ROUND`] has
    /// passed. Returns the MAC of a host that claims `ip`, other than `mac`.
    /// Frames queued before the round are discarded first: only answers to
    /// this round count.
    pub(super) async fn probe_round(
        &self,
        mac: [u8; 6],
        ip: Ipv4Addr,
    ) -> io::Result<Option<[u8; 6]>> {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 128];
        self.drain(&mut buf, |_| false)?;
        let frame = probe_frame(mac, ip);
        self.send(&frame, "an ARP probe")?;
        let round_end = tokio::time::sleep(crate::vip::PROBE_ROUND);
        let second_probe = tokio::time::sleep(PROBE_GAP);
        tokio::pin!(round_end, second_probe);
        let mut second_sent = false;
        let mut holder = None;
        loop {
            tokio::select! {
                () = &mut round_end => return Ok(None),
                () = &mut second_probe, if !second_sent => {
                    second_sent = true;
                    self.send(&frame, "an ARP probe")?;
                }
                ready = self.fd.readable() => {
                    let mut guard = ready?;
                    let found = self.drain(&mut buf, |bytes| {
                        holder = claimed_by(bytes, ip).filter(|sender| *sender != mac);
                        holder.is_some()
                    })?;
                    if found {
                        return Ok(holder);
                    }
                    guard.clear_ready();
                }
            }
        }
    }
}

/// Gap between the two probes of a round.
pub const PROBE_GAP: std::time::Duration = std::time::Duration::from_millis(10);
const ARP_OPER_REPLY: u16 = 2;

/// Announcements of one VIP through a shared [`PacketSocket`].
#[derive(Debug)]
pub(super) struct GarpSender {
    socket: std::sync::Arc<PacketSocket>,
    frame: [u8; GARP_FRAME_LEN],
}

impl GarpSender {
    pub(super) fn new(
        socket: std::sync::Arc<PacketSocket>,
        mac: [u8; 6],
        ip: Ipv4Addr,
    ) -> GarpSender {
        GarpSender {
            socket,
            frame: garp_frame(mac, ip),
        }
    }

    /// Send one announcement.
    pub(super) fn send(&self) -> io::Result<()> {
        self.socket.send(&self.frame, "gratuitous ARP")
    }
}

/// `sockaddr_ll` for binding a packet socket to `ifindex`, ARP only.
fn link_addr(ifindex: u32) -> io::Result<SockAddr> {
    let sll_ifindex = i32::try_from(ifindex).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface index {ifindex} out of range"),
        )
    })?;
    let ll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as libc::c_ushort,
        sll_protocol: ETH_P_ARP.to_be(),
        sll_ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: all-zero bytes are a valid sockaddr_storage (plain integers).
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: sockaddr_storage is at least as large and as aligned as any
    // sockaddr, sockaddr_ll included, so the write stays inside `storage`.
    unsafe {
        std::ptr::write((&raw mut storage).cast::<libc::sockaddr_ll>(), ll);
    }
    let len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `storage` holds an initialised sockaddr_ll of length `len`.
    Ok(unsafe { SockAddr::new(storage, len) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_hides_the_sender_address_and_answers_are_recognised() {
        let mac = [0x02, 0, 0, 0, 0, 0x01];
        let other = [0x02, 0, 0, 0, 0, 0x02];
        let ip = Ipv4Addr::new(10, 9, 8, 7);
        let probe = probe_frame(mac, ip);
        assert_eq!(&probe[28..32], &[0; 4]);
        assert_eq!(&probe[38..42], &ip.octets());
        // Our own probe claims nothing; a GARP or reply from a holder does.
        assert_eq!(claimed_by(&probe, ip), None);
        assert_eq!(claimed_by(&garp_frame(other, ip), ip), Some(other));
        let mut reply = garp_frame(other, ip);
        reply[21] = 2;
        assert_eq!(claimed_by(&reply, ip), Some(other));
        // Another address, a bad opcode, a truncated frame: no claim.
        assert_eq!(
            claimed_by(&garp_frame(other, ip), Ipv4Addr::new(10, 9, 8, 8)),
            None
        );
        reply[21] = 9;
        assert_eq!(claimed_by(&reply, ip), None);
        assert_eq!(claimed_by(&garp_frame(other, ip)[..41], ip), None);
    }

    #[test]
    fn frame_layout_matches_rfc_5227_announcement() {
        let mac = [0x02, 0, 0, 0, 0, 0x01];
        let ip = Ipv4Addr::new(10, 9, 8, 7);
        let frame = garp_frame(mac, ip);
        assert_eq!(&frame[0..6], &[0xff; 6]);
        assert_eq!(&frame[6..12], &mac);
        assert_eq!(&frame[12..14], &[0x08, 0x06]);
        assert_eq!(&frame[14..22], &[0, 1, 0x08, 0, 6, 4, 0, 1]);
        assert_eq!(&frame[22..28], &mac);
        assert_eq!(&frame[28..32], &ip.octets());
        assert_eq!(&frame[32..38], &[0; 6]);
        assert_eq!(&frame[38..42], &ip.octets());
    }
}
