//! The async driver: moves datagrams between the seam's sockets and the
//! sans-IO [`Server`] and [`Transfer`] machines. The listener answers
//! requests on the TFTP port; every transfer runs on its own ephemeral
//! socket (a new TID, RFC 1350 §4) and every reply leaves from the address
//! the client sent its request to (the VIP).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ironroot_net::{RecvMeta, Runtime, UdpBind, UdpSocket};
use tokio::task::JoinSet;

use crate::server::{unknown_tid_reply, Decision, Server, Ticket};
use crate::source::FileSource;
use crate::transfer::Transfer;
use crate::wire::{ErrorCode, PACKET_LEN_MAX};

/// Consecutive receive errors after which the listener gives up.
pub const RECV_ERRORS_MAX: u32 = 100;
/// Receive buffer of a transfer socket: ACKs and ERRORs are small; a longer
/// datagram is cut, which the decoder handles.
const TRANSFER_RECV_LEN_MAX: usize = 1024;

/// Bind the request listener at the configured address.
pub async fn bind<R: Runtime, S: FileSource>(rt: &R, server: &Server<S>) -> io::Result<R::Udp> {
    rt.bind_udp(UdpBind {
        addr: server.config().listen,
        broadcast: false,
        device: None,
    })
    .await
}

/// Serve requests arriving on `listener` until an unrecoverable socket
/// error. Transfers run as tasks owned by this future: dropping it (or
/// aborting its task) stops them all.
pub async fn run<R: Runtime, S: FileSource>(
    rt: R,
    server: Arc<Server<S>>,
    listener: R::Udp,
) -> io::Result<()> {
    let mut transfers = JoinSet::new();
    // One byte over the largest packet, so an oversized datagram is seen
    // as such rather than silently cut to a valid length.
    let mut buf = vec![0u8; PACKET_LEN_MAX + 1];
    let mut recv_errors = 0u32;
    loop {
        let received = tokio::select! {
            biased;
            Some(_) = transfers.join_next(), if !transfers.is_empty() => continue,
            received = listener.recv_from(&mut buf) => received,
        };
        let meta = match received {
            Ok(meta) => {
                recv_errors = 0;
                meta
            }
            Err(err) => {
                recv_errors += 1;
                tracing::warn!(error = %err, "tftp listener receive failed");
                if recv_errors >= RECV_ERRORS_MAX {
                    return Err(err);
                }
                continue;
            }
        };
        let datagram = buf.get(..meta.len).unwrap_or_default();
        match server.handle_request(rt.now(), meta.peer, datagram) {
            Decision::Start { transfer, ticket } => {
                let task = run_transfer(rt.clone(), server.clone(), transfer, ticket, meta);
                transfers.spawn(task);
            }
            Decision::Refuse { reply } => {
                if send(&listener, &reply, meta.peer, meta.local)
                    .await
                    .is_err()
                {
                    bump_send_error(&server);
                }
            }
            Decision::Drop => {}
        }
    }
}

fn bump_send_error<S: FileSource>(server: &Server<S>) {
    server
        .counters()
        .send_errors
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

fn usable_source(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => !(ip.is_broadcast() || ip.is_multicast() || ip.is_unspecified()),
        IpAddr::V6(ip) => !(ip.is_multicast() || ip.is_unspecified()),
    }
}

/// Send from the address the client used, unless that was a broadcast or
/// multicast address, which cannot be a source.
async fn send<U: UdpSocket>(
    socket: &U,
    buf: &[u8],
    to: SocketAddr,
    from: IpAddr,
) -> io::Result<usize> {
    if usable_source(from) {
        socket.send_from(buf, to, from).await
    } else {
        socket.send_to(buf, to).await
    }
}

