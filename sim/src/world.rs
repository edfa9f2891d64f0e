//! One simulated run: builds the turmoil world from a scenario and a seed,
//! runs the hosts, applies faults at their times and samples the segment
//! after every step for the checkers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ironroot_net::turmoil_backend::{RemovedWhy, Segment, SegmentEvent, SimRuntime};
use ironroot_net::{Clock, Instant, Runtime, UdpBind, UdpSocket, VipControl, VipSpec};

use crate::cluster::{self, ResourceEvent, Shared};
use crate::scenario::{Fault, FaultKind, Node, Scenario, CLIENT, WITNESS};
use crate::store::{Action, StoreWorld};

/// UDP port of the "who answers the VIP" service on every node.
pub const WHOAMI_PORT: u16 = 7;
const CLIENT_PORT: u16 = 7007;
/// Simulated wall-clock start, pinned so reports never depend on the host.
const EPOCH_SECS: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const TICK: Duration = Duration::from_millis(1);
/// Log lines one run may produce before it stops logging (and says so).
pub const LOG_LINES_MAX: usize = 100_000;

/// One line of the event log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    #[serde(serialize_with = "serialize_instant")]
    pub at: Instant,
    pub host: String,
    pub event: String,
    pub detail: String,
}

fn serialize_instant<S: serde::Serializer>(at: &Instant, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(at.since_origin().as_micros()).unwrap_or(u64::MAX))
}

/// Shared, bounded event log the hosts and the driver append to.
#[derive(Clone, Default)]
pub struct Log {
    lines: Arc<Mutex<Vec<LogLine>>>,
}

