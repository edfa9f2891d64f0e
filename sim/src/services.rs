//! DHCP and TFTP in cluster scenarios: with a `[services]` section the
//! nodes run the real DHCP server and TFTP server as the cluster manager's
//! `dhcp` and `tftp` resources (serving from the VIP), and a real store
//! replicated between the nodes as the `store` resource, through which
//! pool leases are made durable on both nodes before they are ACKed. The
//! simulated PXE clients live in [`crate::pxe`]; the checkers here judge
//! what they saw and what the stores hold.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironroot_dhcp::{Config as DhcpConfig, DhcpServer, DriverOptions, MemoryRegistry, PoolConfig};
use ironroot_net::resource::BoxFuture;
use ironroot_net::turmoil_backend::SimRuntime;
use ironroot_net::{Clock, Health, Instant, Resource, ResourceError, Runtime};
use ironroot_store::journal::PoolLeaseState;
use ironroot_store::replication::driver::{
    run_secondary, spawn_primary, DriverConfig, PrimaryHandle, SharedStore,
};
use ironroot_store::replication::{ReplicationConfig, ReplicationPrimary, ReplicationSecondary};
use ironroot_store::storage::MemStorage;
use ironroot_store::store::Store;
use ironroot_tftp::{MemorySource, TftpConfig};
use ironrootd::leaselog::StoreLeaseLog;
use serde::Deserialize;

use crate::scenario::Scenario;

/// The host running the simulated PXE clients.
pub const PXE: &str = "pxe";
/// The file every TFTP client fetches.
pub const BOOT_FILE: &str = "pxelinux.0";
const REPLICATION_PORT: u16 = 7790;
/// First pool address (last octet) in the VIP's /24.
pub const POOL_FIRST_OCTET: u8 = 100;
/// Tries to bind the replication port again after the primary stops.
const REBIND_TRIES_MAX: u32 = 100;

pub const DHCP_CLIENTS_MAX: u32 = 64;
pub const TFTP_CLIENTS_MAX: u32 = 16;
pub const TFTP_FETCHES_MAX: u32 = 64;
pub const TFTP_FILE_BYTES_MAX: usize = 1 << 20;
pub const LOSS_RATE_MAX: f64 = 0.5;

/// `[services]` as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesFile {
    pub dhcp_clients: u32,
    /// Pool addresses, from .100 of the VIP's /24.
    pub pool_size: u32,
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u32,
    /// How often a bound client renews (unicast to the VIP, ciaddr set).
    #[serde(default = "default_renew_ms")]
    pub renew_ms: u64,
    /// Of the DHCP clients, how many start only at `late_start_ms` (after
    /// a failover, they ask the new active node for fresh addresses).
    #[serde(default)]
    pub late_dhcp_clients: u32,
    #[serde(default)]
    pub late_start_ms: u64,
    pub tftp_clients: u32,
    /// Fetches each TFTP client must complete, one after the other.
    pub tftp_fetches: u32,
    pub tftp_file_bytes: usize,
    /// RFC 2348 blksize the TFTP clients ask for (512 if unset).
    #[serde(default)]
    pub tftp_blksize: Option<u16>,
    /// Fraction of datagrams the PXE clients lose, each way, independently.
    #[serde(default)]
    pub loss_rate: f64,
}

fn default_lease_secs() -> u32 {
    120
}
fn default_renew_ms() -> u64 {
    1000
}

/// Validated `[services]`.
#[derive(Clone, Debug)]
pub struct Services {
    pub dhcp_clients: u32,
    pub pool_size: u32,
    pub lease_secs: u32,
    pub renew: Duration,
    pub late_dhcp_clients: u32,
    pub late_start: Duration,
    pub tftp_clients: u32,
    pub tftp_fetches: u32,
    pub tftp_file_bytes: usize,
    pub tftp_blksize: u16,
    pub loss_rate: f64,
}

