//! Cluster scenarios: the real cluster manager (`ironroot-cluster`) runs on
//! both nodes and, where configured, on a witness host. Resources are
//! stand-ins that take simulated time to start; fencing is a simulated power
//! switch that the driver carries out as a host death.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironroot_cluster::driver::FenceError;
use ironroot_cluster::{
    run_node, run_witness, Admin, ClusterEvent, ClusterFile, EventKind, Fence,
    MemoryIncarnationStore, MemoryOutdatedStore,
};
use ironroot_net::resource::BoxFuture;
use ironroot_net::turmoil_backend::{Segment, SimRuntime};
use ironroot_net::{Clock, Health, Instant, Resource, ResourceError};
use tokio::sync::mpsc;

use crate::scenario::{ClusterSection, Scenario, WITNESS};
use crate::world::{host_seed, serve_whoami, Log};

/// The services a control node runs, in start order.
pub const RESOURCES: [&str; 4] = ["store", "nfs", "tftp", "dhcp"];
const HEARTBEAT_PORT: u16 = 694;
const WITNESS_PORT: u16 = 695;
/// Cluster events buffered per node before the recorder drops them.
const EVENTS_MAX: usize = 4096;
const KEY_HEX: &str = "69726f6e726f6f742d73696d2d6b65792d30303031";

/// What the resource-order checker needs to know, per host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResourceEvent {
    Started(String),
    Stopped(String),
    VipClaimed,
    VipReleased,
    /// The host's software stopped (crash, death): its resources are gone.
    Crashed,
}

/// State shared by the driver and the simulated hosts of one run.
#[derive(Clone, Default)]
pub struct Shared {
    /// Nodes the power switch was asked to turn off, not yet carried out.
    pub fence_requests: Arc<Mutex<Vec<String>>>,
    /// Nodes the power switch has turned off (the driver adds them).
    pub powered_off: Arc<Mutex<std::collections::BTreeSet<String>>>,
    /// Operator command channels of the running nodes.
    pub admins: Arc<Mutex<BTreeMap<String, mpsc::Sender<Admin>>>>,
    pub resource_events: Arc<Mutex<Vec<(Instant, String, ResourceEvent)>>>,
    /// DHCP/TFTP scenarios: stores, peer liveness, what the PXE clients saw.
    pub services: crate::services::ServicesShared,
}

impl Shared {
    pub fn record(&self, at: Instant, host: &str, event: ResourceEvent) {
        let mut events = self
            .resource_events
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        events.push((at, host.to_owned(), event));
    }

