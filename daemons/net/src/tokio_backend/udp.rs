//! UDP on tokio with the options our services need: IP_PKTINFO so a reply
//! can leave from the address the request was sent to (the VIP, not the
//! host's own address), IP_FREEBIND so a socket bound before the VIP
//! arrives keeps working, SO_BROADCAST and SO_BINDTODEVICE for DHCP.
//!
//! IPv4 only: every ironroot UDP service (DHCPv4, TFTP and NFS/UDP on an
//! IPv4 VIP) speaks IPv4, and a clear error beats a half-done IPv6 path.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    self as nixsock, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;

use super::tcp::context;
use crate::{RecvMeta, UdpBind};

/// A bound UDP socket (see the module docs for its options).
#[derive(Debug)]
pub struct TokioUdpSocket {
    inner: tokio::net::UdpSocket,
    /// What `recv_from` reports if a datagram ever lacks IP_PKTINFO.
    bound_ip: IpAddr,
}

impl TokioUdpSocket {
    /// Create, configure and bind a socket. Needs a tokio runtime.
    pub fn bind(bind: &UdpBind) -> io::Result<TokioUdpSocket> {
        let addr = match bind.addr {
            SocketAddr::V4(addr) => addr,
            SocketAddr::V6(addr) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("binding UDP {addr}: only IPv4 UDP is supported"),
                ))
            }
        };
        let socket = configured_socket(bind, addr)?;
        socket
            .bind(&SocketAddr::V4(addr).into())
            .map_err(|err| context(err, format!("binding UDP {addr}")))?;
        let inner = tokio::net::UdpSocket::from_std(socket.into())
            .map_err(|err| context(err, format!("registering UDP {addr} with tokio")))?;
        Ok(TokioUdpSocket {
            inner,
            bound_ip: IpAddr::V4(*addr.ip()),
        })
    }

    /// The tokio socket, for what the seam does not cover.
    pub fn get_ref(&self) -> &tokio::net::UdpSocket {
        &self.inner
    }
}

fn configured_socket(bind: &UdpBind, addr: SocketAddrV4) -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|err| context(err, format!("creating a UDP socket for {addr}")))?;
    socket
        .set_reuse_address(true)
        .map_err(|err| context(err, format!("SO_REUSEADDR on UDP {addr}")))?;
    socket
        .set_freebind(true)
        .map_err(|err| context(err, format!("IP_FREEBIND on UDP {addr}")))?;
    nixsock::setsockopt(&socket, nixsock::sockopt::Ipv4PacketInfo, &true)
        .map_err(|errno| context(errno.into(), format!("IP_PKTINFO on UDP {addr}")))?;
    if bind.broadcast {
        socket
            .set_broadcast(true)
            .map_err(|err| context(err, format!("SO_BROADCAST on UDP {addr}")))?;
    }
    if let Some(device) = &bind.device {
        socket
            .bind_device(Some(device.as_bytes()))
            .map_err(|err| context(err, format!("SO_BINDTODEVICE {device} on UDP {addr}")))?;
    }
    socket
        .set_nonblocking(true)
        .map_err(|err| context(err, format!("O_NONBLOCK on UDP {addr}")))?;
    Ok(socket)
}

impl crate::UdpSocket for TokioUdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        self.inner
            .async_io(Interest::READABLE, || {
                recv_with_pktinfo(&self.inner, buf, self.bound_ip)
            })
            .await
    }

    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.inner
            .send_to(buf, to)
            .await
            .map_err(|err| context(err, format!("sending UDP to {to}")))
    }

    async fn send_from(&self, buf: &[u8], to: SocketAddr, from: IpAddr) -> io::Result<usize> {
        let (to, from) = match (to, from) {
            (SocketAddr::V4(to), IpAddr::V4(from)) => (to, from),
            (to, from) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("sending UDP to {to} from {from}: only IPv4 is supported"),
                ))
            }
        };
        self.inner
            .async_io(Interest::WRITABLE, || {
                send_with_pktinfo(&self.inner, buf, to, from)
            })
            .await
            .map_err(|err| context(err, format!("sending UDP to {to} from {from}")))
    }

    // Straight to recvmsg, past tokio's readiness flag: that flag was
    // cleared by the last EAGAIN and only the reactor would set it again.
    fn recv_from_busy(&self, buf: &mut [u8], tries: u32) -> io::Result<Option<RecvMeta>> {
        for attempt in 0..tries {
            match recv_with_pktinfo(&self.inner, buf, self.bound_ip) {
                Ok(meta) => return Ok(Some(meta)),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
            if attempt + 1 < tries {
                std::thread::yield_now();
            }
        }
        Ok(None)
    }

    fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.inner.set_broadcast(on)
    }

    fn set_recv_buffer_bytes(&self, bytes: usize) -> io::Result<usize> {
        let socket = socket2::SockRef::from(&self.inner);
        socket.set_recv_buffer_size(bytes)?;
        socket.recv_buffer_size()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One non-blocking recvmsg; `WouldBlock` sends tokio back to waiting.
fn recv_with_pktinfo(
    socket: &tokio::net::UdpSocket,
    buf: &mut [u8],
    fallback_local: IpAddr,
) -> io::Result<RecvMeta> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg_buffer = nix::cmsg_space!(libc::in_pktinfo);
    let msg = nixsock::recvmsg::<SockaddrIn>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg_buffer),
        MsgFlags::MSG_DONTWAIT,
    )?;
    let peer = match msg.address {
        Some(addr) => SocketAddr::V4(SocketAddrV4::from(addr)),
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "recvmsg on a UDP socket returned no source address",
            ))
        }
    };
    // The kernel always attaches IP_PKTINFO once the option is on; should a
    // control message ever be cut short, the bound address is the best
    // answer left, and never a reason to drop the datagram.
    let mut local = fallback_local;
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            if let ControlMessageOwned::Ipv4PacketInfo(info) = cmsg {
                local = IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
            }
        }
    }
    Ok(RecvMeta {
        len: msg.bytes,
        peer,
        local,
    })
}

/// One non-blocking sendmsg whose IP_PKTINFO picks the source address.
fn send_with_pktinfo(
    socket: &tokio::net::UdpSocket,
    buf: &[u8],
    to: SocketAddrV4,
    from: Ipv4Addr,
) -> io::Result<usize> {
    let info = libc::in_pktinfo {
        // 0: let routing pick the interface; only the source is forced.
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(from).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let iov = [IoSlice::new(buf)];
    let cmsgs = [ControlMessage::Ipv4PacketInfo(&info)];
    let to = SockaddrIn::from(to);
    let sent = nixsock::sendmsg(
        socket.as_raw_fd(),
        &iov,
        &cmsgs,
        MsgFlags::MSG_DONTWAIT,
        Some(&to),
    )?;
    Ok(sent)
}