impl ServicesFile {
    /// Check every value; errors name the key.
    pub fn validate(&self, duration_ms: u64) -> Result<Services, (String, String)> {
        let bad = |key: &str, message: String| (format!("services.{key}"), message);
        if !(1..=DHCP_CLIENTS_MAX).contains(&self.dhcp_clients) {
            return Err(bad(
                "dhcp_clients",
                format!("must be in 1..={DHCP_CLIENTS_MAX}"),
            ));
        }
        let pool_max = 255 - u32::from(POOL_FIRST_OCTET);
        if self.pool_size < self.dhcp_clients || self.pool_size > pool_max {
            return Err(bad(
                "pool_size",
                format!("must be in dhcp_clients..={pool_max}"),
            ));
        }
        if self.lease_secs == 0 || u64::from(self.lease_secs) * 1000 <= duration_ms {
            return Err(bad(
                "lease_secs",
                "must outlast the scenario (the checkers assume no lease expires)".to_owned(),
            ));
        }
        if self.renew_ms == 0 || self.renew_ms >= duration_ms {
            return Err(bad("renew_ms", "must be in 1..duration_ms".to_owned()));
        }
        if self.late_dhcp_clients > self.dhcp_clients {
            return Err(bad(
                "late_dhcp_clients",
                "must be at most dhcp_clients".to_owned(),
            ));
        }
        if self.late_dhcp_clients > 0 && self.late_start_ms >= duration_ms {
            return Err(bad(
                "late_start_ms",
                "must be inside duration_ms".to_owned(),
            ));
        }
        if self.tftp_clients > TFTP_CLIENTS_MAX {
            return Err(bad("tftp_clients", format!("at most {TFTP_CLIENTS_MAX}")));
        }
        if !(1..=TFTP_FETCHES_MAX).contains(&self.tftp_fetches) {
            return Err(bad(
                "tftp_fetches",
                format!("must be in 1..={TFTP_FETCHES_MAX}"),
            ));
        }
        if !(1..=TFTP_FILE_BYTES_MAX).contains(&self.tftp_file_bytes) {
            return Err(bad(
                "tftp_file_bytes",
                format!("must be in 1..={TFTP_FILE_BYTES_MAX}"),
            ));
        }
        let blksize = self.tftp_blksize.unwrap_or(512);
        if !(8..=1468).contains(&blksize) {
            return Err(bad("tftp_blksize", "must be in 8..=1468".to_owned()));
        }
        if !(0.0..=LOSS_RATE_MAX).contains(&self.loss_rate) {
            return Err(bad(
                "loss_rate",
                format!("must be in 0.0..={LOSS_RATE_MAX}"),
            ));
        }
        Ok(Services {
            dhcp_clients: self.dhcp_clients,
            pool_size: self.pool_size,
            lease_secs: self.lease_secs,
            renew: Duration::from_millis(self.renew_ms),
            late_dhcp_clients: self.late_dhcp_clients,
            late_start: Duration::from_millis(self.late_start_ms),
            tftp_clients: self.tftp_clients,
            tftp_fetches: self.tftp_fetches,
            tftp_file_bytes: self.tftp_file_bytes,
            tftp_blksize: blksize,
            loss_rate: self.loss_rate,
        })
    }
}

/// The boot file's bytes: a pattern that depends on position, so a block
/// delivered at the wrong offset shows.
pub fn boot_file(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// The pool's addresses in the VIP's /24.
pub fn pool_range(scenario: &Scenario, services: &Services) -> (Ipv4Addr, Ipv4Addr) {
    let [a, b, c, _] = scenario.vip.octets();
    let last = u32::from(POOL_FIRST_OCTET) + services.pool_size - 1;
    (
        Ipv4Addr::new(a, b, c, POOL_FIRST_OCTET),
        Ipv4Addr::new(a, b, c, u8::try_from(last).unwrap_or(254)),
    )
}

/// What a PXE client saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// A DHCPACK for `ip` (`renewal`: in answer to a renewal).
    Ack {
        ip: Ipv4Addr,
        renewal: bool,
    },
    Nak {
        ip: Ipv4Addr,
    },
    /// A whole file received; `correct`: its bytes are the boot file's.
    TftpCompleted {
        correct: bool,
        bytes: usize,
    },
    /// A fetch given up (timeouts, an ERROR packet) and started again.
    TftpRetried {
        why: String,
    },
}