    /// Fence requests made since the last call.
    pub fn take_fence_requests(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .fence_requests
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// The driver carried out a power-off.
    pub fn powered_off(&self, node: &str) {
        let mut off = self.powered_off.lock().unwrap_or_else(|p| p.into_inner());
        off.insert(node.to_owned());
    }

    /// A restarted node is powered on again.
    pub fn powered_on(&self, node: &str) {
        let mut off = self.powered_off.lock().unwrap_or_else(|p| p.into_inner());
        off.remove(node);
    }

    fn is_off(&self, node: &str) -> bool {
        let off = self.powered_off.lock().unwrap_or_else(|p| p.into_inner());
        off.contains(node)
    }

    /// Deliver an operator command to `node`; false if it is not running.
    pub fn admin(&self, node: &str, command: Admin) -> bool {
        let admins = self.admins.lock().unwrap_or_else(|p| p.into_inner());
        admins
            .get(node)
            .is_some_and(|tx| tx.try_send(command).is_ok())
    }
}

/// The cluster file both nodes and the witness read, with the turmoil
/// addresses of the hosts (looked up from inside a host).
fn cluster_file(
    section: &ClusterSection,
    scenario: &Scenario,
) -> Result<ClusterFile, toml::de::Error> {
    let mut text = format!(
        "cluster_id = 1\nkey_hex = \"{KEY_HEX}\"\nunsafe_unfenced = {}\n",
        section.unsafe_unfenced
    );
    for (i, node) in scenario.nodes.iter().enumerate() {
        let addr = turmoil::lookup(node.name.as_str());
        text += &format!(
            "[[nodes]]\nname = \"{}\"\nid = {}\nlinks = [\"{addr}:{HEARTBEAT_PORT}\"]\n",
            node.name,
            i + 1
        );
    }
    if section.witness {
        let addr = turmoil::lookup(WITNESS);
        text += &format!("[witness]\naddr = \"{addr}:{WITNESS_PORT}\"\n");
        if let Some(lease) = section.lease_ms {
            text += &format!("lease_ms = {lease}\n");
        }
    }
    if section.fencing {
        text += "[fencing]\ncommand = [\"sim-power-switch\", \"off\", \"{node}\"]\n";
        if let Some(delay) = section.standby_delay_ms {
            text += &format!("standby_delay_ms = {delay}\n");
        }
    }
    text += "[timing]\n";
    for (key, value) in [
        ("interval_ms", section.interval_ms),
        ("warn_ms", section.warn_ms),
        ("dead_ms", section.dead_ms),
        ("initial_dead_ms", section.initial_dead_ms),
        ("clock_margin_ms", section.clock_margin_ms),
    ] {
        if let Some(value) = value {
            text += &format!("{key} = {value}\n");
        }
    }
    text += &format!(
        "[vip]\naddr = \"{}\"\nprefix_len = 24\ninterface = \"sim0\"\nlifetime_ms = {}\ngarp_count = {}\ngarp_interval_ms = {}\nprobe_wait_ms = {}\n",
        scenario.vip,
        scenario.vip_lifetime.as_millis(),
        scenario.garp_count,
        scenario.garp_interval.as_millis(),
        scenario.probe_wait.as_millis()
    );
    toml::from_str(&text)
}

/// A service stand-in: starting takes `start_delay` of simulated time.
struct SimResource {
    name: &'static str,
    rt: SimRuntime,
    start_delay: Duration,
}

impl Resource for SimResource {
    fn name(&self) -> &str {
        self.name
    }

    fn start(&mut self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(async move {
            self.rt.sleep(self.start_delay).await;
            Ok(())
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(async { Ok(()) })
    }

    fn monitor(&mut self) -> BoxFuture<'_, Health> {
        Box::pin(async { Health::Healthy })
    }
}

/// The simulated power switch: a request is carried out by the driver
/// between steps (host death of the target), and the fence succeeds only
/// once the target is really off.
struct PowerSwitch {
    rt: SimRuntime,
    shared: Shared,
    fails: bool,
}

/// How long the switch takes at most before it reports failure.
const POWER_OFF_TIMEOUT: Duration = Duration::from_secs(2);

impl Fence for PowerSwitch {
    fn fence(&self, node: &str) -> BoxFuture<'_, Result<(), FenceError>> {
        let node = node.to_owned();
        Box::pin(async move {
            if self.fails {
                return Err(FenceError::Refused(node));
            }
            self.shared
                .fence_requests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(node.clone());
            let deadline = self.rt.now() + POWER_OFF_TIMEOUT;
            while !self.shared.is_off(&node) {
                if self.rt.now() >= deadline {
                    return Err(FenceError::Refused(node));
                }
                self.rt.sleep(Duration::from_millis(1)).await;
            }
            Ok(())
        })
    }
}

/// Register control node `name` running the cluster manager.
pub fn add_node(
    sim: &mut turmoil::Sim<'_>,
    scenario: &Scenario,
    name: &str,
    (segment, log, shared): (&Segment, &Log, &Shared),
    seed: u64,
) {
    let section = scenario.cluster.clone().unwrap_or_default();
    let (scenario, segment, log, shared) = (
        scenario.clone(),
        segment.clone(),
        log.clone(),
        shared.clone(),
    );
    let incarnations = MemoryIncarnationStore::new();
    let starts = Arc::new(AtomicU64::new(0));
    let host = name.to_owned();
    sim.host(name, move || {
        let (scenario, section, segment, log, shared) = (
            scenario.clone(),
            section.clone(),
            segment.clone(),
            log.clone(),
            shared.clone(),
        );
        let (name, incarnations) = (host.clone(), incarnations.clone());
        let seed = host_seed(seed, &name, starts.fetch_add(1, Ordering::Relaxed));
        async move {
            let rt = SimRuntime::start(segment, &name, seed).await?;
            let config = cluster_file(&section, &scenario)?.validate(&name)?;
            tokio::spawn(serve_whoami(rt.clone(), name.clone()));
            let (events_tx, events_rx) = mpsc::channel(EVENTS_MAX);
            tokio::spawn(record_events(
                events_rx,
                name.clone(),
                log.clone(),
                shared.clone(),
            ));
            let (admin_tx, admin_rx) = mpsc::channel(8);
            shared
                .admins
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.clone(), admin_tx);
            let resources: Vec<Box<dyn Resource>> = if scenario.services.is_some() {
                crate::services::node_resources(&rt, &scenario, &name, &shared.services).await?
            } else {
                RESOURCES
                    .iter()
                    .map(|res| {
                        let start_delay = Duration::from_millis(section.resource_start_ms);
                        Box::new(SimResource {
                            name: res,
                            rt: rt.clone(),
                            start_delay,
                        }) as Box<dyn Resource>
                    })
                    .collect()
            };
            let fence = PowerSwitch {
                rt: rt.clone(),
                shared: shared.clone(),
                fails: section.fence_fails,
            };
            let hooks = ironroot_cluster::driver::Hooks {
                events: Some(events_tx),
                admin: Some(admin_rx),
                peer_current: None,
            };
            run_node(rt, config, incarnations, resources, fence, hooks).await?;
            Ok(())
        }
    });
}

