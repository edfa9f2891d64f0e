//! The async driver: moves datagrams between the seam's sockets and
//! [`DhcpServer`], lease writes between the server and a [`LeaseLog`], and
//! wakes the server for expiries. It holds no protocol logic.
//!
//! Group commit: one lease write is in flight at a time; the server says
//! when the records gathered meanwhile make the next (a full batch, or the
//! end of its gather window, which `poll_timeout` includes).
//!
//! Receive coalescing: after a datagram wakes the loop, the main socket is
//! left alone for `limits.receive_coalesce_ms`, then everything queued is
//! taken at once (up to [`RECEIVE_BATCH_MAX`]); a pause that finds nothing
//! ends it. Replies to the first datagram go out at once.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, UNIX_EPOCH};

use ironroot_net::{Runtime, UdpBind, UdpSocket};

use crate::leases::{LeaseLog, LeaseLogError, LeaseWriteId};
use crate::registry::Registry;
use crate::reply::{Outgoing, PXE_PORT, SERVER_PORT};
use crate::server::{DhcpServer, Incoming};

/// Where the driver listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverOptions {
    /// Normally `0.0.0.0:67`.
    pub bind: SocketAddr,
    /// proxyDHCP's second socket, normally `0.0.0.0:4011`.
    pub pxe_bind: Option<SocketAddr>,
    /// SO_BINDTODEVICE: the boot segment's interface.
    pub device: Option<String>,
    /// Spend the receive pause (`limits.receive_coalesce_ms`) blocked in
    /// the thread instead of in the runtime. A runtime sleeps in epoll,
    /// which every arriving datagram wakes (the socket stays registered),
    /// so only a blocked thread saves the wakeups. Set it only when the
    /// loop has a thread and runtime to itself (ironrootd); never in the
    /// simulator, whose time is virtual.
    pub receive_pause_blocks_thread: bool,
}

impl DriverOptions {
    /// Port 67 on every address; 4011 too in proxyDHCP mode.
    pub fn standard(proxy: bool, device: Option<String>) -> DriverOptions {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        DriverOptions {
            bind: SocketAddr::new(any, SERVER_PORT),
            pxe_bind: proxy.then_some(SocketAddr::new(any, PXE_PORT)),
            device,
            receive_pause_blocks_thread: false,
        }
    }
}

/// Most datagrams taken from the socket after one receive pause; the rest
/// wait for the next pause (the loop must get to writes and timers).
pub const RECEIVE_BATCH_MAX: usize = 256;

type WriteFuture = Pin<Box<dyn Future<Output = (LeaseWriteId, Result<(), LeaseLogError>)> + Send>>;

/// Serve until `shutdown` resolves; returns the server (counters, leases).
pub async fn serve<R, G, L>(
    runtime: R,
    mut server: DhcpServer<G>,
    log: Arc<L>,
    options: DriverOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<DhcpServer<G>>
where
    R: Runtime,
    G: Registry + Send,
    L: LeaseLog,
{
    let bind = |addr: SocketAddr| UdpBind {
        addr,
        broadcast: true,
        device: options.device.clone(),
    };
    let socket = runtime.bind_udp(bind(options.bind)).await?;
    let receive_buffer_bytes = server.config().limits.receive_buffer_bytes;
    if receive_buffer_bytes > 0 {
        match socket.set_recv_buffer_bytes(receive_buffer_bytes) {
            Ok(got) => tracing::debug!(asked = receive_buffer_bytes, got, "DHCP receive buffer"),
            Err(error) => tracing::warn!(%error, "DHCP receive buffer not resized"),
        }
    }
    let pxe_socket = match options.pxe_bind {
        Some(addr) => Some(runtime.bind_udp(bind(addr)).await?),
        None => None,
    };
    start(&runtime, &mut server, log.as_ref());

    let datagram_bytes_max = server.config().limits.datagram_bytes_max;
    // One spare byte: a datagram that fills it is too long, and the decoder
    // counts it instead of seeing a silently truncated copy.
    let mut buf = vec![0u8; datagram_bytes_max + 1];
    let mut pxe_buf = vec![0u8; datagram_bytes_max + 1];
    let mut write: Option<WriteFuture> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    // One timer, rebuilt only when the deadline moves (a gather window or
    // the purge interval), not for every datagram.
    let mut timer_deadline = server.poll_timeout();
    let mut timer = Box::pin(sleep_optional(&runtime, timer_deadline));
    let coalesce = Duration::from_millis(server.config().limits.receive_coalesce_ms);
    // While set, the main socket is not polled until then (see the module
    // docs).
    let mut receive_paused_until: Option<ironroot_net::Instant> = None;
    loop {
        while let Some(outgoing) = server.poll_transmit() {
            if send(&socket, &outgoing).await {
                server.note_sent();
            } else {
                server.note_send_failed();
            }
        }
        if write.is_none() {
            write = next_write(&mut server, &log, runtime.now());
        }
        let deadline = server.poll_timeout();
        if deadline != timer_deadline {
            timer_deadline = deadline;
            timer = Box::pin(sleep_optional(&runtime, deadline));
        }
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(server),
            (id, result) = async { write.as_mut().expect("guarded by the branch condition").await }, if write.is_some() => {
                write = None;
                match result {
                    Ok(()) => server.handle_lease_durable(runtime.now(), id),
                    Err(error) => {
                        tracing::warn!(%error, "lease write failed");
                        server.handle_lease_failed(id);
                    }
                }
            }
            received = socket.recv_from(&mut buf), if receive_paused_until.is_none() => {
                handle_received(&runtime, &mut server, received, &buf, options.bind.port());
                if !coalesce.is_zero() {
                    receive_paused_until = Some(runtime.now() + coalesce);
                }
            }
            () = pause(&runtime, receive_paused_until, options.receive_pause_blocks_thread), if receive_paused_until.is_some() => {
                let port = options.bind.port();
                let taken = drain_queued(&runtime, &mut server, &socket, &mut buf, port);
                receive_paused_until = (taken > 0).then(|| runtime.now() + coalesce);
            }
            received = recv_optional(pxe_socket.as_ref(), &mut pxe_buf), if pxe_socket.is_some() => {
                handle_received(&runtime, &mut server, received, &pxe_buf, PXE_PORT);
            }
            () = &mut timer, if deadline.is_some() => {
                // A finished timer must not be polled again: rebuild it.
                timer_deadline = None;
                sync_wall_clock(&runtime, &mut server);
                server.handle_timeout(runtime.now());
            }
        }
    }
}

