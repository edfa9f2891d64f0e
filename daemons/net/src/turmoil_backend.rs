//! The simulator's backend: turmoil's sockets and clock, plus a simulated L2
//! segment that gives the VIP a moving owner.
//!
//! Turmoil gives every host one fixed address, binds UDP only on `0.0.0.0` or
//! loopback and always sends from the host's own address. A VIP is modelled
//! here the way Ethernet does it:
//!
//! - [`Segment`] (shared by the whole simulation) is the set of addresses
//!   each host's kernel has configured, each with an expiry (`valid_lft`). A
//!   crashed daemon leaves its addresses in place until they expire, as a
//!   real kernel would; [`Segment::host_died`] removes them when the whole
//!   host dies. The checker reads VIP ownership here, not from what nodes
//!   believe.
//! - Every host keeps its own ARP cache. A claim broadcasts gratuitous ARP
//!   messages over turmoil UDP (port [`ARP_PORT`]), so partitions, loss and
//!   latency delay them exactly as they delay a real GARP; a cache miss sends
//!   a who-has broadcast that only a current holder answers.
//! - Every datagram carries a small envelope with its source and destination
//!   IP, so a receiver learns the address it was sent to (IP_PKTINFO) and a
//!   reply can leave from the VIP. Every TCP connection starts with a
//!   preamble naming the destination address, and a host that does not hold
//!   that address drops the connection, as a real one would.
//!
//! - Address expiry runs late the way Linux's IPv4 lifetime check does: its
//!   timer is rounded up to the next whole second when that is less than
//!   250 ms away ([`kernel_expiry`]), so a dead daemon's address outlives
//!   its nominal lifetime by up to 250 ms.
//! - A claim probes first (RFC 5227): it waits while a host it can reach
//!   still holds the address. The answer comes from the segment's table, so
//!   a kernel whose daemon crashed still answers; [`Segment::set_cut`] tells
//!   the segment which pairs of hosts cannot hear each other.
//!
//! Not modelled: who-has answers for client ARP lookups from a host whose
//! daemon crashed but whose kernel lives on (turmoil stops all of a crashed
//! host's software).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

use crate::{
    Clock, Instant, RecvMeta, Runtime, TcpListener, TcpStream, UdpBind, UdpSocket, VipControl,
    VipError, VipSpec,
};

/// UDP port the segment's ARP messages use on every host.
pub const ARP_PORT: u16 = 219;
/// How long an ARP cache entry is trusted before it is resolved again
/// (Linux: base_reachable_time 30 s).
pub const ARP_ENTRY_TTL: Duration = Duration::from_secs(30);
/// Who-has probes before resolution gives up (Linux: mcast_solicit = 3).
pub const ARP_PROBES_MAX: u32 = 3;
/// Gap between who-has probes (Linux: retrans_time = 1 s).
pub const ARP_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Accepted connections waiting for `accept` (the listen backlog).
pub const ACCEPT_BACKLOG_MAX: usize = 128;
/// Largest datagram the envelope carries.
pub const DATAGRAM_BYTES_MAX: usize = 65_507;
/// How long a new connection may take to send its preamble.
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(2);

const MAGIC: [u8; 2] = *b"IR";
const ENVELOPE_LEN: usize = 10;
const ARP_ANNOUNCE: u8 = 1;
const ARP_WHO_HAS: u8 = 2;

/// What happened to an address on the segment; the simulator's report and
/// checkers read these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentEvent {
    /// A host's kernel got the address (claim).
    Added {
        at: Instant,
        host: IpAddr,
        vip: Ipv4Addr,
        expires: Instant,
    },
    /// The address was removed (release, expiry, host death).
    Removed {
        at: Instant,
        host: IpAddr,
        vip: Ipv4Addr,
        why: RemovedWhy,
    },
    /// A host sent a gratuitous ARP for the address.
    Announced {
        at: Instant,
        host: IpAddr,
        vip: Ipv4Addr,
    },
}

/// Why an address left a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovedWhy {
    Released,
    Expired,
    HostDied,
}

#[derive(Default)]
struct SegmentState {
    /// vip -> host -> expiry.
    holders: BTreeMap<Ipv4Addr, BTreeMap<IpAddr, Instant>>,
    /// Pairs of hosts (lower address first) that cannot hear each other.
    cuts: BTreeSet<(IpAddr, IpAddr)>,
    events: Vec<SegmentEvent>,
}

