//! Async drivers: move bytes between the runtime seam's UDP sockets and the
//! sans-IO machines, run resource/VIP/fence actions in worker tasks (so a
//! slow start never delays a heartbeat), and sleep until the next timeout.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ironroot_net::resource::BoxFuture;
use ironroot_net::{Health, Resource, Runtime, UdpBind, UdpSocket, VipControl, VipError, VipSpec};
use tokio::sync::mpsc;

use crate::config::{ClusterConfig, QuorumMode, WitnessConfig};
pub use crate::node::ClusterEvent;
use crate::node::{Action, Admin, Destination, Node, NodeError, ResourceOp, VipOp};
use crate::wire::PACKET_LEN_MAX;
use crate::witness::{OutdatedStore, Witness};
use crate::IncarnationStore;

/// Received datagrams waiting for the machine at most.
pub const INBOX_MAX: usize = 256;
/// Pause after a failed receive before trying again.
pub const RECEIVE_ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// Actions waiting for a worker at most (per worker).
pub const WORK_QUEUE_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("incarnation store: {0}")]
    Incarnation(#[source] io::Error),
    #[error("outdated store: {0}")]
    OutdatedStore(#[source] io::Error),
    #[error("bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("receive: {0}")]
    Receive(#[source] io::Error),
}

/// Why fencing failed.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("fence command {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("fence command exited with {0}")]
    Exit(std::process::ExitStatus),
    #[error("fence refused for {0}")]
    Refused(String),
}

/// Powers a node off (or otherwise guarantees it serves nothing).
pub trait Fence: Send + Sync + 'static {
    fn fence(&self, node: &str) -> BoxFuture<'_, Result<(), FenceError>>;
}

/// Runs the configured command; `{node}` in an argument becomes the node
/// name. The driver bounds it with the configured timeout (the child is
/// killed when the wait is abandoned).
#[derive(Clone, Debug)]
pub struct CommandFence {
    argv: Vec<String>,
}

impl CommandFence {
    pub fn new(argv: Vec<String>) -> CommandFence {
        CommandFence { argv }
    }
}

impl Fence for CommandFence {
    fn fence(&self, node: &str) -> BoxFuture<'_, Result<(), FenceError>> {
        let argv: Vec<String> = self
            .argv
            .iter()
            .map(|a| a.replace("{node}", node))
            .collect();
        Box::pin(async move {
            let program = argv.first().cloned().unwrap_or_default();
            let status = tokio::process::Command::new(&program)
                .args(argv.iter().skip(1))
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|source| FenceError::Spawn {
                    program: program.clone(),
                    source,
                })?;
            if status.success() {
                Ok(())
            } else {
                Err(FenceError::Exit(status))
            }
        })
    }
}

/// For tests and the simulator: a closure decides (and performs) the fence,
/// e.g. by powering off a simulated host.
#[derive(Clone)]
pub struct SimFence {
    power_off: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

impl SimFence {
    pub fn new(power_off: impl Fn(&str) -> bool + Send + Sync + 'static) -> SimFence {
        SimFence {
            power_off: Arc::new(power_off),
        }
    }
}

impl Fence for SimFence {
    fn fence(&self, node: &str) -> BoxFuture<'_, Result<(), FenceError>> {
        let ok = (self.power_off)(node);
        let node = node.to_string();
        Box::pin(async move {
            if ok {
                Ok(())
            } else {
                Err(FenceError::Refused(node))
            }
        })
    }
}

/// Optional channels of a running node.
#[derive(Default)]
pub struct Hooks {
    /// Every machine event, in order; a full channel drops (and counts).
    pub events: Option<mpsc::Sender<ClusterEvent>>,
    /// Operator commands.
    pub admin: Option<mpsc::Receiver<Admin>>,
    /// Whether the peer's store is current (see `Node::set_peer_current`),
    /// asked before each step; None: always.
    pub peer_current: Option<std::sync::Arc<dyn Fn() -> bool + Send + Sync>>,
}

enum Done {
    Resource {
        name: String,
        op: ResourceOp,
        ok: bool,
    },
    Vip {
        op: VipOp,
        ok: bool,
    },
    Fence {
        ok: bool,
    },
}

struct Inbound {
    socket: usize,
    peer: SocketAddr,
    bytes: Vec<u8>,
}

