//! The `node` role: opens the store, builds the services as resources in
//! the cluster manager's order (store -> NFS -> TFTP -> DHCP; the manager
//! claims the VIP last) and runs the cluster manager, the admin API and the
//! metrics endpoint until SIGTERM.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use ironroot_cluster::{Admin, ClusterEvent, EventKind, FileIncarnationStore, Role};
use ironroot_net::tokio_backend::TokioRuntime;
use ironroot_net::{Clock, Resource, Runtime};
use ironroot_store::storage::FsStorage;
use ironroot_store::store::Store;
use tokio::sync::mpsc;

use crate::config::NodeSettings;
use crate::services::{Replication, ReplicationSettings, Service, StoreResource};
use crate::storefs::{SharedStore, StoreFs};

/// What the admin API and metrics read of the running node.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct NodeStatus {
    pub node: String,
    pub role: String,
    pub vip: String,
    pub peer: String,
    pub failovers: u64,
    /// Heartbeat packets dropped, by reason (forged, replayed, ...).
    pub heartbeats_dropped: std::collections::BTreeMap<&'static str, u64>,
    /// Per heartbeat link (in config order): heartbeats arrive on it.
    pub links_up: Vec<bool>,
    /// The end of the witness's last vote for this node.
    #[serde(skip)]
    pub witness_lease_until: Option<ironroot_net::Instant>,
    /// The witness's last refusal (the node holding its vote, if it said),
    /// cleared by the next grant.
    pub witness_refused: Option<String>,
    /// The last fence of the peer since it was declared dead: succeeded or
    /// not; None while the peer is alive or no fence ran.
    pub fence_succeeded: Option<bool>,
    /// Operator commands the cluster manager refused (a switchover with no
    /// peer ready to take over).
    pub admin_rejections: u64,
}

/// Every reason a heartbeat packet is dropped, as a metrics label.
pub const DROP_REASONS: [&str; 8] = [
    "malformed",
    "forged",
    "wrong_cluster",
    "wrong_sender",
    "replayed",
    "stale",
    "unknown_link",
    "unexpected_reply",
];

fn drop_reason(reason: ironroot_cluster::node::DropReason) -> &'static str {
    use ironroot_cluster::node::DropReason;
    match reason {
        DropReason::Malformed => "malformed",
        DropReason::Forged => "forged",
        DropReason::WrongCluster => "wrong_cluster",
        DropReason::WrongSender => "wrong_sender",
        DropReason::Replayed => "replayed",
        DropReason::Stale => "stale",
        DropReason::UnknownLink => "unknown_link",
        DropReason::UnexpectedReply => "unexpected_reply",
    }
}

/// Shared between the cluster event recorder, the admin API and metrics.
#[derive(Clone)]
pub struct NodeState {
    pub status: Arc<Mutex<NodeStatus>>,
    pub store: SharedStore,
    pub replication: Replication,
    pub admin: mpsc::Sender<Admin>,
    pub settings: Arc<NodeSettings>,
    /// Request and error counters of the services, as metrics samples.
    pub counters: Arc<dyn Fn() -> Vec<crate::metrics::Sample> + Send + Sync>,
    /// Clients the services heard from, and the daemon's clock.
    pub seen: Arc<crate::seen::Seen>,
}