/// Linux's IPv4 address-lifetime check (`check_lifetime`) runs on a timer
/// rounded up to the next whole second when that costs less than
/// `ADDRCONF_TIMER_FUZZ` (250 ms): the address leaves at `deadline`, or at
/// the next second boundary if that is under 250 ms later.
pub fn kernel_expiry(deadline: Instant) -> Instant {
    const FUZZ_MS: u128 = 250;
    let since_origin = deadline.saturating_duration_since(Instant::from_origin(Duration::ZERO));
    let into_second = since_origin.as_millis() % 1000;
    let to_boundary = (1000 - into_second) % 1000;
    if to_boundary > 0 && to_boundary < FUZZ_MS {
        let late = u64::try_from(to_boundary).unwrap_or(0);
        deadline + Duration::from_millis(late)
    } else {
        deadline
    }
}

fn pair(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

impl SegmentState {
    /// Drop every address whose lifetime ran out by `now`, logging it at the
    /// moment it expired (so the log does not depend on when it was read).
    fn expire(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (vip, hosts) in &mut self.holders {
            hosts.retain(|host, expires| {
                let keep = *expires > now;
                if !keep {
                    expired.push((*expires, *host, *vip));
                }
                keep
            });
        }
        expired.sort();
        for (at, host, vip) in expired {
            self.events.push(SegmentEvent::Removed {
                at,
                host,
                vip,
                why: RemovedWhy::Expired,
            });
        }
    }
}

/// The simulated L2 segment: which host's kernel holds which address.
/// Shared by every host of one simulation; cheap to clone.
#[derive(Clone, Default)]
pub struct Segment {
    state: Arc<Mutex<SegmentState>>,
}

impl Segment {
    pub fn new() -> Segment {
        Segment::default()
    }

    fn lock(&self) -> MutexGuard<'_, SegmentState> {
        // A panic while holding the lock is already a failed simulation.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hosts whose kernel holds `vip` at `now` (more than one is a split brain).
    pub fn holders(&self, vip: Ipv4Addr, now: Instant) -> Vec<IpAddr> {
        let mut state = self.lock();
        state.expire(now);
        state
            .holders
            .get(&vip)
            .map(|hosts| hosts.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Whether `host` holds `vip` at `now`.
    pub fn holds(&self, host: IpAddr, vip: Ipv4Addr, now: Instant) -> bool {
        self.holders(vip, now).contains(&host)
    }

    /// The whole host died (power loss): its kernel's addresses are gone.
    pub fn host_died(&self, host: IpAddr, now: Instant) {
        let mut state = self.lock();
        state.expire(now);
        let mut removed = Vec::new();
        for (vip, hosts) in &mut state.holders {
            if hosts.remove(&host).is_some() {
                removed.push(*vip);
            }
        }
        for vip in removed {
            state.events.push(SegmentEvent::Removed {
                at: now,
                host,
                vip,
                why: RemovedWhy::HostDied,
            });
        }
    }

    /// Record whether `a` and `b` can hear each other (partitions, host
    /// death); a claim's probe only hears holders it is not cut from.
    pub fn set_cut(&self, a: IpAddr, b: IpAddr, cut: bool) {
        let mut state = self.lock();
        if cut {
            state.cuts.insert(pair(a, b));
        } else {
            state.cuts.remove(&pair(a, b));
        }
    }

    /// Another host that holds `vip` and that `asker` can hear: what an ARP
    /// probe from `asker` would get an answer from.
    pub fn probe(&self, asker: IpAddr, vip: Ipv4Addr, now: Instant) -> Option<IpAddr> {
        let mut state = self.lock();
        state.expire(now);
        let hosts = state.holders.get(&vip)?;
        hosts
            .keys()
            .copied()
            .find(|host| *host != asker && !state.cuts.contains(&pair(asker, *host)))
    }

    /// Every event so far, in order.
    pub fn events(&self, now: Instant) -> Vec<SegmentEvent> {
        let mut state = self.lock();
        state.expire(now);
        state.events.clone()
    }

    fn add(&self, host: IpAddr, vip: Ipv4Addr, now: Instant, lifetime: Duration) {
        let mut state = self.lock();
        state.expire(now);
        let expires = kernel_expiry(now + lifetime);
        state.holders.entry(vip).or_default().insert(host, expires);
        state.events.push(SegmentEvent::Added {
            at: now,
            host,
            vip,
            expires,
        });
    }

    fn renew(&self, host: IpAddr, vip: Ipv4Addr, now: Instant, lifetime: Duration) -> bool {
        let mut state = self.lock();
        state.expire(now);
        match state
            .holders
            .get_mut(&vip)
            .and_then(|hosts| hosts.get_mut(&host))
        {
            Some(expires) => {
                *expires = kernel_expiry(now + lifetime);
                true
            }
            None => false,
        }
    }

    fn remove(&self, host: IpAddr, vip: Ipv4Addr, now: Instant) {
        let mut state = self.lock();
        state.expire(now);
        let removed = state
            .holders
            .get_mut(&vip)
            .is_some_and(|hosts| hosts.remove(&host).is_some());
        if removed {
            state.events.push(SegmentEvent::Removed {
                at: now,
                host,
                vip,
                why: RemovedWhy::Released,
            });
        }
    }

    fn announced(&self, host: IpAddr, vip: Ipv4Addr, now: Instant) {
        self.lock()
            .events
            .push(SegmentEvent::Announced { at: now, host, vip });
    }
}

/// Monotonic simulated time: turmoil's simulation clock, the same on every host.
fn sim_now() -> Instant {
    Instant::from_origin(turmoil::sim_elapsed().unwrap_or_default())
}

#[derive(Clone, Copy)]
struct ArpEntry {
    host: Ipv4Addr,
    learned: Instant,
}

struct HostNet {
    addr: Ipv4Addr,
    segment: Segment,
    seed: u64,
    arp: Mutex<BTreeMap<Ipv4Addr, ArpEntry>>,
    arp_learned: Notify,
    arp_socket: turmoil::net::UdpSocket,
}

impl HostNet {
    fn arp_lookup(&self, vip: Ipv4Addr, now: Instant) -> Option<Ipv4Addr> {
        let arp = self
            .arp
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        arp.get(&vip)
            .filter(|entry| now.saturating_duration_since(entry.learned) < ARP_ENTRY_TTL)
            .map(|entry| entry.host)
    }

    fn arp_learn(&self, vip: Ipv4Addr, host: Ipv4Addr, now: Instant) {
        let mut arp = self
            .arp
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        arp.insert(vip, ArpEntry { host, learned: now });
        drop(arp);
        self.arp_learned.notify_waiters();
    }

    /// Whether a datagram or connection for `dst` is for this host.
    fn accepts(&self, dst: IpAddr) -> bool {
        match dst {
            IpAddr::V4(v4) if v4 == self.addr || v4.is_broadcast() || v4.is_loopback() => true,
            IpAddr::V4(v4) => self.segment.holds(IpAddr::V4(self.addr), v4, sim_now()),
            IpAddr::V6(_) => false,
        }
    }

    /// The host address a packet for `dst` goes to, resolving a VIP by ARP.
    async fn next_hop(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        if dst.is_loopback() || dst.is_broadcast() || dst == self.addr {
            return Some(dst);
        }
        if turmoil::reverse_lookup(IpAddr::V4(dst)).is_some() {
            return Some(dst);
        }
        for _ in 0..ARP_PROBES_MAX {
            if let Some(host) = self.arp_lookup(dst, sim_now()) {
                return Some(host);
            }
            let learned = self.arp_learned.notified();
            let who_has = arp_message(ARP_WHO_HAS, dst, self.addr);
            // A lost probe is retried; an error here is a partitioned link.
            let _ = self
                .arp_socket
                .send_to(&who_has, (Ipv4Addr::BROADCAST, ARP_PORT))
                .await;
            let _ = tokio::time::timeout(ARP_PROBE_INTERVAL, learned).await;
        }
        self.arp_lookup(dst, sim_now())
    }
}

fn arp_message(kind: u8, vip: Ipv4Addr, host: Ipv4Addr) -> [u8; 11] {
    let mut message = [0u8; 11];
    message[..2].copy_from_slice(&MAGIC);
    message[2] = kind;
    message[3..7].copy_from_slice(&vip.octets());
    message[7..11].copy_from_slice(&host.octets());
    message
}

/// Answer who-has for addresses this host holds; learn from announcements.
async fn run_arp(net: Arc<HostNet>) {
    let mut buf = [0u8; 64];
    loop {
        let Ok((len, _peer)) = net.arp_socket.recv_from(&mut buf).await else {
            return;
        };
        let Some(message) = buf.get(..len).filter(|m| m.len() == 11 && m[..2] == MAGIC) else {
            continue;
        };
        let vip = Ipv4Addr::new(message[3], message[4], message[5], message[6]);
        let host = Ipv4Addr::new(message[7], message[8], message[9], message[10]);
        match message[2] {
            ARP_ANNOUNCE => net.arp_learn(vip, host, sim_now()),
            ARP_WHO_HAS if net.segment.holds(IpAddr::V4(net.addr), vip, sim_now()) => {
                let reply = arp_message(ARP_ANNOUNCE, vip, net.addr);
                let _ = net.arp_socket.send_to(&reply, (host, ARP_PORT)).await;
            }
            _ => {}
        }
    }
}

/// The seam inside one turmoil host. Build a new one each time the host
/// (re)starts, inside the host's future: the ARP cache dies with the host.
#[derive(Clone)]
pub struct SimRuntime {
    net: Arc<HostNet>,
}

impl SimRuntime {
    /// Join `segment` as the turmoil host `name` (the host whose future this
    /// runs in), with every random choice of this host derived from `seed`.
    pub async fn start(segment: Segment, name: &str, seed: u64) -> io::Result<SimRuntime> {
        let addr = match turmoil::lookup(name) {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(v6) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("the simulated segment is IPv4 only, host has {v6}"),
                ))
            }
        };
        let arp_socket = turmoil::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, ARP_PORT)).await?;
        arp_socket.set_broadcast(true)?;
        let net = Arc::new(HostNet {
            addr,
            segment,
            seed,
            arp: Mutex::new(BTreeMap::new()),
            arp_learned: Notify::new(),
            arp_socket,
        });
        tokio::spawn(run_arp(Arc::clone(&net)));
        Ok(SimRuntime { net })
    }

    /// This host's own (fixed) address.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.net.addr
    }
}

