//! The `node` role: opens the store, builds the services as resources in
//! the cluster manager's order (store -> NFS -> TFTP -> DHCP; the manager
//! claims the VIP last) and runs the cluster manager, the admin API and the
//! metrics endpoint until SIGTERM.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use ironroot_cluster::{Admin, ClusterEvent, EventKind, FileIncarnationStore, Role};
use ironroot_dhcp::{Registry, Reservation};
use ironroot_net::tokio_backend::TokioRuntime;
use ironroot_net::{Resource, Runtime};
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
}

impl NodeState {
    pub fn status(&self) -> NodeStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// DHCP reservations straight from the store's client registry.
pub struct StoreRegistry(pub SharedStore);

impl Registry for StoreRegistry {
    fn lookup(&self, mac: &ironroot_dhcp::Mac) -> Option<Reservation> {
        let store = self.0.lock().unwrap_or_else(|p| p.into_inner());
        store.client_by_mac(&mac.0).map(|client| Reservation {
            mac: *mac,
            name: client.name.clone(),
            ip: Ipv4Addr::from(client.ipv4),
            image: client.image.clone(),
        })
    }

    fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .client_by_ipv4(ip.octets())
            .is_some()
    }
}

fn open_store(settings: &NodeSettings) -> anyhow::Result<SharedStore> {
    std::fs::create_dir_all(&settings.store.dir)
        .with_context(|| format!("store.dir {}", settings.store.dir.display()))?;
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
    ironroot_tftp::source::WithGenerated<
        crate::bootfiles::ClientConfigs,
        crate::boottree::StoreBootSource,
    >,
>;

fn tftp_server(settings: &NodeSettings, store: &SharedStore) -> Arc<TftpServer> {
    let tree_source = crate::boottree::StoreBootSource::new(Arc::clone(store));
    let generated = crate::bootfiles::ClientConfigs {
        store: Arc::clone(store),
        vip: settings.cluster.vip.addr,
        extra: settings.boot_extra.clone(),
    };
    let source = ironroot_tftp::source::WithGenerated {
        generated,
        tree: tree_source,
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
/// outlive it.
fn dhcp_service(
    rt: &TokioRuntime,
    settings: &NodeSettings,
    store: &SharedStore,
    replication: &Replication,
    counters: &Arc<ironroot_dhcp::SharedCounters>,
) -> Service {
    let (rt, config, store) = (rt.clone(), settings.dhcp.clone(), Arc::clone(store));
    let log = Arc::new(crate::leaselog::StoreLeaseLog::new(
        Arc::clone(&store),
        replication.clone(),
    ));
    let counters = Arc::clone(counters);
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
            Box::pin(async move {
                let server = ironroot_dhcp::DhcpServer::new(config, StoreRegistry(store))
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?
                    .with_counters(counters);
                let proxy = matches!(server.config().mode, ironroot_dhcp::Mode::Proxy);
                let options = ironroot_dhcp::DriverOptions::standard(proxy, device);
                let serve: ironroot_net::resource::BoxFuture<'static, std::io::Result<()>> =
                    Box::pin(async move {
                        ironroot_dhcp::serve(rt, server, log, options, std::future::pending())
                            .await
                            .map(|_| ())
                    });
                Ok(serve)
            })
        }),
    )
}

/// Keep the status the admin API reports up to date from cluster events.
async fn record_events(mut events: mpsc::Receiver<ClusterEvent>, status: Arc<Mutex<NodeStatus>>) {
    while let Some(event) = events.recv().await {
        let mut status = status.lock().unwrap_or_else(|p| p.into_inner());
        match &event.kind {
            EventKind::StateChanged { to, .. } => {
                if *to == Role::Active && status.role != "active" {
                    status.failovers += 1;
                }
                status.role = role_name(*to).to_owned();
            }
            EventKind::PeerAlive { .. } => status.peer = "alive".to_owned(),
            EventKind::PeerWarn { .. } => status.peer = "late".to_owned(),
            EventKind::PeerDead => status.peer = "dead".to_owned(),
            _ => {}
        }
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
pub async fn run(settings: NodeSettings) -> anyhow::Result<()> {
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
    }));
    let peer_alive: Arc<dyn Fn() -> bool + Send + Sync> = {
        let status = Arc::clone(&status);
        Arc::new(move || status.lock().unwrap_or_else(|p| p.into_inner()).peer == "alive")
    };
    let nfs = nfs_server(&settings, &store);
    let tftp = tftp_server(&settings, &store);
    let dhcp_counters = Arc::new(ironroot_dhcp::SharedCounters::default());
    let counters: Arc<dyn Fn() -> Vec<crate::metrics::Sample> + Send + Sync> = {
        let (nfs, tftp) = (Arc::clone(&nfs), Arc::clone(&tftp));
        let dhcp = Arc::clone(&dhcp_counters);
        Arc::new(move || {
            let mut samples = service_samples(&nfs);
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
        )),
    ];
    let (events_tx, events_rx) = mpsc::channel(1024);
    let (admin_tx, admin_rx) = mpsc::channel(8);
    tokio::spawn(record_events(events_rx, Arc::clone(&status)));
    let settings = Arc::new(settings);
    let state = NodeState {
        status,
        store,
        replication,
        admin: admin_tx,
        settings: Arc::clone(&settings),
        counters,
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
    let hooks = ironroot_cluster::driver::Hooks {
        events: Some(events_tx),
        admin: Some(admin_rx),
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