/// State shared by the nodes, the PXE clients and the driver of one run.
#[derive(Clone, Default)]
pub struct ServicesShared {
    /// Each node's storage, kept across the host's restarts.
    storage: Arc<Mutex<BTreeMap<String, Arc<MemStorage>>>>,
    /// Each node's open store, for the checkers at the end.
    stores: Arc<Mutex<BTreeMap<String, SharedStore>>>,
    /// Whether each node's cluster manager sees its peer alive.
    peer_alive: Arc<Mutex<BTreeMap<String, bool>>>,
    /// (when, client, event) of every PXE client.
    pub events: Arc<Mutex<Vec<(Instant, String, ClientEvent)>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl ServicesShared {
    /// The cluster manager of `node` saw its peer alive or dead.
    pub fn note_peer(&self, node: &str, alive: bool) {
        lock(&self.peer_alive).insert(node.to_owned(), alive);
    }

    fn peer_alive(&self, node: &str) -> bool {
        lock(&self.peer_alive).get(node).copied().unwrap_or(false)
    }

    pub fn record(&self, at: Instant, client: &str, event: ClientEvent) {
        lock(&self.events).push((at, client.to_owned(), event));
    }

    fn open_store(&self, node: &str) -> std::io::Result<SharedStore> {
        let storage = Arc::clone(lock(&self.storage).entry(node.to_owned()).or_default());
        let (store, _) = Store::open(storage).map_err(std::io::Error::other)?;
        let store = Arc::new(Mutex::new(store));
        lock(&self.stores).insert(node.to_owned(), Arc::clone(&store));
        Ok(store)
    }
}

/// The resources of control node `name` (store, NFS stand-in, TFTP,
/// DHCP), with its store serving as secondary until promoted.
pub async fn node_resources(
    rt: &SimRuntime,
    scenario: &Scenario,
    name: &str,
    shared: &ServicesShared,
) -> std::io::Result<Vec<Box<dyn Resource>>> {
    let services = scenario
        .services
        .clone()
        .ok_or_else(|| std::io::Error::other("no [services] section"))?;
    let id = scenario
        .nodes
        .iter()
        .position(|n| n.name == name)
        .map_or(1, |i| i as u32 + 1);
    let peer = scenario
        .nodes
        .iter()
        .find(|n| n.name != name)
        .map(|n| n.name.clone())
        .ok_or_else(|| std::io::Error::other("no peer"))?;
    let store = shared.open_store(name)?;
    let primary: Arc<Mutex<Option<PrimaryHandle>>> = Arc::default();
    let mut store_resource = StoreResource {
        rt: rt.clone(),
        name: name.to_owned(),
        id,
        store: Arc::clone(&store),
        primary: Arc::clone(&primary),
        secondary: None,
        peer: SocketAddr::new(turmoil::lookup(peer.as_str()), REPLICATION_PORT),
        shared: shared.clone(),
    };
    store_resource.serve_secondary().await?;
    let start_delay =
        Duration::from_millis(scenario.cluster.as_ref().map_or(5, |c| c.resource_start_ms));
    let mut source = MemorySource::new();
    source.insert(BOOT_FILE, boot_file(services.tftp_file_bytes));
    let tftp_config = TftpConfig::default()
        .validate()
        .map_err(std::io::Error::other)?;
    let (first, last) = pool_range(scenario, &services);
    let mut dhcp_config = DhcpConfig::new(scenario.vip, Ipv4Addr::new(255, 255, 255, 0));
    dhcp_config.pool = Some(PoolConfig {
        start: first,
        end: last,
        lease_secs: services.lease_secs,
        offer_hold_secs: 30,
        decline_quarantine_secs: 300,
    });
    let primary_source: ironrootd::leaselog::PrimarySource =
        Arc::new(move || lock(&primary).clone());
    let log = Arc::new(StoreLeaseLog::with_primary(store, primary_source));
    Ok(vec![
        Box::new(store_resource),
        Box::new(Task::new("nfs", rt, start_delay, Starter::Idle)),
        Box::new(Task::new(
            "tftp",
            rt,
            start_delay,
            Starter::Tftp(ironroot_tftp::Server::new(tftp_config, source)),
        )),
        Box::new(Task::new(
            "dhcp",
            rt,
            start_delay,
            Starter::Dhcp(Box::new(dhcp_config), log),
        )),
    ])
}

/// The replicated store: secondary until started, primary while started.
struct StoreResource {
    rt: SimRuntime,
    name: String,
    id: u32,
    store: SharedStore,
    primary: Arc<Mutex<Option<PrimaryHandle>>>,
    secondary: Option<tokio::task::JoinHandle<()>>,
    peer: SocketAddr,
    shared: ServicesShared,
}

impl StoreResource {
    /// Accept the primary's connection and apply its entries. The previous
    /// listener may take a moment to go: retry the bind, bounded.
    async fn serve_secondary(&mut self) -> std::io::Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, REPLICATION_PORT));
        let mut tries = 0;
        let listener = loop {
            match self.rt.listen_tcp(addr).await {
                Ok(listener) => break listener,
                Err(error) if tries >= REBIND_TRIES_MAX => return Err(error),
                Err(_) => {
                    tries += 1;
                    self.rt.sleep(Duration::from_millis(1)).await;
                }
            }
        };
        let machine = ReplicationSecondary::new(ReplicationConfig::new(self.id));
        let (events, _) = tokio::sync::mpsc::channel(1);
        self.secondary = Some(tokio::spawn(run_secondary(
            self.rt.clone(),
            Arc::clone(&self.store),
            machine,
            listener,
            DriverConfig::default(),
            events,
        )));
        Ok(())
    }
}