impl Clock for SimRuntime {
    fn now(&self) -> Instant {
        sim_now()
    }

    fn wall_clock(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + turmoil::since_epoch().unwrap_or_default()
    }

    fn sleep(&self, duration: Duration) -> impl std::future::Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

impl Runtime for SimRuntime {
    type Udp = SimUdp;
    type Stream = SimStream;
    type Listener = SimListener;
    type Vip = SimVip;

    async fn bind_udp(&self, bind: UdpBind) -> io::Result<SimUdp> {
        // turmoil binds only the unspecified address or loopback: a socket
        // bound to another address (a VIP, bound with IP_FREEBIND by the
        // tokio backend) binds the port on every address and keeps only
        // datagrams sent to its own, and sends from it.
        let bound_ip = match bind.addr.ip() {
            IpAddr::V4(ip) if !ip.is_unspecified() && !ip.is_loopback() => Some(ip),
            _ => None,
        };
        let addr = match bound_ip {
            Some(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, bind.addr.port())),
            None => bind.addr,
        };
        let socket = turmoil::net::UdpSocket::bind(addr).await?;
        socket.set_broadcast(bind.broadcast)?;
        Ok(SimUdp {
            socket,
            net: Arc::clone(&self.net),
            bound_ip,
        })
    }

    async fn listen_tcp(&self, addr: SocketAddr) -> io::Result<SimListener> {
        let listener = turmoil::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let (ready_tx, ready_rx) = mpsc::channel(ACCEPT_BACKLOG_MAX);
        let task = tokio::spawn(run_accept(listener, Arc::clone(&self.net), ready_tx));
        Ok(SimListener {
            local,
            ready: tokio::sync::Mutex::new(ready_rx),
            task,
        })
    }