/// Give the server the wall clock and the journal's leases.
fn start<R: Runtime, G: Registry, L: LeaseLog>(runtime: &R, server: &mut DhcpServer<G>, log: &L) {
    sync_wall_clock(runtime, server);
    server.restore(runtime.now(), &log.records());
}

/// Journal records carry wall-clock times; keep the server's view of the
/// wall clock fresh (it may be stepped by NTP).
fn sync_wall_clock<R: Runtime, G: Registry>(runtime: &R, server: &mut DhcpServer<G>) {
    let unix_secs = runtime
        .wall_clock()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    server.set_wall_clock(runtime.now(), unix_secs);
}

/// The server's next batch, if one is due at `now`, as a write to the log.
/// The driver keeps one write in flight, so every record gathered meanwhile
/// joins the next.
fn next_write<G: Registry, L: LeaseLog>(
    server: &mut DhcpServer<G>,
    log: &Arc<L>,
    now: ironroot_net::Instant,
) -> Option<WriteFuture> {
    let batch = server.poll_lease_write(now)?;
    let log = Arc::clone(log);
    let id = batch.id;
    Some(Box::pin(async move { (id, log.append(batch).await) }))
}

fn handle_received<R: Runtime, G: Registry>(
    runtime: &R,
    server: &mut DhcpServer<G>,
    received: io::Result<ironroot_net::RecvMeta>,
    buf: &[u8],
    local_port: u16,
) {
    match received {
        Ok(meta) => {
            let bytes = buf.get(..meta.len).unwrap_or(buf);
            server.handle_datagram(
                runtime.now(),
                Incoming {
                    bytes,
                    peer: meta.peer,
                    local_ip: meta.local,
                    local_port,
                },
            );
        }
        // ICMP errors surface here on Linux; the socket stays usable.
        Err(error) => tracing::debug!(%error, "receive failed"),
    }
}

/// Hand the server every datagram already queued on `socket` (at most
/// [`RECEIVE_BATCH_MAX`]) without waiting; returns how many.
fn drain_queued<R: Runtime, G: Registry, U: UdpSocket>(
    runtime: &R,
    server: &mut DhcpServer<G>,
    socket: &U,
    buf: &mut [u8],
    local_port: u16,
) -> usize {
    let mut taken = 0;
    while taken < RECEIVE_BATCH_MAX {
        let Some(received) = recv_now(socket, buf) else {
            break;
        };
        taken += 1;
        handle_received(runtime, server, received, buf, local_port);
    }
    taken
}

/// A datagram if one is queued, without waiting: one poll of `recv_from`.
/// The loop polls the socket again with its own waker before it sleeps.
fn recv_now<U: UdpSocket>(
    socket: &U,
    buf: &mut [u8],
) -> Option<io::Result<ironroot_net::RecvMeta>> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(socket.recv_from(buf)).poll(&mut cx) {
        Poll::Ready(received) => Some(received),
        Poll::Pending => None,
    }
}

async fn recv_optional<U: UdpSocket>(
    socket: Option<&U>,
    buf: &mut [u8],
) -> io::Result<ironroot_net::RecvMeta> {
    match socket {
        Some(socket) => socket.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// The receive pause until `until` (see [`DriverOptions`]).
async fn pause<R: Runtime>(runtime: &R, until: Option<ironroot_net::Instant>, block_thread: bool) {
    match until {
        Some(until) if block_thread => {
            std::thread::sleep(until.saturating_duration_since(runtime.now()));
        }
        _ => sleep_optional(runtime, until).await,
    }
}

async fn sleep_optional<R: Runtime>(runtime: &R, deadline: Option<ironroot_net::Instant>) {
    match deadline {
        Some(deadline) => runtime.sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Send one reply from the VIP; on failure the client retries.
async fn send<U: UdpSocket>(socket: &U, outgoing: &Outgoing) -> bool {
    let result = socket
        .send_from(&outgoing.bytes, outgoing.to, IpAddr::V4(outgoing.from))
        .await;
    if let Err(error) = &result {
        tracing::debug!(to = %outgoing.to, %error, "reply not sent");
    }
    result.is_ok()
}