/// Run a control node until a fatal error. Restartable: every call bumps the
/// incarnation and starts from InitialDead with everything stopped.
pub async fn run_node<R: Runtime>(
    rt: R,
    config: ClusterConfig,
    mut persist: impl IncarnationStore,
    resources: Vec<Box<dyn Resource>>,
    fence: impl Fence,
    mut hooks: Hooks,
) -> Result<(), DriverError> {
    let incarnation = persist.bump().map_err(DriverError::Incarnation)?;
    let names = resources.iter().map(|r| r.name().to_string()).collect();
    let mut node = Node::new(config.clone(), incarnation, names, rt.now())?;
    let (sockets, link_socket) = bind_links(&rt, &config).await?;
    let (inbox_tx, mut inbox) = mpsc::channel::<Inbound>(INBOX_MAX);
    for (index, socket) in sockets.iter().enumerate() {
        tokio::spawn(receive_loop(
            rt.clone(),
            socket.clone(),
            index,
            inbox_tx.clone(),
        ));
    }
    let (done_tx, mut done) = mpsc::channel::<Done>(WORK_QUEUE_MAX * 3);
    let workers = Workers::spawn(&rt, &config, resources, fence, done_tx);
    let witness_addr = match config.quorum {
        QuorumMode::Witness { addr, .. } => Some(addr),
        _ => None,
    };
    let mut events_dropped = 0u64;
    loop {
        flush(
            &rt,
            &mut node,
            &sockets,
            &link_socket,
            witness_addr,
            &workers,
        )
        .await;
        while let Some(event) = node.poll_event() {
            // Lease renewals come every interval: routine, not news.
            if matches!(event.kind, crate::node::EventKind::LeaseGranted { .. }) {
                tracing::debug!(node = %event.node, at = %event.at, kind = ?event.kind, "cluster event");
            } else {
                tracing::info!(node = %event.node, at = %event.at, kind = ?event.kind, "cluster event");
            }
            if let Some(events) = &hooks.events {
                if events.try_send(event).is_err() {
                    events_dropped += 1;
                    tracing::warn!(events_dropped, "event channel full");
                }
            }
        }
        let deadline = node.poll_timeout();
        if let Some(current) = &hooks.peer_current {
            node.set_peer_current(current());
        }
        tokio::select! {
            biased;
            Some(result) = done.recv() => {
                let now = rt.now();
                match result {
                    Done::Resource { name, op, ok } => node.handle_resource_result(now, &name, op, ok),
                    Done::Vip { op, ok } => node.handle_vip_result(now, op, ok),
                    Done::Fence { ok } => node.handle_fence_result(now, ok),
                }
            }
            inbound = inbox.recv() => {
                let Some(inbound) = inbound else {
                    return Err(DriverError::Receive(io::ErrorKind::BrokenPipe.into()));
                };
                dispatch(&rt, &mut node, &config, &link_socket, witness_addr, inbound);
            }
            Some(command) = recv_admin(&mut hooks.admin) => node.handle_admin(rt.now(), command),
            () = rt.sleep_until(deadline) => node.handle_timeout(rt.now()),
        }
    }
}

async fn recv_admin(admin: &mut Option<mpsc::Receiver<Admin>>) -> Option<Admin> {
    match admin {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One socket per distinct local port; `link_socket[i]` is link i's socket.
async fn bind_links<R: Runtime>(
    rt: &R,
    config: &ClusterConfig,
) -> Result<(Vec<Arc<R::Udp>>, Vec<usize>), DriverError> {
    let mut by_port: BTreeMap<u16, usize> = BTreeMap::new();
    let mut sockets = Vec::new();
    let mut link_socket = Vec::new();
    for addr in &config.local.links {
        let index = match by_port.get(&addr.port()) {
            Some(index) => *index,
            None => {
                let socket = rt
                    .bind_udp(UdpBind::any(addr.port()))
                    .await
                    .map_err(|source| DriverError::Bind {
                        addr: *addr,
                        source,
                    })?;
                sockets.push(Arc::new(socket));
                by_port.insert(addr.port(), sockets.len() - 1);
                sockets.len() - 1
            }
        };
        link_socket.push(index);
    }
    Ok((sockets, link_socket))
}

async fn receive_loop<R: Runtime>(
    rt: R,
    socket: Arc<R::Udp>,
    index: usize,
    inbox: mpsc::Sender<Inbound>,
) {
    let mut buf = vec![0u8; PACKET_LEN_MAX + 1];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok(meta) => {
                let bytes = buf.get(..meta.len).unwrap_or_default().to_vec();
                let inbound = Inbound {
                    socket: index,
                    peer: meta.peer,
                    bytes,
                };
                // A full inbox drops the datagram like a full socket buffer.
                if let Err(mpsc::error::TrySendError::Closed(_)) = inbox.try_send(inbound) {
                    return;
                }
            }
            Err(error) => {
                // Transient (e.g. ICMP errors surfacing): heartbeats must go
                // on arriving, so wait a little and keep receiving.
                tracing::warn!(%error, "heartbeat receive failed");
                rt.sleep(RECEIVE_ERROR_BACKOFF).await;
            }
        }
    }
}