impl NodeState {
    pub fn status(&self) -> NodeStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Bytes the store directory must take at start (written, synced and
/// removed): a full disk is refused before anything starts, instead of
/// failing the first replicated write.
pub const STORE_PROBE_BYTES: usize = 1 << 20;

/// Write, sync and remove [`STORE_PROBE_BYTES`] in `dir`.
pub fn probe_writable(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let path = dir.join(".ironrootd-probe");
    let written = std::fs::File::create(&path).and_then(|mut file| {
        file.write_all(&vec![0u8; STORE_PROBE_BYTES])?;
        file.sync_all()
    });
    let removed = std::fs::remove_file(&path);
    written?;
    removed.or_else(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Ok(()),
        _ => Err(e),
    })
}

fn open_store(settings: &NodeSettings) -> anyhow::Result<SharedStore> {
    std::fs::create_dir_all(&settings.store.dir)
        .with_context(|| format!("store.dir {}", settings.store.dir.display()))?;
    probe_writable(&settings.store.dir).with_context(|| {
        format!(
            "store.dir {}: cannot write {} MiB",
            settings.store.dir.display(),
            STORE_PROBE_BYTES >> 20
        )
    })?;
    let storage = FsStorage::open(&settings.store.dir).with_context(|| {
        format!(
            "store.dir {}: cannot open the store",
            settings.store.dir.display()
        )
    })?;
    let (store, report) = Store::open(Arc::new(storage)).with_context(|| {
        format!(
            "store.dir {}: cannot open the store",
            settings.store.dir.display()
        )
    })?;
    tracing::info!(?report, "store opened");
    Ok(Arc::new(Mutex::new(store)))
}

type NfsServer = ironroot_nfs::Server<StoreFs>;

/// Start the takeover-hint exchange (`nfs.takeover_hints_port`, 0: off).
async fn start_takeover(
    rt: &TokioRuntime,
    settings: &NodeSettings,
    nfs: &Arc<NfsServer>,
    status: &Arc<Mutex<NodeStatus>>,
) -> anyhow::Result<Option<crate::takeover::Takeover>> {
    let port = settings.nfs.takeover_hints_port;
    let cluster = &settings.cluster;
    let peer_ip = cluster.peer.links.first().map(|a| a.ip());
    let Some(std::net::IpAddr::V4(peer_ip)) = peer_ip.filter(|_| port != 0) else {
        return Ok(None);
    };
    let hint_settings = crate::takeover::TakeoverSettings {
        cluster_id: cluster.cluster_id,
        key: cluster.key.clone(),
        local_id: cluster.local.id,
        peer_id: cluster.peer.id,
        port,
        peer_ip,
        vip: cluster.vip.addr,
    };
    let connections = {
        let nfs = Arc::clone(nfs);
        Arc::new(move || nfs.tcp_connections())
    };
    let is_active = {
        let status = Arc::clone(status);
        Arc::new(move || status.lock().unwrap_or_else(|p| p.into_inner()).role == "active")
    };
    let takeover = crate::takeover::Takeover::start(rt, hint_settings, connections, is_active)
        .await
        .with_context(|| format!("nfs.takeover_hints_port {port}"))?;
    Ok(Some(takeover))
}

fn nfs_server(settings: &NodeSettings, store: &SharedStore) -> Arc<NfsServer> {
    let config = ironroot_nfs::Config {
        portmap_port: settings.nfs.portmap_port,
        mount_port: settings.nfs.mount_port,
        nfs_port: settings.nfs.nfs_port,
        handle_key: settings.handle_key,
        ..ironroot_nfs::Config::default()
    };
    Arc::new(ironroot_nfs::Server::new(
        config,
        StoreFs::new(Arc::clone(store)),
    ))
}

fn nfs_service(rt: &TokioRuntime, server: &Arc<NfsServer>) -> Service {
    let (rt, server) = (rt.clone(), Arc::clone(server));
    Service::new(
        "nfs",
        Box::new(move || {
            let (rt, server) = (rt.clone(), Arc::clone(&server));
            Box::pin(async move {
                let config = server.config().clone();
                let mut endpoints = Vec::new();
                for port in [config.portmap_port, config.mount_port, config.nfs_port] {
                    endpoints
                        .push(ironroot_nfs::driver::bind(&rt, Ipv4Addr::UNSPECIFIED, port).await?);
                }
                let serve: ironroot_net::resource::BoxFuture<'static, std::io::Result<()>> =
                    Box::pin(ironroot_nfs::driver::serve(rt, server, endpoints));
                Ok(serve)
            })
        }),
    )
}

type TftpServer = ironroot_tftp::Server<
    crate::seen::Noting<
        ironroot_tftp::source::WithGenerated<
            crate::bootfiles::ClientConfigs,
            crate::boottree::StoreBootSource,
        >,
    >,
>;

fn tftp_server(
    settings: &NodeSettings,
    store: &SharedStore,
    seen: &Arc<crate::seen::Seen>,
) -> Arc<TftpServer> {
    let tree_source = crate::boottree::StoreBootSource::new(Arc::clone(store));
    let generated = crate::bootfiles::ClientConfigs {
        store: Arc::clone(store),
        vip: settings.cluster.vip.addr,
        extra: settings.boot_extra.clone(),
    };
    let source = crate::seen::Noting {
        inner: ironroot_tftp::source::WithGenerated {
            generated,
            tree: tree_source,
        },
        seen: Arc::clone(seen),
    };
    ironroot_tftp::Server::new(settings.tftp, source)
}

fn tftp_service(rt: &TokioRuntime, server: &Arc<TftpServer>) -> Service {
    let (rt, server) = (rt.clone(), Arc::clone(server));
    Service::new(
        "tftp",
        Box::new(move || {
            let (rt, server) = (rt.clone(), Arc::clone(&server));
            Box::pin(async move {
                let listener = ironroot_tftp::driver::bind(&rt, &server).await?;
                let serve: ironroot_net::resource::BoxFuture<'static, std::io::Result<()>> =
                    Box::pin(ironroot_tftp::driver::run(rt, server, listener));
                Ok(serve)
            })
        }),
    )
}

/// The DHCP service: a new server at every start (after the store's
/// promotion), so it starts from the pool leases replicated to this node;
/// its leases are written through the replicated journal; its counters
/// outlive it. It runs on a thread of its own (see [`crate::ownthread`]).
fn dhcp_service(
    rt: &TokioRuntime,
    settings: &NodeSettings,
    store: &SharedStore,
    replication: &Replication,
    counters: &Arc<ironroot_dhcp::SharedCounters>,
    seen: &Arc<crate::seen::Seen>,
) -> Service {
    let (rt, config, store) = (rt.clone(), settings.dhcp.clone(), Arc::clone(store));
    let log = Arc::new(crate::leaselog::StoreLeaseLog::new(
        Arc::clone(&store),
        replication.clone(),
    ));
    let counters = Arc::clone(counters);
    let seen = Arc::clone(seen);
    let device = Some(settings.cluster.vip.interface.clone());
    Service::new(
        "dhcp",
        Box::new(move || {
            let (rt, config, store, device) = (
                rt.clone(),
                config.clone(),
                Arc::clone(&store),
                device.clone(),
            );
            let (log, counters) = (Arc::clone(&log), Arc::clone(&counters));
            let seen = Arc::clone(&seen);
            Box::pin(async move {
                let server = ironroot_dhcp::DhcpServer::new(
                    config,
                    crate::dhcpregistry::StoreRegistry::new(store).noting(seen),
                )
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?
                .with_counters(counters);
                let proxy = matches!(server.config().mode, ironroot_dhcp::Mode::Proxy);
                let mut options = ironroot_dhcp::DriverOptions::standard(proxy, device);
                options.receive_pause_blocks_thread = true;
                let thread = crate::ownthread::spawn("dhcp", move |shutdown| async move {
                    ironroot_dhcp::serve(rt, server, log, options, shutdown)
                        .await
                        .map(|_| ())
                })?;
                let serve: ironroot_net::resource::BoxFuture<'static, std::io::Result<()>> =
                    Box::pin(thread);
                Ok(serve)
            })
        }),
    )
}

/// Keep the status the admin API reports up to date from cluster events,
/// and record the peer Outdated in the store's replication once the
/// cluster proved it cannot be active (see [`PeerOutdating`]).
async fn record_events(
    mut events: mpsc::Receiver<ClusterEvent>,
    status: Arc<Mutex<NodeStatus>>,
    replication: Replication,
    quorum: ironroot_cluster::QuorumMode,
    takeover: Option<crate::takeover::Takeover>,
) {
    let mut outdating = PeerOutdating::new(&quorum);
    while let Some(event) = events.recv().await {
        if let (EventKind::VipClaimed, Some(takeover)) = (&event.kind, &takeover) {
            takeover.vip_claimed();
        }
        let active = {
            let mut status = status.lock().unwrap_or_else(|p| p.into_inner());
            match &event.kind {
                EventKind::StateChanged { to, .. } => {
                    if *to == Role::Active && status.role != "active" {
                        status.failovers += 1;
                    }
                    status.role = role_name(*to).to_owned();
                }
                EventKind::PeerAlive { .. } => {
                    status.peer = "alive".to_owned();
                    status.fence_succeeded = None;
                }
                EventKind::LeaseGranted { until } => {
                    status.witness_lease_until = Some(*until);
                    status.witness_refused = None;
                }
                EventKind::LeaseRefused { holder } => {
                    status.witness_refused = Some(match holder {
                        Some(node) => format!("node {}", node.0),
                        None => "unknown".to_owned(),
                    });
                }
                EventKind::FenceResult { ok } => status.fence_succeeded = Some(*ok),
                EventKind::AdminRejected { .. } => status.admin_rejections += 1,
                EventKind::PeerWarn { .. } => status.peer = "late".to_owned(),
                EventKind::PeerDead => status.peer = "dead".to_owned(),
                EventKind::LinkUp { link } | EventKind::LinkDown { link } => {
                    let up = matches!(event.kind, EventKind::LinkUp { .. });
                    if let Some(slot) = status.links_up.get_mut(*link) {
                        *slot = up;
                    }
                }
                EventKind::Dropped { reason } => {
                    *status
                        .heartbeats_dropped
                        .entry(drop_reason(*reason))
                        .or_default() += 1;
                }
                _ => {}
            }
            status.role == "active"
        };
        if outdating.handle_event(event.at, &event.kind, active) {
            if let Some(primary) = replication.primary() {
                tracing::warn!("peer is down: recorded Outdated, writes go on degraded");
                tokio::spawn(async move { primary.peer_outdated().await });
            }
        }
    }
}

/// When an active node's peer dies, its pending and later writes wait for
/// the peer until the peer is known unable to be active: the witness
/// granted this node a lease it requested after the peer was declared dead
/// (such a grant marks the peer Outdated on the witness first), a fence
/// succeeded, or the cluster runs `unsafe_unfenced` (nothing to prove).
struct PeerOutdating {
    unsafe_unfenced: bool,
    /// The witness's full lease: a grant ending at `until` was requested
    /// no earlier than `until - lease`.
    lease: Option<Duration>,
    peer_dead_at: Option<ironroot_net::Instant>,
    proved: bool,
    sent: bool,
}

impl PeerOutdating {
    fn new(quorum: &ironroot_cluster::QuorumMode) -> PeerOutdating {
        use ironroot_cluster::QuorumMode;
        PeerOutdating {
            unsafe_unfenced: matches!(quorum, QuorumMode::Unsafe),
            lease: match quorum {
                QuorumMode::Witness { lease, .. } => Some(*lease),
                _ => None,
            },
            peer_dead_at: None,
            proved: false,
            sent: false,
        }
    }