    async fn connect_tcp(&self, addr: SocketAddr, timeout: Duration) -> io::Result<SimStream> {
        let dst = match addr.ip() {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(_) => return Err(io::ErrorKind::Unsupported.into()),
        };
        let connect = async {
            let hop = self
                .net
                .next_hop(dst)
                .await
                .ok_or(io::ErrorKind::HostUnreachable)?;
            let mut stream = turmoil::net::TcpStream::connect((hop, addr.port())).await?;
            let mut preamble = [0u8; 6];
            preamble[..2].copy_from_slice(&MAGIC);
            preamble[2..].copy_from_slice(&dst.octets());
            stream.write_all(&preamble).await?;
            let local = stream.local_addr()?;
            Ok::<_, io::Error>(SimStream {
                inner: stream,
                local,
                peer: addr,
            })
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect {addr}"),
            )),
        }
    }

    fn seed(&self) -> u64 {
        self.net.seed
    }

    fn vip(&self) -> SimVip {
        SimVip {
            net: Arc::clone(&self.net),
        }
    }
}

/// A UDP socket on the simulated segment.
pub struct SimUdp {
    socket: turmoil::net::UdpSocket,
    net: Arc<HostNet>,
    /// The address the socket was bound to, if not the unspecified one.
    bound_ip: Option<Ipv4Addr>,
}