fn dispatch<R: Runtime>(
    rt: &R,
    node: &mut Node,
    config: &ClusterConfig,
    link_socket: &[usize],
    witness_addr: Option<SocketAddr>,
    inbound: Inbound,
) {
    let now = rt.now();
    if Some(inbound.peer) == witness_addr {
        return node.handle_witness_reply(now, &inbound.bytes);
    }
    let links = &config.peer.links;
    let on_socket = |i: &usize| link_socket.get(*i) == Some(&inbound.socket);
    let link = (0..links.len())
        .filter(on_socket)
        .find(|i| links[*i] == inbound.peer)
        .or_else(|| {
            (0..links.len())
                .filter(on_socket)
                .find(|i| links[*i].ip() == inbound.peer.ip())
        });
    // An unknown source is counted by the machine as an unknown link.
    node.handle_heartbeat(now, link.unwrap_or(usize::MAX), &inbound.bytes);
}

async fn flush<R: Runtime>(
    rt: &R,
    node: &mut Node,
    sockets: &[Arc<R::Udp>],
    link_socket: &[usize],
    witness_addr: Option<SocketAddr>,
    workers: &Workers,
) {
    let _ = rt;
    while let Some(transmit) = node.poll_transmit() {
        let (socket, to) = match transmit.destination {
            Destination::Peer { link } => (
                link_socket.get(link).and_then(|i| sockets.get(*i)),
                node.config().peer.links.get(link).copied(),
            ),
            Destination::Witness => (sockets.first(), witness_addr),
        };
        if let (Some(socket), Some(to)) = (socket, to) {
            if let Err(error) = socket.send_to(&transmit.bytes, to).await {
                tracing::debug!(%error, %to, "send failed");
            }
        }
    }
    while let Some(action) = node.poll_action() {
        workers.submit(action);
    }
}

struct Workers {
    resources: mpsc::Sender<Action>,
    vip: mpsc::Sender<Action>,
    fence: mpsc::Sender<Action>,
}

impl Workers {
    fn spawn<R: Runtime>(
        rt: &R,
        config: &ClusterConfig,
        resources: Vec<Box<dyn Resource>>,
        fence: impl Fence,
        done: mpsc::Sender<Done>,
    ) -> Workers {
        let (resources_tx, resources_rx) = mpsc::channel(WORK_QUEUE_MAX);
        let (vip_tx, vip_rx) = mpsc::channel(WORK_QUEUE_MAX);
        let (fence_tx, fence_rx) = mpsc::channel(WORK_QUEUE_MAX);
        let fence_timeout = match &config.quorum {
            QuorumMode::Fencing(f) => f.timeout,
            _ => Duration::from_secs(5),
        };
        tokio::spawn(resource_worker(
            rt.clone(),
            resources,
            resources_rx,
            done.clone(),
        ));
        tokio::spawn(vip_worker(
            rt.clone(),
            config.vip.clone(),
            vip_rx,
            done.clone(),
        ));
        tokio::spawn(fence_worker(
            rt.clone(),
            fence,
            fence_timeout,
            fence_rx,
            done,
        ));
        Workers {
            resources: resources_tx,
            vip: vip_tx,
            fence: fence_tx,
        }
    }

    fn submit(&self, action: Action) {
        let queue = match action {
            Action::Start { .. } | Action::Stop { .. } | Action::Monitor { .. } => &self.resources,
            Action::ClaimVip { .. } | Action::RenewVip { .. } | Action::ReleaseVip => &self.vip,
            Action::Fence { .. } => &self.fence,
        };
        if queue.try_send(action).is_err() {
            // The machine bounds its own queue below WORK_QUEUE_MAX; a
            // full worker queue means a worker died with its runtime.
            tracing::error!("worker queue full or closed");
        }
    }
}

