//! Connection takeover: while active, tell the peer which NFS clients are
//! connected to the VIP; after claiming the VIP, reset the connections the
//! peer told us about, so their clients reconnect at once.
//!
//! A kernel NFS client whose server died mid-request waits for its TCP
//! retransmission timer (0.2, 0.6, 1.4, 3 s, ... after the loss) before
//! anything reaches the new holder of the VIP, and only that segment earns
//! the RST that makes it reconnect. One tickle ACK per connection right
//! after the claim (`ironroot_net::tokio_backend::tickle`) turns the stall
//! into the takeover time itself. The wire format and the standby's table
//! are `ironroot_cluster::hints`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironroot_cluster::hints::{encode_all, Connection, Hint, HintTable, PACKET_LEN_MAX};
use ironroot_cluster::wire::{Key, NodeId};
use ironroot_net::tokio_backend::tickle::TickleSender;
use ironroot_net::tokio_backend::TokioRuntime;
use ironroot_net::{Clock, Runtime, UdpBind, UdpSocket};

/// How often the active looks at its connection table.
pub const HINT_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// The active repeats an unchanged list this often, so the standby's table
/// stays fresh and a lost packet is made up for.
pub const HINT_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// The standby forgets a connection not named for this long.
pub const HINT_TTL: Duration = Duration::from_secs(4);
/// Connections the standby remembers at most.
pub const HINT_TABLE_MAX: usize = 8192;
/// Each connection is tickled at these delays after the claim: the first
/// may be lost, or meet the client's rate limit on answers to
/// out-of-window segments.
pub const TICKLE_SCHEDULE: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(100),
    Duration::from_millis(600),
];

/// What takeover hints and tickles did, for metrics.
#[derive(Debug, Default)]
pub struct TakeoverCounters {
    pub hints_sent: AtomicU64,
    pub hints_received: AtomicU64,
    pub hints_dropped: AtomicU64,
    pub tickles_sent: AtomicU64,
    pub tickles_failed: AtomicU64,
}

impl TakeoverCounters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn samples(&self) -> Vec<crate::metrics::Sample> {
        use crate::metrics::Sample;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            Sample::counter(
                "ironroot_takeover_hints_sent_total",
                "Packets naming this node's NFS connections sent to the peer.",
                get(&self.hints_sent),
            ),
            Sample::counter(
                "ironroot_takeover_hints_received_total",
                "Authenticated connection hints received from the peer.",
                get(&self.hints_received),
            ),
            Sample::counter(
                "ironroot_takeover_hints_dropped_total",
                "Hint packets dropped: forged, malformed or from another cluster.",
                get(&self.hints_dropped),
            ),
            Sample::counter(
                "ironroot_tickles_sent_total",
                "Tickle ACKs sent after a VIP claim to reset the peer's clients.",
                get(&self.tickles_sent),
            ),
            Sample::counter(
                "ironroot_tickles_failed_total",
                "Tickle ACKs the kernel refused.",
                get(&self.tickles_failed),
            ),
        ]
    }
}

/// Where hints go and what they are checked against.
#[derive(Clone, Debug)]
pub struct TakeoverSettings {
    pub cluster_id: u32,
    pub key: Key,
    pub local_id: NodeId,
    pub peer_id: NodeId,
    /// The UDP port both nodes listen on for hints.
    pub port: u16,
    /// The peer's address (its first cluster link).
    pub peer_ip: Ipv4Addr,
    pub vip: Ipv4Addr,
}

/// The running hint exchange of one node.
#[derive(Clone)]
pub struct Takeover {
    settings: Arc<TakeoverSettings>,
    connections: Arc<dyn Fn() -> Vec<(SocketAddrV4, SocketAddrV4)> + Send + Sync>,
    table: Arc<Mutex<HintTable>>,
    rt: TokioRuntime,
    pub counters: Arc<TakeoverCounters>,
}