impl UdpSocket for SimUdp {
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let mut frame = vec![0u8; ENVELOPE_LEN + buf.len().min(DATAGRAM_BYTES_MAX)];
        loop {
            let (len, peer) = self.socket.recv_from(&mut frame).await?;
            let Some(frame) = frame
                .get(..len)
                .filter(|f| f.len() >= ENVELOPE_LEN && f[..2] == MAGIC)
            else {
                continue;
            };
            let src = Ipv4Addr::new(frame[2], frame[3], frame[4], frame[5]);
            let dst = Ipv4Addr::new(frame[6], frame[7], frame[8], frame[9]);
            if !self.net.accepts(IpAddr::V4(dst)) || self.bound_ip.is_some_and(|ip| ip != dst) {
                continue;
            }
            let payload = &frame[ENVELOPE_LEN..];
            let copied = payload.len().min(buf.len());
            buf[..copied].copy_from_slice(&payload[..copied]);
            return Ok(RecvMeta {
                len: copied,
                peer: SocketAddr::new(IpAddr::V4(src), peer.port()),
                local: IpAddr::V4(dst),
            });
        }
    }

    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        let from = self.bound_ip.unwrap_or(self.net.addr);
        self.send_from(buf, to, IpAddr::V4(from)).await
    }

    async fn send_from(&self, buf: &[u8], to: SocketAddr, from: IpAddr) -> io::Result<usize> {
        let (IpAddr::V4(dst), IpAddr::V4(src)) = (to.ip(), from) else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        if buf.len() > DATAGRAM_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "datagram too large",
            ));
        }
        let mut frame = Vec::with_capacity(ENVELOPE_LEN + buf.len());
        frame.extend_from_slice(&MAGIC);
        frame.extend_from_slice(&src.octets());
        frame.extend_from_slice(&dst.octets());
        frame.extend_from_slice(buf);
        // No ARP answer: the datagram is dropped, as a kernel would after
        // its probes (the sender is not told).
        let Some(hop) = self.net.next_hop(dst).await else {
            return Ok(buf.len());
        };
        match self.socket.send_to(&frame, (hop, to.port())).await {
            Ok(_) => Ok(buf.len()),
            // turmoil refuses sends over a missing link; a real datagram
            // would just be lost.
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => Ok(buf.len()),
            Err(error) => Err(error),
        }
    }

    // Simulated time does not pass while a task spins: nothing to catch.
    fn recv_from_busy(&self, _buf: &mut [u8], _tries: u32) -> io::Result<Option<RecvMeta>> {
        Ok(None)
    }

    fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.socket.set_broadcast(on)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// Accept connections, read each one's preamble without blocking the
/// others, and queue those addressed to this host.
async fn run_accept(
    listener: turmoil::net::TcpListener,
    net: Arc<HostNet>,
    ready: mpsc::Sender<(SimStream, SocketAddr)>,
) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    while let Ok((mut stream, peer)) = listener.accept().await {
        let net = Arc::clone(&net);
        let ready = ready.clone();
        tokio::spawn(async move {
            let mut preamble = [0u8; 6];
            let read = tokio::time::timeout(PREAMBLE_TIMEOUT, stream.read_exact(&mut preamble));
            if !matches!(read.await, Ok(Ok(_))) || preamble[..2] != MAGIC {
                return;
            }
            let dst = Ipv4Addr::new(preamble[2], preamble[3], preamble[4], preamble[5]);
            if !net.accepts(IpAddr::V4(dst)) {
                return; // dropping the stream resets it, as for an address we lack
            }
            let local = SocketAddr::new(IpAddr::V4(dst), port);
            // A full backlog drops the connection, like a full SYN queue.
            let _ = ready.try_send((
                SimStream {
                    inner: stream,
                    local,
                    peer,
                },
                peer,
            ));
        });
    }
}