fn failed(resource: &str, operation: &'static str, error: impl std::fmt::Display) -> ResourceError {
    ResourceError::Failed {
        resource: resource.to_owned(),
        operation,
        source: Box::new(std::io::Error::other(error.to_string())),
    }
}

impl Resource for StoreResource {
    fn name(&self) -> &str {
        "store"
    }

    fn start(&mut self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(async move {
            if lock(&self.primary).is_some() {
                return Ok(());
            }
            if let Some(task) = self.secondary.take() {
                task.abort();
            }
            lock(&self.store).promote(self.id, 0);
            let machine = ReplicationPrimary::new(ReplicationConfig::new(self.id));
            let (handle, _events) = spawn_primary(
                self.rt.clone(),
                Arc::clone(&self.store),
                machine,
                self.peer,
                DriverConfig::default(),
            );
            if !self.shared.peer_alive(&self.name) {
                handle
                    .peer_outdated()
                    .await
                    .map_err(|e| failed("store", "start", e))?;
            }
            *lock(&self.primary) = Some(handle);
            Ok(())
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(async move {
            // Dropping the last handle ends the primary driver.
            lock(&self.primary).take();
            lock(&self.store).demote();
            if self.secondary.is_none() {
                self.serve_secondary()
                    .await
                    .map_err(|e| failed("store", "stop", e))?;
            }
            Ok(())
        })
    }

    fn monitor(&mut self) -> BoxFuture<'_, Health> {
        Box::pin(async { Health::Healthy })
    }
}

type SimTftp = Arc<ironroot_tftp::Server<MemorySource>>;

/// What a [`Task`] runs.
enum Starter {
    /// A stand-in that only takes time to start (NFS is not simulated here).
    Idle,
    Tftp(SimTftp),
    Dhcp(Box<DhcpConfig>, Arc<StoreLeaseLog>),
}

/// A service run as a task on the node, aborted on stop.
struct Task {
    name: &'static str,
    rt: SimRuntime,
    start_delay: Duration,
    starter: Starter,
    task: Option<tokio::task::JoinHandle<()>>,
    ended: Arc<AtomicBool>,
}

impl Task {
    fn new(name: &'static str, rt: &SimRuntime, start_delay: Duration, starter: Starter) -> Task {
        Task {
            name,
            rt: rt.clone(),
            start_delay,
            starter,
            task: None,
            ended: Arc::default(),
        }
    }