async fn run_transfer<R: Runtime, S: FileSource>(
    rt: R,
    server: Arc<Server<S>>,
    mut transfer: Box<Transfer>,
    ticket: Ticket,
    request: RecvMeta,
) {
    // Bound to the address the client used, so nothing else reaches the
    // transfer's TID; IP_FREEBIND keeps this valid while the VIP moves.
    let bind = if usable_source(request.local) {
        UdpBind {
            addr: SocketAddr::new(request.local, 0),
            broadcast: false,
            device: None,
        }
    } else {
        UdpBind::any(0)
    };
    match rt.bind_udp(bind).await {
        Ok(socket) => drive(&rt, &server, &mut transfer, &socket, request).await,
        Err(err) => {
            tracing::warn!(error = %err, "binding a tftp transfer socket failed");
            transfer.abort(ErrorCode::NotDefined, "server error");
        }
    }
    server.note_rtt(request.peer.ip(), &transfer);
    server.record_outcome(transfer.outcome(), transfer.stats());
    drop(ticket);
}

async fn drive<R: Runtime, S: FileSource>(
    rt: &R,
    server: &Server<S>,
    transfer: &mut Transfer,
    socket: &R::Udp,
    request: RecvMeta,
) {
    let client = request.peer;
    // The socket is bound to the address the client used, so a plain send
    // leaves from it; only a wildcard-bound socket needs IP_PKTINFO.
    let from = (!usable_source(request.local)).then_some(request.local);
    let mut out = Vec::with_capacity(PACKET_LEN_MAX);
    let mut buf = vec![0u8; TRANSFER_RECV_LEN_MAX];
    let mut recv_errors = 0u32;
    let mut busy = BusyPoll::new(server.config().busy_poll_tries);
    loop {
        while transfer.poll_transmit(&mut out) {
            if send_reply(socket, &out, client, from).await.is_err() {
                bump_send_error(server);
            }
        }
        let Some(deadline) = transfer.poll_timeout() else {
            return;
        };
        let received = match busy.poll(socket, &mut buf, || server.active() <= BUSY_TRANSFERS_MAX) {
            Some(received) => received,
            None => tokio::select! {
                biased;
                received = socket.recv_from(&mut buf) => received,
                () = rt.sleep_until(deadline) => {
                    transfer.handle_timeout(rt.now());
                    continue;
                }
            },
        };
        match received {
            Ok(meta) if meta.peer == client => {
                recv_errors = 0;
                let datagram = buf.get(..meta.len).unwrap_or_default();
                transfer.handle_datagram(rt.now(), datagram);
            }
            Ok(meta) => {
                server
                    .counters()
                    .unknown_tid
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                unknown_tid_reply(&mut out);
                if send(socket, &out, meta.peer, request.local).await.is_err() {
                    bump_send_error(server);
                }
            }
            // A receive error on a transfer socket (an ICMP error reported
            // late) is not the client's answer: wait on, but not forever.
            Err(err) => {
                recv_errors += 1;
                if recv_errors >= RECV_ERRORS_MAX {
                    tracing::warn!(error = %err, "tftp transfer socket keeps failing");
                    transfer.abort(ErrorCode::NotDefined, "server error");
                }
            }
        }
    }
}

async fn send_reply<U: UdpSocket>(
    socket: &U,
    buf: &[u8],
    to: SocketAddr,
    from: Option<IpAddr>,
) -> io::Result<usize> {
    match from {
        Some(from) => send(socket, buf, to, from).await,
        None => socket.send_to(buf, to).await,
    }
}

/// Transfers running at most for one to busy-poll: with more, the runtime
/// has other sockets to serve, and a spinning transfer would hold them up.
const BUSY_TRANSFERS_MAX: usize = 1;
/// Misses in a row after which a transfer stops busy-polling for a while.
const BUSY_MISSES_MAX: u32 = 4;
/// Waits a transfer sleeps through without polling after too many misses.
const BUSY_BACKOFF_WAITS: u32 = 64;

/// When to busy-poll for the next ACK: only for a lone transfer (see
/// [`BUSY_TRANSFERS_MAX`]), and then always while polls catch it; after
/// [`BUSY_MISSES_MAX`] misses in a row (a slow or distant client) only
/// once every [`BUSY_BACKOFF_WAITS`] waits, to notice it getting closer.
struct BusyPoll {
    tries: u32,
    misses: u32,
    skip: u32,
}

impl BusyPoll {
    fn new(tries: u32) -> BusyPoll {
        BusyPoll {
            tries,
            misses: 0,
            skip: 0,
        }
    }