/// A listening socket on the simulated segment.
pub struct SimListener {
    local: SocketAddr,
    ready: tokio::sync::Mutex<mpsc::Receiver<(SimStream, SocketAddr)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SimListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TcpListener for SimListener {
    type Stream = SimStream;

    async fn accept(&self) -> io::Result<(SimStream, SocketAddr)> {
        let mut ready = self.ready.lock().await;
        ready
            .recv()
            .await
            .ok_or_else(|| io::Error::from(io::ErrorKind::ConnectionAborted))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A TCP stream on the simulated segment.
pub struct SimStream {
    inner: turmoil::net::TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
}

impl tokio::io::AsyncRead for SimStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SimStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl TcpStream for SimStream {
    type ReadHalf = turmoil::net::tcp::OwnedReadHalf;
    type WriteHalf = turmoil::net::tcp::OwnedWriteHalf;

    fn into_split(self) -> (Self::ReadHalf, Self::WriteHalf) {
        self.inner.into_split()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

/// VIP control on the simulated segment.
#[derive(Clone)]
pub struct SimVip {
    net: Arc<HostNet>,
}

impl SimVip {
    async fn announce(net: Arc<HostNet>, vip: Ipv4Addr) {
        net.segment.announced(IpAddr::V4(net.addr), vip, sim_now());
        let message = arp_message(ARP_ANNOUNCE, vip, net.addr);
        let _ = net
            .arp_socket
            .send_to(&message, (Ipv4Addr::BROADCAST, ARP_PORT))
            .await;
    }
}

impl VipControl for SimVip {
    async fn claim(&self, spec: &VipSpec) -> Result<(), VipError> {
        if spec.garp_count == 0 || spec.lifetime.is_zero() {
            return Err(VipError::Invalid(format!(
                "{}: garp_count and lifetime must be positive",
                spec.addr
            )));
        }
        let host = IpAddr::V4(self.net.addr);
        if !spec.probe_wait.is_zero() {
            // Each round listens for its whole length, answered or not.
            let started = sim_now();
            loop {
                tokio::time::sleep(crate::vip::PROBE_ROUND).await;
                let Some(holder) = self.net.segment.probe(host, spec.addr, sim_now()) else {
                    break;
                };
                let waited = sim_now().saturating_duration_since(started);
                if waited >= spec.probe_wait {
                    return Err(VipError::InUse {
                        addr: spec.addr,
                        holder: holder.to_string(),
                        waited,
                    });
                }
            }
        }
        self.net
            .segment
            .add(host, spec.addr, sim_now(), spec.lifetime);
        SimVip::announce(Arc::clone(&self.net), spec.addr).await;
        let (net, vip, count, interval) = (
            Arc::clone(&self.net),
            spec.addr,
            spec.garp_count,
            spec.garp_interval,
        );
        tokio::spawn(async move {
            for _ in 1..count {
                tokio::time::sleep(interval).await;
                if !net.segment.holds(IpAddr::V4(net.addr), vip, sim_now()) {
                    return;
                }
                SimVip::announce(Arc::clone(&net), vip).await;
            }
        });
        Ok(())
    }

    async fn renew(&self, spec: &VipSpec) -> Result<(), VipError> {
        let host = IpAddr::V4(self.net.addr);
        if self
            .net
            .segment
            .renew(host, spec.addr, sim_now(), spec.lifetime)
        {
            Ok(())
        } else {
            Err(VipError::Netlink(format!(
                "{} is not configured on this host",
                spec.addr
            )))
        }
    }

    async fn release(&self, spec: &VipSpec) -> Result<(), VipError> {
        self.net
            .segment
            .remove(IpAddr::V4(self.net.addr), spec.addr, sim_now());
        Ok(())
    }

    async fn holds(&self, spec: &VipSpec) -> Result<bool, VipError> {
        Ok(self
            .net
            .segment
            .holds(IpAddr::V4(self.net.addr), spec.addr, sim_now()))
    }
}