    async fn spawn(&mut self) -> std::io::Result<()> {
        let ended = Arc::new(AtomicBool::new(false));
        self.ended = Arc::clone(&ended);
        let rt = self.rt.clone();
        let serve: BoxFuture<'static, std::io::Result<()>> = match &self.starter {
            Starter::Idle => Box::pin(std::future::pending()),
            Starter::Tftp(server) => {
                let listener = ironroot_tftp::driver::bind(&rt, server).await?;
                Box::pin(ironroot_tftp::driver::run(rt, Arc::clone(server), listener))
            }
            Starter::Dhcp(config, log) => {
                let server = DhcpServer::new((**config).clone(), MemoryRegistry::new(16))
                    .map_err(std::io::Error::other)?;
                let (log, options) = (Arc::clone(log), DriverOptions::standard(false, None));
                Box::pin(async move {
                    ironroot_dhcp::serve(rt, server, log, options, std::future::pending())
                        .await
                        .map(|_| ())
                })
            }
        };
        self.task = Some(tokio::spawn(async move {
            let result = serve.await;
            if let Err(error) = result {
                tracing::warn!(%error, "service ended");
            }
            ended.store(true, Ordering::Relaxed);
        }));
        Ok(())
    }
}

impl Resource for Task {
    fn name(&self) -> &str {
        self.name
    }

    fn start(&mut self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(async move {
            if self.task.as_ref().is_some_and(|t| !t.is_finished()) {
                return Ok(());
            }
            self.rt.sleep(self.start_delay).await;
            let name = self.name;
            self.spawn().await.map_err(|e| failed(name, "start", e))
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(async move {
            if let Some(task) = self.task.take() {
                task.abort();
                let _ = task.await;
            }
            Ok(())
        })
    }

    fn monitor(&mut self) -> BoxFuture<'_, Health> {
        Box::pin(async move {
            match &self.task {
                Some(_) if self.ended.load(Ordering::Relaxed) => {
                    Health::Failed(format!("{} stopped serving", self.name))
                }
                Some(_) => Health::Healthy,
                None => Health::Failed(format!("{} is not running", self.name)),
            }
        })
    }
}

/// A pool lease a node's store holds at the end of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredLease {
    pub ip: Ipv4Addr,
    pub client: Vec<u8>,
}

/// What the services part of a run produced.
#[derive(Clone, Debug, Default)]
pub struct ServicesTrace {
    pub events: Vec<(Instant, String, ClientEvent)>,
    /// Bound leases of the store that was primary at the end, if any.
    pub primary_leases: Option<(String, Vec<StoredLease>)>,
}

/// Collect the trace once the run is over; `vip_owner` holds the VIP at
/// the end (a dead host's store may still think it is primary).
pub fn collect(shared: &ServicesShared, vip_owner: Option<&str>) -> ServicesTrace {
    let events = std::mem::take(&mut *lock(&shared.events));
    let stores = lock(&shared.stores);
    let primary_leases = stores.iter().find_map(|(node, store)| {
        if Some(node.as_str()) != vip_owner {
            return None;
        }
        let store = lock(store);
        store.epoch()?;
        let leases = store
            .state()
            .pool_leases()
            .into_iter()
            .filter(|lease| lease.state == PoolLeaseState::Bound)
            .map(|lease| StoredLease {
                ip: Ipv4Addr::from(lease.ipv4),
                client: lease.client.clone(),
            })
            .collect();
        Some((node.clone(), leases))
    });
    ServicesTrace {
        events,
        primary_leases,
    }
}

/// The DHCP client key of PXE client `name` (htype 1 + its MAC).
pub fn client_key(mac: [u8; 6]) -> Vec<u8> {
    let mut key = vec![1];
    key.extend_from_slice(&mac);
    key
}