impl Log {
    pub fn push(&self, at: Instant, host: &str, event: &str, detail: impl Into<String>) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() < LOG_LINES_MAX {
            lines.push(LogLine {
                at,
                host: host.to_owned(),
                event: event.to_owned(),
                detail: detail.into(),
            });
        }
    }

    fn take(&self) -> Vec<LogLine> {
        std::mem::take(&mut *self.lines.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// What the probing client saw: each change of responder (None = silence).
pub type Transitions = Arc<Mutex<Vec<(Instant, Option<String>)>>>;

/// Everything a run produced, for the checkers and the report.
pub struct RunTrace {
    pub seed: u64,
    pub log: Vec<LogLine>,
    pub transitions: Vec<(Instant, Option<String>)>,
    /// (start, end, holders) of every interval with more than one VIP holder.
    pub dual_owner: Vec<(Instant, Instant, Vec<String>)>,
    /// How often the set of VIP holders changed.
    pub owner_changes: u64,
    pub first_fault: Option<Instant>,
    /// A host's software returned an error or panicked.
    pub host_error: Option<String>,
    /// Resource starts/stops and VIP claims per host (cluster scenarios).
    pub resource_events: Vec<(Instant, String, ResourceEvent)>,
    /// DHCP/TFTP scenarios: what the PXE clients saw, what the stores hold.
    pub services: crate::services::ServicesTrace,
    /// The replicated store's ledger, events and replicas (store scenarios).
    pub store: Option<crate::store::check::StoreTrace>,
}

fn vip_spec(scenario: &Scenario) -> VipSpec {
    let mut spec = VipSpec::new(scenario.vip, 24, "sim0");
    spec.lifetime = scenario.vip_lifetime;
    spec.garp_count = scenario.garp_count;
    spec.garp_interval = scenario.garp_interval;
    spec.probe_wait = scenario.probe_wait;
    spec
}

/// Run `scenario` under `seed` to the end of its duration.
pub fn run(scenario: &Scenario, seed: u64) -> RunTrace {
    let mut builder = turmoil::Builder::new();
    builder
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .simulation_duration(scenario.duration + Duration::from_secs(1))
        .tick_duration(TICK)
        .min_message_latency(scenario.latency_min)
        .max_message_latency(scenario.latency_max)
        .rng_seed(seed);
    let mut sim = builder.build();
    let segment = Segment::new();
    let log = Log::default();
    let transitions: Transitions = Arc::default();
    let shared = Shared::default();
    let store = scenario
        .store
        .as_ref()
        .map(|config| StoreWorld::new(scenario, config, seed));

    match &scenario.cluster {
        None if store.is_some() => {
            if let Some(store) = &store {
                store.add_nodes(&mut sim, &segment, &log, seed);
            }
        }
        Some(section) => {
            for node in &scenario.nodes {
                cluster::add_node(
                    &mut sim,
                    scenario,
                    &node.name,
                    (&segment, &log, &shared),
                    seed,
                );
            }
            if section.witness {
                cluster::add_witness(&mut sim, scenario, &segment, &log, seed);
            }
        }
        None => {
            for node in &scenario.nodes {
                add_node(&mut sim, node, &segment, &log, seed, vip_spec(scenario));
            }
        }
    }
    add_client(&mut sim, scenario, &segment, &log, &transitions, seed);
    crate::pxe::add(&mut sim, scenario, &segment, &log, &shared.services, seed);

    let mut trace = RunTrace {
        seed,
        log: Vec::new(),
        transitions: Vec::new(),
        dual_owner: Vec::new(),
        owner_changes: 0,
        first_fault: None,
        host_error: None,
        resource_events: Vec::new(),
        services: Default::default(),
        store: None,
    };
    let mut world = World {
        sim: &mut sim,
        scenario,
        segment: &segment,
        log: &log,
        shared: &shared,
        store,
    };
    world.drive(&mut trace);
    trace.store = world.store.take().map(StoreWorld::finish);
    trace.log = merge_log(log.take(), segment.events(now_of(&sim)), &sim);
    trace.transitions = transitions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut events = shared
        .resource_events
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    trace.resource_events = std::mem::take(&mut *events);
    drop(events);
    if scenario.services.is_some() {
        let owner = segment
            .holders(scenario.vip, now_of(&sim))
            .first()
            .map(|addr| host_name(&sim, *addr));
        trace.services = crate::services::collect(&shared.services, owner.as_deref());
    }
    trace
}

fn host_name(sim: &turmoil::Sim<'_>, addr: IpAddr) -> String {
    sim.reverse_lookup(addr).unwrap_or_else(|| addr.to_string())
}

fn now_of(sim: &turmoil::Sim<'_>) -> Instant {
    Instant::from_origin(sim.elapsed())
}

/// The running simulation and what its hosts share with the driver.
struct World<'w, 'a> {
    sim: &'w mut turmoil::Sim<'a>,
    scenario: &'w Scenario,
    segment: &'w Segment,
    log: &'w Log,
    shared: &'w Shared,
    store: Option<StoreWorld>,
}

impl World<'_, '_> {
    /// Step the world, applying faults on time and sampling VIP holders.
    fn drive(&mut self, trace: &mut RunTrace) {
        let mut timed: Vec<(Duration, &Fault)> = self
            .scenario
            .faults
            .iter()
            .enumerate()
            .map(|(i, fault)| (fault_time(fault, trace.seed, i), fault))
            .collect();
        timed.sort_by_key(|(at, _)| *at);
        let mut faults = timed.into_iter().peekable();
        let mut holders: Vec<IpAddr> = Vec::new();
        let mut dual_since: Option<Instant> = None;
        loop {
            let now = now_of(self.sim);
            while let Some((_, fault)) = faults.next_if(|(at, _)| *at <= now.since_origin()) {
                trace.first_fault.get_or_insert(now);
                self.apply_fault(fault, now);
            }
            let actions = match &mut self.store {
                Some(store) => store.before_step(now, self.log),
                None => Vec::new(),
            };
            for action in actions {
                self.perform(action, now);
            }
            for target in self.shared.take_fence_requests() {
                self.log
                    .push(now, "sim", "power-switch", format!("turning {target} off"));
                self.kill_host(&target, now);
                self.shared.powered_off(&target);
            }
            let finished = match self.sim.step() {
                Ok(finished) => finished,
                Err(error) => {
                    trace.host_error = Some(error.to_string());
                    true
                }
            };
            let now = now_of(self.sim);
            let current = self.segment.holders(self.scenario.vip, now);
            if current != holders {
                trace.owner_changes += 1;
                holders = current;
            }
            let names = || {
                holders
                    .iter()
                    .map(|h| host_name(self.sim, *h))
                    .collect::<Vec<_>>()
            };
            match (holders.len() > 1, dual_since) {
                (true, None) => dual_since = Some(now),
                (false, Some(since)) => {
                    trace.dual_owner.push((since, now, Vec::new()));
                    dual_since = None;
                }
                _ => {}
            }
            if holders.len() > 1 {
                if let Some(last) = trace.dual_owner.last_mut().filter(|d| d.1 == now) {
                    last.2 = names();
                }
            }
            if finished || now.since_origin() >= self.scenario.duration {
                if let Some(since) = dual_since {
                    trace.dual_owner.push((since, now, names()));
                }
                return;
            }
        }
    }

    fn everyone(&self) -> Vec<String> {
        let witness = self.scenario.cluster.as_ref().is_some_and(|c| c.witness);
        self.scenario
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .chain([CLIENT.to_owned()])
            .chain(witness.then(|| WITNESS.to_owned()))
            .chain(
                self.scenario
                    .services
                    .is_some()
                    .then(|| crate::services::PXE.to_owned()),
            )
            .collect()
    }

    /// Cut or repair the link between two hosts, in turmoil and in the
    /// segment (so ARP probes across a cut go unanswered).
    fn cut(&mut self, a: &str, b: &str, cut: bool) {
        if cut {
            self.sim.partition(a, b);
        } else {
            self.sim.repair(a, b);
        }
        self.segment
            .set_cut(self.sim.lookup(a), self.sim.lookup(b), cut);
    }

    fn perform(&mut self, action: Action, now: Instant) {
        match action {
            Action::Kill(host) => self.kill_host(&host, now),
            Action::Restart(host) => {
                self.log.push(now, "sim", "store.restart", host.clone());
                self.restart_host(&host);
            }
            Action::Hold(a, b) => self.sim.hold(a.as_str(), b.as_str()),
            Action::Release(a, b) => self.sim.release(a.as_str(), b.as_str()),
        }
    }

    /// The host's software starts again with its links healed.
    fn restart_host(&mut self, host: &str) {
        self.shared.powered_on(host);
        for other in self.everyone().iter().filter(|o| **o != host) {
            self.cut(host, other.as_str(), false);
        }
        self.sim.bounce(host);
        if let Some(store) = &mut self.store {
            store.host_restarted(host);
        }
    }

    /// Host death: software gone, addresses gone, every link cut.
    fn kill_host(&mut self, host: &str, now: Instant) {
        if let Some(store) = &mut self.store {
            store.host_killed(host, now);
        }
        self.segment.host_died(self.sim.lookup(host), now);
        self.sim.crash(host);
        self.shared.record(now, host, ResourceEvent::Crashed);
        for other in self.everyone().iter().filter(|o| *o != host) {
            self.cut(host, other.as_str(), true);
        }
    }

    fn apply_fault(&mut self, fault: &Fault, now: Instant) {
        let hosts = &fault.hosts;
        let log = self.log;
        match fault.kind {
            FaultKind::Crash => {
                log.push(
                    now,
                    "sim",
                    "fault.crash",
                    format!("{} (daemon dies, kernel keeps its addresses)", hosts[0]),
                );
                self.sim.crash(hosts[0].as_str());
                self.shared.record(now, &hosts[0], ResourceEvent::Crashed);
            }
            FaultKind::Die => {
                log.push(
                    now,
                    "sim",
                    "fault.die",
                    format!("{} (host death: software gone, links cut)", hosts[0]),
                );
                self.kill_host(&hosts[0], now);
            }
            FaultKind::Restart => {
                log.push(now, "sim", "fault.restart", hosts[0].clone());
                self.restart_host(&hosts[0]);
            }
            FaultKind::Partition => {
                log.push(
                    now,
                    "sim",
                    "fault.partition",
                    format!("{} | {}", hosts[0], hosts[1]),
                );
                self.cut(hosts[0].as_str(), hosts[1].as_str(), true);
            }
            FaultKind::Heal => {
                log.push(
                    now,
                    "sim",
                    "fault.heal",
                    format!("{} | {}", hosts[0], hosts[1]),
                );
                self.cut(hosts[0].as_str(), hosts[1].as_str(), false);
                if let Some(store) = &mut self.store {
                    store.healed(hosts);
                }
            }
            FaultKind::Loss => {
                log.push(
                    now,
                    "sim",
                    "fault.loss",
                    format!("{} | {} rate {}", hosts[0], hosts[1], fault.rate),
                );
                self.sim
                    .set_link_fail_rate(hosts[0].as_str(), hosts[1].as_str(), fault.rate);
            }
            FaultKind::Promote
            | FaultKind::Demote
            | FaultKind::DiskFull
            | FaultKind::DiskFree
            | FaultKind::DiskSlow
            | FaultKind::DiskFast => {
                let actions = match &mut self.store {
                    Some(store) => store.apply_fault(fault, now, log),
                    None => Vec::new(),
                };
                for action in actions {
                    self.perform(action, now);
                }
            }
            FaultKind::Switchover => {
                let delivered = self
                    .shared
                    .admin(&hosts[0], ironroot_cluster::Admin::Switchover);
                log.push(
                    now,
                    "sim",
                    "admin.switchover",
                    format!("to {} (delivered: {delivered})", hosts[0]),
                );
            }
        }
    }
}

fn merge_log(
    mut lines: Vec<LogLine>,
    events: Vec<SegmentEvent>,
    sim: &turmoil::Sim<'_>,
) -> Vec<LogLine> {
    for event in events {
        let (at, host, name, detail) = match event {
            SegmentEvent::Added {
                at,
                host,
                vip,
                expires,
            } => (
                at,
                host,
                "segment.add",
                format!("{vip} valid until {expires}"),
            ),
            SegmentEvent::Removed { at, host, vip, why } => (
                at,
                host,
                "segment.remove",
                format!(
                    "{vip} ({})",
                    match why {
                        RemovedWhy::Released => "released",
                        RemovedWhy::Expired => "expired",
                        RemovedWhy::HostDied => "host died",
                    }
                ),
            ),
            SegmentEvent::Announced { at, host, vip } => {
                (at, host, "segment.garp", vip.to_string())
            }
        };
        lines.push(LogLine {
            at,
            host: host_name(sim, host),
            event: name.to_owned(),
            detail,
        });
    }
    lines.sort_by_key(|line| line.at);
    lines
}

/// When fault `index` happens under `seed`: its time plus a jitter drawn
/// from the seed (stable: the same seed always gives the same times).
fn fault_time(fault: &Fault, seed: u64, index: usize) -> Duration {
    use rand::Rng;
    if fault.jitter.is_zero() {
        return fault.at;
    }
    let jitter_ms = u64::try_from(fault.jitter.as_millis()).unwrap_or(u64::MAX);
    let mut rng = ironroot_net::derive_rng(seed, &format!("fault/{index}"));
    fault.at + Duration::from_millis(rng.gen_range(0..=jitter_ms))
}

pub(crate) fn host_seed(seed: u64, name: &str, incarnation: u64) -> u64 {
    use rand::RngCore;
    ironroot_net::derive_rng(seed, &format!("{name}/{incarnation}")).next_u64()
}

fn add_node(
    sim: &mut turmoil::Sim<'_>,
    node: &Node,
    segment: &Segment,
    log: &Log,
    seed: u64,
    spec: VipSpec,
) {
    let incarnation = Arc::new(AtomicU64::new(0));
    let (node, segment, log) = (node.clone(), segment.clone(), log.clone());
    let name = node.name.clone();
    sim.host(name.as_str(), move || {
        let (node, segment, log, spec) = (node.clone(), segment.clone(), log.clone(), spec.clone());
        let host_seed = host_seed(
            seed,
            &node.name,
            incarnation.fetch_add(1, Ordering::Relaxed),
        );
        async move {
            let rt = SimRuntime::start(segment, &node.name, host_seed).await?;
            log.push(
                rt.now(),
                &node.name,
                "node.start",
                format!("address {}", rt.host_addr()),
            );
            tokio::spawn(serve_whoami(rt.clone(), node.name.clone()));
            if let Some(at) = node.claim_at {
                rt.sleep_until(Instant::from_origin(at)).await;
                hold_vip(&rt, &spec, &log, &node.name).await?;
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });
}

/// Claim the VIP and keep renewing it, as a healthy daemon does.
async fn hold_vip(rt: &SimRuntime, spec: &VipSpec, log: &Log, name: &str) -> std::io::Result<()> {
    let vip = rt.vip();
    vip.claim(spec).await.map_err(std::io::Error::other)?;
    log.push(
        rt.now(),
        name,
        "vip.claim",
        format!("{} lifetime {:?}", spec.addr, spec.lifetime),
    );
    loop {
        rt.sleep(spec.lifetime / 3).await;
        if vip.renew(spec).await.is_err() {
            vip.claim(spec).await.map_err(std::io::Error::other)?;
            log.push(rt.now(), name, "vip.reclaim", spec.addr.to_string());
        }
    }
}

/// Answer every datagram with this node's name and the probe's text, from
/// the address it was sent to (the VIP).
pub(crate) async fn serve_whoami(rt: SimRuntime, name: String) -> std::io::Result<()> {
    let socket = rt.bind_udp(UdpBind::any(WHOAMI_PORT)).await?;
    let mut buf = [0u8; 512];
    loop {
        let meta = socket.recv_from(&mut buf).await?;
        let probe = String::from_utf8_lossy(&buf[..meta.len]);
        let reply = format!("{name} {probe}");
        socket
            .send_from(reply.as_bytes(), meta.peer, meta.local)
            .await?;
    }
}

fn add_client(
    sim: &mut turmoil::Sim<'_>,
    scenario: &Scenario,
    segment: &Segment,
    log: &Log,
    transitions: &Transitions,
    seed: u64,
) {
    let (segment, log, transitions) = (segment.clone(), log.clone(), Arc::clone(transitions));
    let (vip, interval, end) = (
        scenario.vip,
        scenario.probe_interval,
        Instant::from_origin(scenario.duration),
    );
    sim.client(CLIENT, async move {
        let rt = SimRuntime::start(segment, CLIENT, host_seed(seed, CLIENT, 0)).await?;
        let socket = rt.bind_udp(UdpBind::any(CLIENT_PORT)).await?;
        probe_loop(&rt, &socket, vip, interval, end, &log, &transitions).await;
        Ok(())
    });
}

/// Probe the VIP every `interval`; record each change of who answers.
async fn probe_loop(
    rt: &SimRuntime,
    socket: &impl UdpSocket,
    vip: Ipv4Addr,
    interval: Duration,
    end: Instant,
    log: &Log,
    transitions: &Transitions,
) {
    let target = SocketAddr::from((vip, WHOAMI_PORT));
    let mut last: Option<Option<String>> = None;
    let mut seq: u64 = 0;
    let mut buf = [0u8; 512];
    while rt.now() < end {
        seq += 1;
        let deadline = rt.now() + interval;
        let expected = seq.to_string();
        let mut responder = None;
        if socket.send_to(expected.as_bytes(), target).await.is_ok() {
            while responder.is_none() {
                let Ok(Ok(meta)) =
                    ironroot_net::timeout(rt, deadline - rt.now(), socket.recv_from(&mut buf))
                        .await
                else {
                    break;
                };
                let text = String::from_utf8_lossy(&buf[..meta.len]).into_owned();
                if let Some((host, probe)) = text.split_once(' ').filter(|(_, p)| *p == expected) {
                    let _ = probe;
                    responder = Some(host.to_owned());
                }
            }
        }
        if last.as_ref() != Some(&responder) {
            let detail = responder
                .as_deref()
                .map_or("no answer".to_owned(), |h| format!("from {h}"));
            log.push(rt.now(), CLIENT, "probe", detail);
            transitions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((rt.now(), responder.clone()));
            last = Some(responder);
        }
        rt.sleep_until(deadline).await;
    }
}