    /// A datagram (or receive error) caught by polling, or `None`: sleep.
    fn poll<U: UdpSocket>(
        &mut self,
        socket: &U,
        buf: &mut [u8],
        alone: impl FnOnce() -> bool,
    ) -> Option<io::Result<RecvMeta>> {
        if self.tries == 0 {
            return None;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        if !alone() {
            return None;
        }
        match socket.recv_from_busy(buf, self.tries) {
            Ok(Some(meta)) => {
                self.misses = 0;
                Some(Ok(meta))
            }
            Ok(None) => {
                self.misses += 1;
                if self.misses >= BUSY_MISSES_MAX {
                    self.misses = 0;
                    self.skip = BUSY_BACKOFF_WAITS;
                }
                None
            }
            Err(err) => Some(Err(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A socket whose busy polls catch a datagram or not, as scripted.
    struct Scripted {
        catch: fn(u32) -> bool,
        polls: AtomicU32,
    }

    fn meta() -> RecvMeta {
        RecvMeta {
            len: 4,
            peer: SocketAddr::from((Ipv4Addr::LOCALHOST, 1000)),
            local: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    impl UdpSocket for Scripted {
        async fn recv_from(&self, _buf: &mut [u8]) -> io::Result<RecvMeta> {
            Err(io::ErrorKind::Unsupported.into())
        }
        async fn send_to(&self, _buf: &[u8], _to: SocketAddr) -> io::Result<usize> {
            Err(io::ErrorKind::Unsupported.into())
        }
        async fn send_from(
            &self,
            _buf: &[u8],
            _to: SocketAddr,
            _from: IpAddr,
        ) -> io::Result<usize> {
            Err(io::ErrorKind::Unsupported.into())
        }
        fn recv_from_busy(&self, _buf: &mut [u8], _tries: u32) -> io::Result<Option<RecvMeta>> {
            let poll = self.polls.fetch_add(1, Ordering::Relaxed);
            Ok((self.catch)(poll).then(meta))
        }
        fn set_broadcast(&self, _on: bool) -> io::Result<()> {
            Ok(())
        }
        fn local_addr(&self) -> io::Result<SocketAddr> {
            Ok(meta().peer)
        }
    }

    /// Which of `waits` waits were answered by a busy poll.
    fn caught(busy: &mut BusyPoll, socket: &Scripted, waits: u32, alone: bool) -> Vec<bool> {
        let mut buf = [0u8; 16];
        (0..waits)
            .map(|_| busy.poll(socket, &mut buf, || alone).is_some())
            .collect()
    }

    #[test]
    fn busy_poll_keeps_polling_while_it_catches() {
        let socket = Scripted {
            catch: |_| true,
            polls: AtomicU32::new(0),
        };
        let mut busy = BusyPoll::new(10);
        assert!(caught(&mut busy, &socket, 100, true).iter().all(|hit| *hit));
        assert_eq!(socket.polls.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn busy_poll_backs_off_after_misses_and_probes_again() {
        let socket = Scripted {
            catch: |_| false,
            polls: AtomicU32::new(0),
        };
        let mut busy = BusyPoll::new(10);
        let waits = BUSY_MISSES_MAX + BUSY_BACKOFF_WAITS + 1;
        assert!(caught(&mut busy, &socket, waits, true)
            .iter()
            .all(|hit| !*hit));
        // The misses, then silence, then one probe.
        assert_eq!(socket.polls.load(Ordering::Relaxed), BUSY_MISSES_MAX + 1);
    }

    #[test]
    fn busy_poll_is_off_with_zero_tries_or_other_transfers() {
        let socket = Scripted {
            catch: |_| true,
            polls: AtomicU32::new(0),
        };
        assert!(caught(&mut BusyPoll::new(0), &socket, 5, true)
            .iter()
            .all(|hit| !*hit));
        assert!(caught(&mut BusyPoll::new(10), &socket, 5, false)
            .iter()
            .all(|hit| !*hit));
        assert_eq!(socket.polls.load(Ordering::Relaxed), 0);
    }
}