async fn resource_worker<R: Runtime>(
    rt: R,
    mut resources: Vec<Box<dyn Resource>>,
    mut work: mpsc::Receiver<Action>,
    done: mpsc::Sender<Done>,
) {
    while let Some(action) = work.recv().await {
        let (name, op) = match &action {
            Action::Start { resource } => (resource.clone(), ResourceOp::Start),
            Action::Stop { resource } => (resource.clone(), ResourceOp::Stop),
            Action::Monitor { resource } => (resource.clone(), ResourceOp::Monitor),
            _ => continue,
        };
        let Some(resource) = resources.iter_mut().find(|r| r.name() == name) else {
            continue;
        };
        let timeouts = resource.timeouts();
        let ok = match op {
            ResourceOp::Start => ironroot_net::timeout(&rt, timeouts.start, resource.start())
                .await
                .is_ok_and(|r| r.is_ok()),
            ResourceOp::Stop => ironroot_net::timeout(&rt, timeouts.stop, resource.stop())
                .await
                .is_ok_and(|r| r.is_ok()),
            ResourceOp::Monitor => ironroot_net::timeout(&rt, timeouts.monitor, resource.monitor())
                .await
                .is_ok_and(|h| !matches!(h, Health::Failed(_))),
        };
        if done.send(Done::Resource { name, op, ok }).await.is_err() {
            return;
        }
    }
}

async fn vip_worker<R: Runtime>(
    rt: R,
    spec: VipSpec,
    mut work: mpsc::Receiver<Action>,
    done: mpsc::Sender<Done>,
) {
    let vip = rt.vip();
    if let Err(err) = ironroot_net::timeout(&rt, spec.lifetime, vip.prepare(&spec))
        .await
        .unwrap_or_else(|elapsed| Err(VipError::Netlink(elapsed.to_string())))
    {
        tracing::warn!(error = %err, "preparing the VIP failed; the first claim will retry");
    }
    // Each operation gets the VIP lifetime as its bound (a claim also its
    // probing time): a slower one is as good as failed.
    let bound = spec.lifetime;
    let claim_bound = spec.lifetime + spec.probe_wait;
    let unprobed = VipSpec {
        probe_wait: Duration::ZERO,
        ..spec.clone()
    };
    while let Some(action) = work.recv().await {
        let (op, ok) = match action {
            Action::ClaimVip { probe } => {
                let result = if probe {
                    ironroot_net::timeout(&rt, claim_bound, vip.claim(&spec)).await
                } else {
                    ironroot_net::timeout(&rt, bound, vip.claim(&unprobed)).await
                };
                if let Ok(Err(err)) = &result {
                    tracing::warn!(error = %err, "VIP claim failed");
                }
                (VipOp::Claim, ok(result))
            }
            Action::RenewVip { not_after } => {
                if rt.now() > not_after {
                    // Too late: the new lifetime could outlive the proof.
                    continue;
                }
                (
                    VipOp::Renew,
                    ok(ironroot_net::timeout(&rt, bound, vip.renew(&spec)).await),
                )
            }
            Action::ReleaseVip => (
                VipOp::Release,
                ok(ironroot_net::timeout(&rt, bound, vip.release(&spec)).await),
            ),
            _ => continue,
        };
        if !ok && op == VipOp::Renew {
            tracing::warn!("VIP renewal failed");
        }
        if done.send(Done::Vip { op, ok }).await.is_err() {
            return;
        }
    }
}

fn ok<T, E>(result: Result<Result<T, E>, ironroot_net::Elapsed>) -> bool {
    matches!(result, Ok(Ok(_)))
}

async fn fence_worker<R: Runtime>(
    rt: R,
    fence: impl Fence,
    limit: Duration,
    mut work: mpsc::Receiver<Action>,
    done: mpsc::Sender<Done>,
) {
    while let Some(action) = work.recv().await {
        let Action::Fence { node } = action else {
            continue;
        };
        let ok = ok(ironroot_net::timeout(&rt, limit, fence.fence(&node)).await);
        if done.send(Done::Fence { ok }).await.is_err() {
            return;
        }
    }
}

/// Run the witness until a fatal error.
pub async fn run_witness<R: Runtime>(
    rt: R,
    config: WitnessConfig,
    store: impl OutdatedStore,
) -> Result<(), DriverError> {
    let addr = config.addr;
    let mut witness = Witness::new(config, store, rt.now()).map_err(DriverError::OutdatedStore)?;
    let socket = rt
        .bind_udp(UdpBind::any(addr.port()))
        .await
        .map_err(|source| DriverError::Bind { addr, source })?;
    let mut buf = vec![0u8; PACKET_LEN_MAX + 1];
    loop {
        let meta = match socket.recv_from(&mut buf).await {
            Ok(meta) => meta,
            Err(error) => {
                tracing::warn!(%error, "witness receive failed");
                rt.sleep(RECEIVE_ERROR_BACKOFF).await;
                continue;
            }
        };
        let bytes = buf.get(..meta.len).unwrap_or_default();
        if let Some(reply) = witness.handle(rt.now(), bytes) {
            if let Err(error) = socket.send_to(&reply, meta.peer).await {
                tracing::debug!(%error, peer = %meta.peer, "witness reply failed");
            }
        }
    }
}