    /// True when the peer should now be recorded Outdated.
    fn handle_event(&mut self, at: ironroot_net::Instant, kind: &EventKind, active: bool) -> bool {
        match kind {
            EventKind::PeerDead => {
                self.peer_dead_at = Some(at);
                self.proved = self.unsafe_unfenced;
            }
            EventKind::PeerAlive { .. } => {
                self.peer_dead_at = None;
                self.proved = false;
                self.sent = false;
            }
            EventKind::LeaseGranted { until } => {
                if let (Some(dead_at), Some(lease)) = (self.peer_dead_at, self.lease) {
                    self.proved |= *until >= dead_at + lease;
                }
            }
            EventKind::FenceResult { ok: true } if self.peer_dead_at.is_some() => {
                self.proved = true;
            }
            EventKind::StateChanged { to, .. } if *to != Role::Active => self.sent = false,
            _ => {}
        }
        if self.peer_dead_at.is_some() && self.proved && active && !self.sent {
            self.sent = true;
            return true;
        }
        false
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::InitialDead => "starting",
        Role::Standby => "standby",
        Role::Promoting => "promoting",
        Role::Active => "active",
        Role::Stopping => "stopping",
        Role::Outdated => "outdated",
        Role::Maintenance => "maintenance",
    }
}

/// Run the node role until SIGTERM or a fatal error.
pub async fn run(settings: NodeSettings, reloader: crate::reload::Reloader) -> anyhow::Result<()> {
    // SIGHUP reloads what can be reloaded (and would otherwise end us).
    tokio::spawn(crate::reload::serve_sighup(reloader));
    let rt = TokioRuntime::new().context("seeding the runtime")?;
    // Bind before touching the store: a port in use fails the start with
    // nothing created.
    let replication_listen =
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, settings.store.replication_port));
    let replication_listener = rt
        .listen_tcp(replication_listen)
        .await
        .with_context(|| format!("store.replication_port {}", settings.store.replication_port))?;
    let store = open_store(&settings)?;
    let replication = Replication::default();
    let peer_ip = settings
        .cluster
        .peer
        .links
        .first()
        .map(|a| a.ip())
        .context("cluster: the peer has no link")?;
    let replication_settings = ReplicationSettings {
        node_id: u32::from(settings.cluster.local.id.0),
        listen: replication_listen,
        peer: SocketAddr::new(peer_ip, settings.store.replication_port),
        split_brain: settings.store.after_split_brain.policy(),
        degraded: settings.store.degraded.policy(),
    };
    crate::services::serve_secondary(
        &rt,
        &store,
        &replication,
        &replication_settings,
        replication_listener,
    );
    let status = Arc::new(Mutex::new(NodeStatus {
        node: settings.name.clone(),
        role: "starting".to_owned(),
        vip: settings.cluster.vip.addr.to_string(),
        peer: "unknown".to_owned(),
        failovers: 0,
        heartbeats_dropped: std::collections::BTreeMap::new(),
        links_up: vec![false; settings.cluster.local.links.len()],
        ..NodeStatus::default()
    }));
    let peer_alive: Arc<dyn Fn() -> bool + Send + Sync> = {
        let status = Arc::clone(&status);
        Arc::new(move || status.lock().unwrap_or_else(|p| p.into_inner()).peer == "alive")
    };
    let nfs = nfs_server(&settings, &store);
    let takeover = start_takeover(&rt, &settings, &nfs, &status).await?;
    let seen = {
        let (clock, nfs) = (rt.clone(), Arc::clone(&nfs));
        Arc::new(crate::seen::Seen::new(
            Arc::new(move || clock.now()),
            Arc::new(move || {
                nfs.tcp_connections()
                    .iter()
                    .map(|(_, peer)| *peer.ip())
                    .collect()
            }),
        ))
    };
    let tftp = tftp_server(&settings, &store, &seen);
    let dhcp_counters = Arc::new(ironroot_dhcp::SharedCounters::default());
    let counters: Arc<dyn Fn() -> Vec<crate::metrics::Sample> + Send + Sync> = {
        let (nfs, tftp) = (Arc::clone(&nfs), Arc::clone(&tftp));
        let takeover = takeover.clone();
        let dhcp = Arc::clone(&dhcp_counters);
        Arc::new(move || {
            let mut samples = service_samples(&nfs);
            if let Some(takeover) = &takeover {
                samples.extend(takeover.counters.samples());
            }
            samples.extend(crate::metrics::dhcp_samples(&dhcp.snapshot()));
            samples.extend(crate::metrics::tftp_samples(
                &tftp.counters().snapshot(),
                tftp.active(),
            ));
            samples
        })
    };
    let resources: Vec<Box<dyn Resource>> = vec![
        Box::new(StoreResource::new(
            rt.clone(),
            Arc::clone(&store),
            replication.clone(),
            replication_settings,
            peer_alive,
        )),
        Box::new(nfs_service(&rt, &nfs)),
        Box::new(tftp_service(&rt, &tftp)),
        Box::new(dhcp_service(
            &rt,
            &settings,
            &store,
            &replication,
            &dhcp_counters,
            &seen,
        )),
    ];
    let (events_tx, events_rx) = mpsc::channel(1024);
    let (admin_tx, admin_rx) = mpsc::channel(8);
    tokio::spawn(record_events(
        events_rx,
        Arc::clone(&status),
        replication.clone(),
        settings.cluster.quorum.clone(),
        takeover,
    ));
    {
        let status = Arc::clone(&status);
        tokio::spawn(crate::retention::run(
            rt.clone(),
            Arc::clone(&store),
            replication.clone(),
            crate::retention::RetentionSettings {
                interval: Duration::from_secs(settings.store.gc_interval_secs),
                retention: ironroot_store::gc::Retention {
                    generations_per_image_min: settings.store.keep_generations,
                    age_min_secs: settings.store.keep_secs,
                },
            },
            Arc::new(move || status.lock().unwrap_or_else(|p| p.into_inner()).role == "active"),
        ));
    }
    let settings = Arc::new(settings);
    let state = NodeState {
        status,
        store,
        replication,
        admin: admin_tx,
        settings: Arc::clone(&settings),
        counters,
        seen,
    };
    if let Some(parent) = settings.admin.socket.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("admin.socket {}", parent.display()))?;
    }
    let admin = tokio::spawn(crate::admin::serve_path(
        settings.admin.socket.clone(),
        crate::handler::Handler::new(state.clone()),
    ));
    if let Some(listen) = settings.metrics.listen {
        spawn_metrics(&rt, listen, state.clone()).await?;
    }
    let incarnation = FileIncarnationStore::new(settings.store.dir.join("incarnation"));
    // The witness clears the peer's Outdated mark only once the peer's
    // store holds every entry: a node that dies mid-resync leaves a peer
    // that refuses promotion instead of a stale active.
    let peer_current: Arc<dyn Fn() -> bool + Send + Sync> = {
        let replication = state.replication.clone();
        Arc::new(move || replication.state().link == crate::replstatus::Link::InSync)
    };
    let hooks = ironroot_cluster::driver::Hooks {
        events: Some(events_tx),
        admin: Some(admin_rx),
        peer_current: Some(peer_current),
    };
    let fence = crate::handler::fence_for(&settings.cluster);
    let cluster = ironroot_cluster::run_node(
        rt,
        settings.cluster.clone(),
        incarnation,
        resources,
        fence,
        hooks,
    );
    tokio::pin!(cluster);
    tokio::select! {
        biased;
        result = &mut cluster => return result.context("cluster manager"),
        () = crate::shutdown_signal() => tracing::info!("SIGTERM: handing over and stopping"),
        result = admin => anyhow::bail!("admin API stopped: {result:?}"),
    }
    // Clean shutdown: the cluster manager stops the services in reverse
    // order and releases the VIP (the same path as `ironroot standby on`).
    let _ = state.admin.try_send(Admin::Standby(true));
    let stopped = async {
        loop {
            let role = state.status().role;
            if !matches!(role.as_str(), "active" | "promoting" | "stopping") {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        biased;
        result = &mut cluster => result.context("cluster manager")?,
        () = stopped => tracing::info!("services stopped, VIP released"),
        () = tokio::time::sleep(SHUTDOWN_TIMEOUT) => tracing::warn!("shutdown timed out; the VIP expires on its own"),
    }
    Ok(())
}

/// Longest wait for an orderly stop on SIGTERM.
const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn spawn_metrics(
    rt: &TokioRuntime,
    listen: SocketAddr,
    state: NodeState,
) -> anyhow::Result<()> {
    let listener = rt
        .listen_tcp(listen)
        .await
        .with_context(|| format!("metrics.listen {listen}"))?;
    tokio::spawn(crate::metrics::serve(rt.clone(), listener, move || {
        crate::handler::samples(&state)
    }));
    Ok(())
}

/// NFS counters as metrics (DHCP and TFTP: [`crate::metrics`]).
fn service_samples(nfs: &NfsServer) -> Vec<crate::metrics::Sample> {
    use crate::metrics::Sample;
    use std::sync::atomic::Ordering::Relaxed;
    let c = nfs.counters();
    let mut samples = vec![Sample::counter(
        "ironroot_nfs_calls_total",
        "RPC calls answered by the NFS, MOUNT and portmap services.",
        c.calls.load(Relaxed),
    )];
    for (reason, value) in [
        ("unknown_client", &c.unknown_client),
        ("bad_handle", &c.bad_handle),
        ("stale", &c.stale),
        ("read_only", &c.rofs),
        ("garbage_args", &c.garbage_args),
        ("auth_rejected", &c.auth_rejected),
        ("duplicate_dropped", &c.duplicate_dropped),
        ("in_flight_full", &c.in_flight_full_dropped),
        ("connections_refused", &c.connections_refused),
    ] {
        samples.push(
            Sample::counter(
                "ironroot_nfs_errors_total",
                "NFS calls refused or dropped, by reason.",
                value.load(Relaxed),
            )
            .label("reason", reason),
        );
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cluster_events_update_the_status_and_count_dropped_heartbeats() {
        use ironroot_cluster::node::DropReason;
        let status = Arc::new(Mutex::new(NodeStatus {
            links_up: vec![false; 2],
            ..NodeStatus::default()
        }));
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(record_events(
            rx,
            Arc::clone(&status),
            Replication::default(),
            ironroot_cluster::QuorumMode::Unsafe,
            None,
        ));
        let event = |kind| ClusterEvent {
            at: ironroot_net::Instant::from_millis(1),
            node: ironroot_cluster::NodeId(1),
            kind,
        };
        for kind in [
            EventKind::StateChanged {
                from: Role::Promoting,
                to: Role::Active,
                reason: ironroot_cluster::Reason::Quorum,
            },
            EventKind::Dropped {
                reason: DropReason::Forged,
            },
            EventKind::Dropped {
                reason: DropReason::Forged,
            },
            EventKind::Dropped {
                reason: DropReason::Replayed,
            },
            EventKind::PeerDead,
            EventKind::LinkUp { link: 1 },
            EventKind::LinkUp { link: 0 },
            EventKind::LinkDown { link: 1 },
            EventKind::LinkUp { link: 7 },
        ] {
            tx.send(event(kind)).await.expect("send");
        }
        drop(tx);
        task.await.expect("recorder");
        let status = status.lock().expect("status").clone();
        assert_eq!(status.role, "active");
        assert_eq!(status.failovers, 1);
        assert_eq!(status.peer, "dead");
        assert_eq!(status.heartbeats_dropped.get("forged"), Some(&2));
        assert_eq!(status.heartbeats_dropped.get("replayed"), Some(&1));
        // Two links: an unknown link index changes nothing.
        assert_eq!(status.links_up, vec![true, false]);
    }

    #[test]
    fn the_peer_is_outdated_only_once_proved_unable_to_be_active() {
        use ironroot_cluster::QuorumMode;
        use ironroot_net::Instant;
        use std::time::Duration;
        let at = Instant::from_millis;
        let mut witness = PeerOutdating::new(&QuorumMode::Witness {
            addr: "192.0.2.3:695".parse().expect("addr"),
            lease: Duration::from_millis(1_500),
        });
        assert!(!witness.handle_event(at(10_000), &EventKind::PeerDead, true));
        let grant = |until| EventKind::LeaseGranted { until: at(until) };
        assert!(
            !witness.handle_event(at(10_050), &grant(11_400), true),
            "requested before the peer was declared dead"
        );
        assert!(
            witness.handle_event(at(10_150), &grant(11_500), true),
            "requested once the peer was dead: the witness outdated it"
        );
        assert!(
            !witness.handle_event(at(10_250), &grant(11_600), true),
            "once"
        );
        let alive = EventKind::PeerAlive {
            incarnation: 2,
            restarted: true,
        };
        assert!(!witness.handle_event(at(11_000), &alive, true));
        assert!(
            !witness.handle_event(at(11_100), &grant(12_600), true),
            "the peer is back"
        );

        let mut fencing = PeerOutdating::new(&QuorumMode::Unsafe);
        fencing.unsafe_unfenced = false;
        assert!(!fencing.handle_event(at(1), &EventKind::PeerDead, true));
        assert!(!fencing.handle_event(at(2), &EventKind::FenceResult { ok: false }, true));
        assert!(fencing.handle_event(at(3), &EventKind::FenceResult { ok: true }, true));

        let mut unfenced = PeerOutdating::new(&QuorumMode::Unsafe);
        assert!(
            !unfenced.handle_event(at(1), &EventKind::PeerDead, false),
            "standby"
        );
        let promoted = EventKind::StateChanged {
            from: Role::Promoting,
            to: Role::Active,
            reason: ironroot_cluster::Reason::Quorum,
        };
        assert!(unfenced.handle_event(at(2), &promoted, true));
    }
}
