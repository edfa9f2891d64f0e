//! Destroying this host's TCP connections on one local address, through
//! the kernel's socket-diagnostics netlink (`SOCK_DESTROY`, what `ss -K`
//! uses; needs CAP_NET_ADMIN and a kernel with CONFIG_INET_DIAG_DESTROY).
//!
//! Why: a node that gives the VIP up (or whose daemon died) can keep kernel
//! sockets on it — orphans in FIN_WAIT that could not send their FIN once
//! the address was gone. Linux NFS clients reconnect from the same source
//! port, so such an orphan has the very 4-tuple of the client's next
//! connection. If the node claims the VIP again, the orphan comes back to
//! life: it sends its stale FIN, and it, not "no socket", answers the
//! client's segments, so neither the client's retransmissions nor a tickle
//! ACK earn the RST that would make the client reconnect (measured: a
//! 107 s stall, until the orphan gave up). Releasing destroys them while
//! the address is already gone (nothing can be sent), and claiming
//! destroys any left before the address is added.

use std::io;
use std::net::Ipv4Addr;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDR_LEN: usize = 16;
/// `struct inet_diag_sockid`: ports, addresses, interface, cookie.
const SOCKID_LEN: usize = 48;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 4 + 4 + SOCKID_LEN;
/// `struct inet_diag_msg`.
const MSG_LEN: usize = 4 + SOCKID_LEN + 20;
const TCP_LISTEN: u8 = 10;
/// Every TCP state (`TCPF_ALL`).
const ALL_STATES: u32 = 0xfff;
/// Sockets destroyed per call at most (a dump is bounded by the table).
pub const DESTROY_MAX: usize = 65_536;
const RECV_BUF: usize = 64 * 1024;

/// Destroy every TCP socket whose local address is `local`, except
/// listeners. Returns how many were destroyed.
pub fn destroy_tcp_sockets(local: Ipv4Addr) -> io::Result<usize> {
    let netlink = Netlink::open()?;
    let ids = netlink.dump_on(local)?;
    let mut destroyed = 0;
    for id in ids.iter().take(DESTROY_MAX) {
        match netlink.destroy(id) {
            Ok(()) => destroyed += 1,
            // Gone meanwhile (closed, or timed out): what we wanted.
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(destroyed)
}

struct Netlink {
    fd: std::os::fd::OwnedFd,
    seq: std::cell::Cell<u32>,
}

impl Netlink {
    fn open() -> io::Result<Netlink> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket(2); the fd is owned from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new, valid descriptor nobody else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let timeout = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: a valid fd and a timeval of the right size.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::addr_of!(timeout).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(Netlink {
            fd,
            seq: std::cell::Cell::new(1),
        })
    }

    fn send(&self, kind: u16, flags: u16, id: &[u8; SOCKID_LEN]) -> io::Result<u32> {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let mut msg = Vec::with_capacity(NLMSG_HDR_LEN + REQ_LEN);
        msg.extend_from_slice(&((NLMSG_HDR_LEN + REQ_LEN) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&[libc::AF_INET as u8, libc::IPPROTO_TCP as u8, 0, 0]);
        msg.extend_from_slice(&ALL_STATES.to_ne_bytes());
        msg.extend_from_slice(id);
        // SAFETY: a valid fd and a buffer of the given length; the kernel
        // is the destination (a zeroed sockaddr_nl is not needed with send).
        let sent = unsafe {
            libc::send(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                msg.as_ptr().cast(),
                msg.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(seq)
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: a valid fd and a writable buffer of the given length.
        let got = unsafe {
            libc::recv(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(got as usize)
    }

    /// The ids of the non-listening TCP sockets on `local`.
    fn dump_on(&self, local: Ipv4Addr) -> io::Result<Vec<[u8; SOCKID_LEN]>> {
        let seq = self.send(SOCK_DIAG_BY_FAMILY, NLM_F_DUMP, &[0; SOCKID_LEN])?;
        let mut buf = vec![0u8; RECV_BUF];
        let mut ids = Vec::new();
        // Bounded: the kernel ends a dump with NLMSG_DONE; a socket table
        // larger than DESTROY_MAX is cut short.
        loop {
            let len = self.recv(&mut buf)?;
            for (kind, msg_seq, body) in messages(&buf[..len]) {
                if msg_seq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(ids),
                    NLMSG_ERROR => return Err(netlink_error(body)),
                    SOCK_DIAG_BY_FAMILY if body.len() >= MSG_LEN => {
                        let state = body[1];
                        let id = &body[4..4 + SOCKID_LEN];
                        // src: bytes 4..20 of the id, IPv4 in the first four.
                        if state != TCP_LISTEN && id[4..8] == local.octets() {
                            let mut copy = [0u8; SOCKID_LEN];
                            copy.copy_from_slice(id);
                            ids.push(copy);
                        }
                    }
                    _ => {}
                }
            }
            if ids.len() >= DESTROY_MAX {
                return Ok(ids);
            }
        }
    }

    fn destroy(&self, id: &[u8; SOCKID_LEN]) -> io::Result<()> {
        let seq = self.send(SOCK_DESTROY, NLM_F_ACK, id)?;
        let mut buf = vec![0u8; 4096];
        // The answer is one NLMSG_ERROR (0: done); a few tries at most.
        for _ in 0..8 {
            let len = self.recv(&mut buf)?;
            for (kind, msg_seq, body) in messages(&buf[..len]) {
                if msg_seq == seq && kind == NLMSG_ERROR {
                    let error = netlink_error(body);
                    return match error.raw_os_error() {
                        Some(0) => Ok(()),
                        _ => Err(error),
                    };
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no answer to SOCK_DESTROY",
        ))
    }
}

/// The (type, sequence, body) of each netlink message in `buf`.
fn messages(mut buf: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDR_LEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDR_LEN || len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        out.push((kind, seq, &buf[NLMSG_HDR_LEN..len]));
        let aligned = (len + 3) & !3;
        buf = buf.get(aligned..).unwrap_or(&[]);
    }
    out
}

/// The errno of an NLMSG_ERROR body (0 for an acknowledgement).
fn netlink_error(body: &[u8]) -> io::Error {
    let code = body
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(-libc::EPROTO);
    io::Error::from_raw_os_error(-code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_messages_are_split_and_bounded() {
        let mut buf = Vec::new();
        for (kind, seq, body) in [(20u16, 7u32, &[1u8, 2, 3][..]), (3, 7, &[][..])] {
            let len = NLMSG_HDR_LEN + body.len();
            buf.extend_from_slice(&(len as u32).to_ne_bytes());
            buf.extend_from_slice(&kind.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(body);
            buf.resize((buf.len() + 3) & !3, 0);
        }
        let parsed = messages(&buf);
        assert_eq!(parsed, vec![(20, 7, &[1u8, 2, 3][..]), (3, 7, &[][..])]);
        // A length past the buffer or below the header ends the walk.
        let mut bad = buf.clone();
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(messages(&bad).is_empty());
        bad[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(messages(&bad).is_empty());
        assert!(messages(&buf[..10]).is_empty());
    }
}
