//! The network seam: everything ironroot's daemons need from the outside
//! world — UDP and TCP sockets, a clock, seeded randomness and control of the
//! virtual IP — behind one trait family with two backends.
//!
//! - [`tokio_backend`]: real sockets (socket2, IP_PKTINFO, IP_FREEBIND,
//!   SO_BINDTODEVICE), the real clock, rtnetlink for the VIP and gratuitous
//!   ARP on an AF_PACKET socket.
//! - [`turmoil_backend`]: turmoil's simulated sockets and clock plus a
//!   simulated L2 segment ([`turmoil_backend::Segment`]) that gives the VIP a
//!   moving owner, which turmoil itself cannot express.
//!
//! Daemon code is generic over [`Runtime`] and must never read a clock, draw
//! a random number or open a socket any other way: that is what lets the
//! simulator replay a seed byte for byte. This crate's backends are the only
//! place allowed to call `Instant::now`, `SystemTime::now` or seed an RNG
//! from the OS.

pub mod echo;
pub mod resource;
pub mod time;
pub mod tokio_backend;
pub mod turmoil_backend;
pub mod vip;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

pub use resource::{Health, Resource, ResourceError, ResourceTimeouts};
pub use time::Instant;
pub use vip::{VipControl, VipError, VipSpec};

/// Options for [`Runtime::bind_udp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpBind {
    /// Address to bind; daemons bind `0.0.0.0:port` and learn the address a
    /// datagram was sent to from [`RecvMeta::local`].
    pub addr: SocketAddr,
    /// SO_BROADCAST: needed to send to 255.255.255.255 (DHCP replies to
    /// clients without an address).
    pub broadcast: bool,
    /// SO_BINDTODEVICE: restrict the socket to one interface (DHCP on the
    /// boot segment). `None` means every interface.
    pub device: Option<String>,
}

impl UdpBind {
    /// `0.0.0.0:port`, no broadcast, every interface.
    pub fn any(port: u16) -> UdpBind {
        UdpBind {
            addr: SocketAddr::from(([0, 0, 0, 0], port)),
            broadcast: false,
            device: None,
        }
    }
}

/// What [`UdpSocket::recv_from`] learned about one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes written into the caller's buffer.
    pub len: usize,
    /// Sender's address and port.
    pub peer: SocketAddr,
    /// The destination address the datagram was sent to (IP_PKTINFO): the
    /// VIP, a host address, or 255.255.255.255 for a broadcast. Replies leave
    /// from this address (see [`UdpSocket::send_from`]) unless it was a
    /// broadcast.
    pub local: IpAddr,
}

