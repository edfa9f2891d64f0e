//! Tickle ACKs: make a client reset a TCP connection whose server end died
//! with another host, right after this host took the server's address over.
//!
//! The segment is an ACK with sequence and acknowledgement 0, from the
//! server's address and port to the client's. It is outside the client's
//! window, so the client answers with a duplicate ACK carrying its real
//! sequence numbers (RFC 793 §3.9; Linux rate-limits these to one per
//! `tcp_invalid_ratelimit`, 500 ms, per connection). That ACK reaches this
//! host, which has no such connection, so its kernel answers with an RST
//! whose sequence number is the client's acknowledgement number: exactly
//! what the client expects next, so it accepts the reset (RFC 5961 §3.2)
//! and reconnects at once instead of waiting for its next retransmission.
//! CTDB resets connections after an IP takeover the same way.
//!
//! Sending needs a raw socket (CAP_NET_RAW); the address must be local (the
//! socket is bound to it, so the kernel fills in the IP header with it).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use socket2::{Domain, Protocol, Socket, Type};

use super::tcp::context;

const TCP_HEADER_LEN: usize = 20;
const FLAG_ACK: u8 = 0x10;
/// Advertised window of the tickle (any non-zero value; the client
/// discards the segment either way).
const WINDOW: u16 = 1024;

/// The TCP header (no options, no payload) of a tickle from `server` to
/// `client`, checksum included.
pub fn tickle_segment(server: SocketAddrV4, client: SocketAddrV4) -> [u8; TCP_HEADER_LEN] {
    let mut segment = [0u8; TCP_HEADER_LEN];
    segment[0..2].copy_from_slice(&server.port().to_be_bytes());
    segment[2..4].copy_from_slice(&client.port().to_be_bytes());
    // Sequence and acknowledgement numbers stay 0.
    segment[12] = (TCP_HEADER_LEN as u8 / 4) << 4;
    segment[13] = FLAG_ACK;
    segment[14..16].copy_from_slice(&WINDOW.to_be_bytes());
    let checksum = tcp_checksum(*server.ip(), *client.ip(), &segment);
    segment[16..18].copy_from_slice(&checksum.to_be_bytes());
    segment
}

/// The Internet checksum of `segment` with the IPv4 pseudo-header; a
/// segment whose checksum field is right sums to 0.
pub fn tcp_checksum(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = match pair {
                [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                [hi] => u16::from_be_bytes([*hi, 0]),
                _ => 0,
            };
            sum += u32::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&[0, 6]);
    // Tickles and the tests' segments are far below 64 KiB.
    add(&(segment.len() as u16).to_be_bytes());
    add(segment);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A raw socket sending tickles from one local address.
pub struct TickleSender {
    socket: Socket,
    local: Ipv4Addr,
}

impl TickleSender {
    /// Open a raw TCP socket bound to `local` (which must be an address of
    /// this host, e.g. the VIP just claimed).
    pub fn open(local: Ipv4Addr) -> io::Result<TickleSender> {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP))
            .map_err(|err| context(err, "opening a raw TCP socket for tickle ACKs".into()))?;
        socket
            .bind(&SocketAddr::from((local, 0)).into())
            .map_err(|err| context(err, format!("binding the tickle socket to {local}")))?;
        Ok(TickleSender { socket, local })
    }

    /// Send one tickle for the connection between `server` (on the bound
    /// address) and `client`.
    pub fn send(&self, server: SocketAddrV4, client: SocketAddrV4) -> io::Result<()> {
        if *server.ip() != self.local {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "tickle from {server}: the socket is bound to {}",
                    self.local
                ),
            ));
        }
        let segment = tickle_segment(server, client);
        let to = SocketAddr::from((*client.ip(), 0));
        self.socket
            .send_to(&segment, &to.into())
            .map_err(|err| context(err, format!("tickle ACK to {client}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tickle_is_an_ack_from_the_server_port_with_a_valid_checksum() {
        let server = SocketAddrV4::new([192, 168, 50, 10].into(), 2049);
        let client = SocketAddrV4::new([192, 168, 50, 101].into(), 791);
        let segment = tickle_segment(server, client);
        assert_eq!(u16::from_be_bytes([segment[0], segment[1]]), 2049);
        assert_eq!(u16::from_be_bytes([segment[2], segment[3]]), 791);
        assert_eq!(segment[4..12], [0; 8], "seq and ack are 0");
        assert_eq!(segment[12], 5 << 4, "20-byte header");
        assert_eq!(segment[13], FLAG_ACK);
        assert_eq!(tcp_checksum(*server.ip(), *client.ip(), &segment), 0);
        // The checksum covers the pseudo-header: another address breaks it.
        assert_ne!(
            tcp_checksum([192, 168, 50, 11].into(), *client.ip(), &segment),
            0
        );
    }
}
