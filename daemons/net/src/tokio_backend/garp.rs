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

/// An AF_PACKET socket bound to one interface, holding the frame to repeat.
#[derive(Debug)]
pub(super) struct GarpSender {
    socket: Socket,
    frame: [u8; GARP_FRAME_LEN],
    interface: String,
}

impl GarpSender {
    pub(super) fn open(
        interface: &str,
        ifindex: u32,
        mac: [u8; 6],
        ip: Ipv4Addr,
    ) -> io::Result<GarpSender> {
        let protocol = Protocol::from(i32::from(ETH_P_ARP.to_be()));
        let socket = Socket::new(Domain::PACKET, Type::RAW, Some(protocol))
            .map_err(|err| context(err, format!("opening an AF_PACKET socket for {interface}")))?;
        socket
            .bind(&link_addr(ifindex)?)
            .map_err(|err| context(err, format!("binding the AF_PACKET socket to {interface}")))?;
        Ok(GarpSender {
            socket,
            frame: garp_frame(mac, ip),
            interface: interface.to_owned(),
        })
    }

    /// Send one announcement. Never blocks: a full queue is an error the
    /// caller counts, and the next announcement may get through.
    pub(super) fn send(&self) -> io::Result<()> {
        let sent = self
            .socket
            .send_with_flags(&self.frame, libc::MSG_DONTWAIT)
            .map_err(|err| context(err, format!("sending gratuitous ARP on {}", self.interface)))?;
        if sent != GARP_FRAME_LEN {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "gratuitous ARP on {}: sent {sent} of {GARP_FRAME_LEN} bytes",
                    self.interface
                ),
            ));
        }
        Ok(())
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