impl Takeover {
    /// Bind the hint port and start sending (while `is_active`) and
    /// receiving. `connections` lists the NFS connections served now.
    pub async fn start(
        rt: &TokioRuntime,
        settings: TakeoverSettings,
        connections: Arc<dyn Fn() -> Vec<(SocketAddrV4, SocketAddrV4)> + Send + Sync>,
        is_active: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> std::io::Result<Takeover> {
        let socket = rt
            .bind_udp(UdpBind {
                addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, settings.port)),
                broadcast: false,
                device: None,
            })
            .await?;
        let takeover = Takeover {
            settings: Arc::new(settings),
            connections: Arc::clone(&connections),
            table: Arc::new(Mutex::new(HintTable::new(HINT_TTL, HINT_TABLE_MAX))),
            rt: rt.clone(),
            counters: Arc::default(),
        };
        let socket = Arc::new(socket);
        tokio::spawn(takeover.clone().receive(Arc::clone(&socket)));
        tokio::spawn(takeover.clone().send(socket, connections, is_active));
        Ok(takeover)
    }

    async fn send(
        self,
        socket: Arc<<TokioRuntime as Runtime>::Udp>,
        connections: Arc<dyn Fn() -> Vec<(SocketAddrV4, SocketAddrV4)> + Send + Sync>,
        is_active: Arc<dyn Fn() -> bool + Send + Sync>,
    ) {
        let s = &self.settings;
        let to = SocketAddr::from((s.peer_ip, s.port));
        let mut last: Vec<Connection> = Vec::new();
        let mut last_sent = None;
        loop {
            self.rt.sleep(HINT_CHECK_INTERVAL).await;
            if !is_active() {
                last.clear();
                continue;
            }
            let mut now_served: Vec<Connection> = connections()
                .into_iter()
                .filter(|(local, _)| *local.ip() == s.vip)
                .map(|(server, client)| Connection { server, client })
                .collect();
            now_served.sort();
            let now = self.rt.now();
            let stale = last_sent
                .is_none_or(|at| now.saturating_duration_since(at) >= HINT_REFRESH_INTERVAL);
            if now_served.is_empty() || (now_served == last && !stale) {
                continue;
            }
            for packet in encode_all(&s.key, s.cluster_id, s.local_id, &now_served) {
                match socket.send_to(&packet, to).await {
                    Ok(_) => TakeoverCounters::bump(&self.counters.hints_sent),
                    Err(error) => tracing::debug!(%to, %error, "takeover hint not sent"),
                }
            }
            last = now_served;
            last_sent = Some(now);
        }
    }

    async fn receive(self, socket: Arc<<TokioRuntime as Runtime>::Udp>) {
        let s = &self.settings;
        let mut buf = vec![0u8; PACKET_LEN_MAX];
        loop {
            let meta = match socket.recv_from(&mut buf).await {
                Ok(meta) => meta,
                Err(error) => {
                    tracing::debug!(%error, "takeover hint receive failed");
                    self.rt.sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let bytes = &buf[..meta.len.min(buf.len())];
            match Hint::decode(&s.key, bytes) {
                Ok(hint) if hint.cluster_id == s.cluster_id && hint.sender == s.peer_id => {
                    TakeoverCounters::bump(&self.counters.hints_received);
                    let now = self.rt.now();
                    self.table
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .record(now, &hint.connections);
                }
                other => {
                    TakeoverCounters::bump(&self.counters.hints_dropped);
                    tracing::debug!(peer = %meta.peer, ?other, "takeover hint dropped");
                }
            }
        }
    }

    /// The VIP was just claimed: reset the peer's clients' connections.
    pub fn vip_claimed(&self) {
        let now = self.rt.now();
        let connections = self
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fresh(now, self.settings.vip);
        if connections.is_empty() {
            return;
        }
        let vip = self.settings.vip;
        let (rt, counters) = (self.rt.clone(), Arc::clone(&self.counters));
        let served = Arc::clone(&self.connections);
        tokio::spawn(async move {
            let sender = match TickleSender::open(vip) {
                Ok(sender) => sender,
                Err(error) => {
                    tracing::warn!(%error, "cannot reset the peer's client connections");
                    return;
                }
            };
            tracing::info!(
                connections = connections.len(),
                "resetting the peer's client connections after the takeover"
            );
            let mut waited = Duration::ZERO;
            let mut connections = connections;
            for delay in TICKLE_SCHEDULE {
                rt.sleep(delay.saturating_sub(waited)).await;
                waited = delay;
                // A client that reconnected uses the same source port: its
                // new connection is served here now and needs no tickle.
                let served_now = served();
                connections.retain(|c| !served_now.contains(&(c.server, c.client)));
                for c in &connections {
                    match sender.send(c.server, c.client) {
                        Ok(()) => TakeoverCounters::bump(&counters.tickles_sent),
                        Err(error) => {
                            TakeoverCounters::bump(&counters.tickles_failed);
                            tracing::debug!(%error, "tickle not sent");
                        }
                    }
                }
            }
        });
    }
}