/// Register the witness host.
pub fn add_witness(
    sim: &mut turmoil::Sim<'_>,
    scenario: &Scenario,
    segment: &Segment,
    log: &Log,
    seed: u64,
) {
    let section = scenario.cluster.clone().unwrap_or_default();
    let (scenario, segment, log) = (scenario.clone(), segment.clone(), log.clone());
    let outdated = MemoryOutdatedStore::default();
    sim.host(WITNESS, move || {
        let (scenario, section, segment, log, outdated) = (
            scenario.clone(),
            section.clone(),
            segment.clone(),
            log.clone(),
            outdated.clone(),
        );
        async move {
            let rt = SimRuntime::start(segment, WITNESS, host_seed(seed, WITNESS, 0)).await?;
            let config = cluster_file(&section, &scenario)?.validate_witness()?;
            log.push(
                rt.now(),
                WITNESS,
                "witness.start",
                format!("lease {:?}", config.lease),
            );
            run_witness(rt, config, outdated).await?;
            Ok(())
        }
    });
}

/// Copy a node's cluster events into the log and the checker's record.
async fn record_events(
    mut events: mpsc::Receiver<ClusterEvent>,
    host: String,
    log: Log,
    shared: Shared,
) {
    while let Some(event) = events.recv().await {
        let recorded = match &event.kind {
            EventKind::ResourceStarted { resource } => {
                Some(ResourceEvent::Started(resource.clone()))
            }
            EventKind::ResourceStopped { resource } => {
                Some(ResourceEvent::Stopped(resource.clone()))
            }
            EventKind::VipClaimed => Some(ResourceEvent::VipClaimed),
            EventKind::VipReleased => Some(ResourceEvent::VipReleased),
            _ => None,
        };
        if let Some(recorded) = recorded {
            shared.record(event.at, &host, recorded);
        }
        match &event.kind {
            EventKind::PeerAlive { .. } => shared.services.note_peer(&host, true),
            EventKind::PeerDead => shared.services.note_peer(&host, false),
            _ => {}
        }
        if !matches!(
            event.kind,
            EventKind::Dropped { .. } | EventKind::LeaseGranted { .. }
        ) {
            log.push(event.at, &host, "cluster", format!("{:?}", event.kind));
        }
    }
}