/// A UDP socket of one backend.
pub trait UdpSocket: Send + Sync + 'static {
    /// Receive one datagram and the address it was sent to.
    fn recv_from(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<RecvMeta>> + Send;
    /// Send from the address the kernel (or the segment) picks.
    fn send_to(&self, buf: &[u8], to: SocketAddr)
        -> impl Future<Output = io::Result<usize>> + Send;
    /// Send from a chosen source address, usually the VIP the request came
    /// in on (IP_PKTINFO on send; the socket has IP_FREEBIND so the address
    /// may be claimed after the bind).
    fn send_from(
        &self,
        buf: &[u8],
        to: SocketAddr,
        from: IpAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send;
    /// Busy-poll for a datagram that is due within microseconds (the ACK
    /// of a block just sent): up to `tries` non-blocking receives, giving
    /// the CPU away (sched_yield) between them, so a peer on the same CPU
    /// can answer and one on another CPU is caught without a sleep and a
    /// wake-up. `Ok(None)` if nothing came; never blocks. Backends without
    /// real sockets return `Ok(None)` at once.
    fn recv_from_busy(&self, buf: &mut [u8], tries: u32) -> io::Result<Option<RecvMeta>>;
    /// Turn SO_BROADCAST on or off.
    fn set_broadcast(&self, on: bool) -> io::Result<()>;
    /// Ask for a receive buffer (SO_RCVBUF) of `bytes`, for a service that
    /// reads in batches; returns what the socket got (the kernel caps it
    /// at `net.core.rmem_max`). Backends without one keep theirs.
    fn set_recv_buffer_bytes(&self, bytes: usize) -> io::Result<usize> {
        let _ = bytes;
        Ok(0)
    }
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A listening TCP socket of one backend.
pub trait TcpListener: Send + Sync + 'static {
    type Stream: TcpStream;
    /// Accept the next connection and the peer's address.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A connected TCP stream that splits into owned halves.
pub trait TcpStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {
    type ReadHalf: tokio::io::AsyncRead + Send + Unpin + 'static;
    type WriteHalf: tokio::io::AsyncWrite + Send + Unpin + 'static;
    /// Split into halves that can live in different tasks.
    fn into_split(self) -> (Self::ReadHalf, Self::WriteHalf);
    /// The address this side of the connection is bound to (the VIP for
    /// connections a client made to the VIP).
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The other side.
    fn peer_addr(&self) -> io::Result<SocketAddr>;
}

/// Monotonic and wall-clock time of one backend. Cheap to clone.
pub trait Clock: Clone + Send + Sync + 'static {
    /// Monotonic time since the backend's origin (process start in
    /// production, simulation start in `sim`).
    fn now(&self) -> Instant;
    /// Wall-clock time: only for what humans read (generation timestamps,
    /// logs), never for timeouts.
    fn wall_clock(&self) -> SystemTime;
    /// Sleep for `duration`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
    /// Sleep until `deadline` (returns at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send {
        let duration = deadline.saturating_duration_since(self.now());
        self.sleep(duration)
    }
}

/// Everything a daemon needs from the outside world. Cheap to clone; one
/// value per host (in `sim`, a new one every time a host restarts).
pub trait Runtime: Clock {
    type Udp: UdpSocket;
    type Stream: TcpStream;
    type Listener: TcpListener<Stream = Self::Stream>;
    type Vip: VipControl;

    /// Bind a UDP socket.
    fn bind_udp(&self, bind: UdpBind) -> impl Future<Output = io::Result<Self::Udp>> + Send;
    /// Listen on a TCP address (SO_REUSEADDR on).
    fn listen_tcp(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::Listener>> + Send;
    /// Connect, failing with `TimedOut` after `timeout`.
    fn connect_tcp(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// The seed every random choice of this host derives from: fixed by the
    /// scenario in `sim`, drawn from the OS once at start in production.
    fn seed(&self) -> u64;
    /// A deterministic RNG for one purpose, derived from [`Runtime::seed`]
    /// and a label, so adding a new consumer does not shift the others.
    fn rng(&self, label: &str) -> rand_chacha::ChaCha8Rng {
        derive_rng(self.seed(), label)
    }
    /// Control of the virtual IP on this host.
    fn vip(&self) -> Self::Vip;
}

/// The RNG [`Runtime::rng`] returns: ChaCha8 keyed by `seed` and a BLAKE3-free
/// FNV-1a hash of `label` (stable across Rust versions, unlike `Hash`).
pub fn derive_rng(seed: u64, label: &str) -> rand_chacha::ChaCha8Rng {
    use rand::SeedableRng;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in label.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&hash.to_le_bytes());
    rand_chacha::ChaCha8Rng::from_seed(key)
}

/// A MAC address as humans write it: `02:00:00:00:00:01`.
pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Run `future` with a deadline on `clock`; `Err(Elapsed)` if it passes.
pub async fn timeout<C: Clock, F: Future>(
    clock: &C,
    duration: Duration,
    future: F,
) -> Result<F::Output, Elapsed> {
    tokio::select! {
        biased;
        output = future => Ok(output),
        () = clock.sleep(duration) => Err(Elapsed(duration)),
    }
}

/// A [`timeout`] ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {0:?}")]
pub struct Elapsed(pub Duration);

impl From<Elapsed> for io::Error {
    fn from(elapsed: Elapsed) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, elapsed)
    }
}
