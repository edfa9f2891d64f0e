//! Store scenarios: two nodes run the real replicated store
//! (`ironroot-store`) and its replication driver over simulated TCP, with
//! roles scripted by the scenario (`promote`/`demote` faults; a split-brain
//! winner that is not the primary swaps roles, as an operator would), a
//! writer on the primary, and disk faults: crashes at an exact storage
//! operation with a torn tail, a full disk, a slow disk.
//!
//! A slow fsync is modelled as a stall of the node's links for
//! `slow_sync_ms` per sync: the `Storage` trait is synchronous, so a disk
//! cannot make a simulated thread wait; holding the node's traffic delays
//! its acknowledgements exactly as a blocked fsync would.

pub mod check;
pub mod config;
pub mod node;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironroot_net::turmoil_backend::Segment;
use ironroot_net::Instant;
use ironroot_store::replication::driver::{PrimaryHandle, SharedStore};
use ironroot_store::replication::Event;
use ironroot_store::storage::MemStorage;
use ironroot_store::store::Store;
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;

use self::check::{Acked, ResyncMeasure, StoreTrace, WRITE_ERRORS_KEPT};
use self::config::StoreFile;
use crate::scenario::{Fault, FaultKind, Scenario};
use crate::world::Log;

/// A node's scripted role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Secondary,
}

/// Longest a node stays armed to crash before it is killed anyway (it did
/// no storage operation in time).
const ARMED_MAX: Duration = Duration::from_millis(300);
/// Longest stall a slow disk builds up.
const STALL_MAX: Duration = Duration::from_secs(10);
/// Role swaps after split brains, at most.
const SWAPS_MAX: u32 = 4;
/// Notable replication events kept.
const EVENTS_MAX: usize = 10_000;
/// Acknowledged writes kept (far above what a run makes).
const LEDGER_MAX: usize = 1_000_000;

#[derive(Default)]
struct Inner {
    roles: BTreeMap<String, Role>,
    stores: BTreeMap<String, SharedStore>,
    handles: BTreeMap<String, PrimaryHandle>,
    trace: StoreTrace,
    next_write: u64,
    swap_requests: Vec<String>,
    /// Nodes a primary recorded Outdated (the witness's record): never
    /// promoted until a resync brought them back in sync.
    outdated: BTreeSet<String>,
}

/// State shared by the driver and the simulated store nodes.
#[derive(Clone, Default)]
pub struct StoreShared {
    inner: Arc<Mutex<Inner>>,
}

impl StoreShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn role(&self, node: &str) -> Role {
        self.lock()
            .roles
            .get(node)
            .copied()
            .unwrap_or(Role::Secondary)
    }

    fn set_role(&self, node: &str, role: Role) {
        self.lock().roles.insert(node.to_owned(), role);
    }

    pub fn set_store(&self, node: &str, store: Option<SharedStore>) {
        let mut inner = self.lock();
        match store {
            Some(store) => inner.stores.insert(node.to_owned(), store),
            None => inner.stores.remove(node),
        };
    }

    pub fn set_handle(&self, node: &str, handle: Option<PrimaryHandle>) {
        let mut inner = self.lock();
        match handle {
            Some(handle) => inner.handles.insert(node.to_owned(), handle),
            None => inner.handles.remove(node),
        };
    }

    pub fn next_write(&self) -> u64 {
        let mut inner = self.lock();
        inner.next_write += 1;
        inner.trace.writes += 1;
        inner.next_write
    }

    pub fn acked(&self, acked: Acked) {
        let mut inner = self.lock();
        if inner.trace.ledger.len() < LEDGER_MAX {
            inner.trace.ledger.push(acked);
        }
    }

    /// A write got its answer after `waited`.
    pub fn answered(&self, id: &str, waited: Duration) {
        let mut inner = self.lock();
        let longest = &mut inner.trace.longest_write_wait;
        if longest.as_ref().is_none_or(|(_, w)| waited > *w) {
            *longest = Some((id.to_owned(), waited));
        }
    }

    pub fn write_failed(&self, message: String) {
        let mut inner = self.lock();
        inner.trace.write_errors += 1;
        if inner.trace.write_error_samples.len() < WRITE_ERRORS_KEPT {
            inner.trace.write_error_samples.push(message);
        }
    }

    pub fn event(&self, at: Instant, node: &str, event: Event) {
        let mut inner = self.lock();
        if inner.trace.events.len() < EVENTS_MAX {
            inner.trace.events.push((at, node.to_owned(), event));
        }
    }

    /// The primary recorded `node` Outdated (`true`) or saw it in sync.
    pub fn set_outdated(&self, node: &str, outdated: bool) {
        let mut inner = self.lock();
        if outdated {
            inner.outdated.insert(node.to_owned());
        } else {
            inner.outdated.remove(node);
        }
    }

    fn is_outdated(&self, node: &str) -> bool {
        self.lock().outdated.contains(node)
    }

    pub fn request_swap(&self, node: &str) {
        self.lock().swap_requests.push(node.to_owned());
    }

    pub fn opened(&self, node: &str, torn_bytes: u64, corrupt_bytes: u64) {
        let mut inner = self.lock();
        inner.trace.opens += 1;
        inner.trace.torn_bytes_cut += torn_bytes;
        if corrupt_bytes > 0 {
            inner
                .trace
                .corrupt_on_open
                .push((node.to_owned(), corrupt_bytes));
        }
    }
}

/// What the world must do to the simulation for the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Kill(String),
    Restart(String),
    Hold(String, String),
    Release(String, String),
}

#[derive(Clone, Debug)]
struct PlannedCrash {
    at: Duration,
    host: String,
    ops: u64,
    down_for: Duration,
}

#[derive(Default)]
struct SlowDisk {
    on: bool,
    syncs_seen: u64,
    held_until: Option<Instant>,
}

/// The store side of one run, driven between simulation steps.
pub struct StoreWorld {
    config: StoreFile,
    pub shared: StoreShared,
    nodes: Vec<String>,
    disks: BTreeMap<String, Arc<MemStorage>>,
    plan: Vec<PlannedCrash>,
    next_crash: usize,
    armed: Option<(String, Instant, Duration)>,
    restarts: Vec<(Instant, String)>,
    /// (when, dead primary) of failovers to consider.
    failovers: Vec<(Instant, String)>,
    down: BTreeSet<String>,
    slow: BTreeMap<String, SlowDisk>,
    rng: ChaCha8Rng,
    swaps: u32,
    resync: Option<ResyncMeasure>,
}

impl StoreWorld {
    pub fn new(scenario: &Scenario, config: &StoreFile, seed: u64) -> StoreWorld {
        let shared = StoreShared::default();
        let nodes: Vec<String> = scenario.nodes.iter().map(|n| n.name.clone()).collect();
        for node in &nodes {
            let role = if *node == config.primary {
                Role::Primary
            } else {
                Role::Secondary
            };
            shared.set_role(node, role);
        }
        let mut rng = ironroot_net::derive_rng(seed, "store-faults");
        let plan = plan_crashes(config, &nodes, &mut rng);
        StoreWorld {
            config: config.clone(),
            shared,
            disks: nodes
                .iter()
                .map(|n| (n.clone(), Arc::new(MemStorage::new())))
                .collect(),
            slow: nodes
                .iter()
                .map(|n| (n.clone(), SlowDisk::default()))
                .collect(),
            nodes,
            plan,
            next_crash: 0,
            armed: None,
            restarts: Vec::new(),
            failovers: Vec::new(),
            down: BTreeSet::new(),
            rng,
            swaps: 0,
            resync: None,
        }
    }

    fn peer_of(&self, node: &str) -> String {
        self.nodes
            .iter()
            .find(|n| *n != node)
            .cloned()
            .unwrap_or_default()
    }

    /// Register the store nodes' software.
    pub fn add_nodes(&self, sim: &mut turmoil::Sim<'_>, segment: &Segment, log: &Log, seed: u64) {
        for (i, name) in self.nodes.iter().enumerate() {
            let ctx = node::NodeContext {
                name: name.clone(),
                peer: self.peer_of(name),
                node_id: u32::try_from(i + 1).unwrap_or(u32::MAX),
                config: self.config.clone(),
                segment: segment.clone(),
                log: log.clone(),
                shared: self.shared.clone(),
                disk: Arc::clone(&self.disks[name]),
            };
            node::add_node(sim, ctx, seed);
        }
    }

    /// The host died: its software and its unsynced bytes are gone.
    pub fn host_killed(&mut self, host: &str, now: Instant) {
        let Some(disk) = self.disks.get(host) else {
            return;
        };
        if let Some(after) = self.config.failover_ms {
            if self.shared.role(host) == Role::Primary {
                self.failovers
                    .push((now + Duration::from_millis(after), host.to_owned()));
            }
        }
        let torn = self.config.torn_tail.then(|| self.rng.next_u64());
        disk.crash(torn);
        self.shared.set_store(host, None);
        self.shared.set_handle(host, None);
        self.down.insert(host.to_owned());
        self.shared.lock().trace.crashes += 1;
        if self.armed.as_ref().is_some_and(|(h, _, _)| h == host) {
            self.armed = None;
        }
    }

    pub fn host_restarted(&mut self, host: &str) {
        self.down.remove(host);
    }

    /// Work due before the next step.
    pub fn before_step(&mut self, now: Instant, log: &Log) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.armed.is_none() {
            if let Some(crash) = self
                .plan
                .get(self.next_crash)
                .filter(|c| c.at <= now.since_origin())
            {
                let crash = crash.clone();
                self.next_crash += 1;
                if !self.down.contains(&crash.host) {
                    self.disks[&crash.host].fail_after(crash.ops);
                    log.push(
                        now,
                        "sim",
                        "store.arm-crash",
                        format!(
                            "{} dies at its storage operation {}",
                            crash.host,
                            crash.ops + 1
                        ),
                    );
                    self.armed = Some((crash.host, now, crash.down_for));
                }
            }
        }
        if let Some((host, since, down_for)) = self.armed.clone() {
            let gone = self.disks[&host].is_gone();
            if gone || now >= since + ARMED_MAX {
                log.push(
                    now,
                    "sim",
                    "store.crash",
                    format!(
                        "{host} dies {}",
                        if gone {
                            "mid-write (device gone)"
                        } else {
                            "idle"
                        }
                    ),
                );
                self.restarts.push((now + down_for, host.clone()));
                actions.push(Action::Kill(host));
            }
        }
        let due: Vec<String> = self
            .restarts
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, h)| h.clone())
            .collect();
        self.restarts.retain(|(at, _)| *at > now);
        actions.extend(due.into_iter().map(Action::Restart));
        self.swap_roles(now, log);
        self.fail_over(now, log);
        actions.extend(self.slow_disks(now));
        actions
    }

    /// Promote the peer of a primary that stayed dead, unless the peer is
    /// Outdated (then the service waits for the primary to come back).
    fn fail_over(&mut self, now: Instant, log: &Log) {
        let due: Vec<String> = self
            .failovers
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, h)| h.clone())
            .collect();
        self.failovers.retain(|(at, _)| *at > now);
        for dead in due {
            let peer = self.peer_of(&dead);
            if !self.down.contains(&dead) || self.down.contains(&peer) {
                continue;
            }
            if self.shared.is_outdated(&peer) {
                log.push(
                    now,
                    "sim",
                    "store.failover",
                    format!("refused: {peer} is Outdated, waiting for {dead}"),
                );
                continue;
            }
            log.push(
                now,
                "sim",
                "store.failover",
                format!("{peer} becomes primary, {dead} will restart as secondary"),
            );
            self.shared.set_role(&dead, Role::Secondary);
            self.shared.set_role(&peer, Role::Primary);
        }
    }

    fn swap_roles(&mut self, now: Instant, log: &Log) {
        let requests = std::mem::take(&mut self.shared.lock().swap_requests);
        for node in requests {
            let peer = self.peer_of(&node);
            if self.swaps >= SWAPS_MAX || self.down.contains(&peer) {
                continue;
            }
            self.swaps += 1;
            log.push(
                now,
                "sim",
                "store.swap",
                format!("the split brain's winner {peer} becomes primary, {node} secondary"),
            );
            self.shared.set_role(&node, Role::Secondary);
            self.shared.set_role(&peer, Role::Primary);
        }
    }

    fn slow_disks(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let per_sync = Duration::from_millis(self.config.slow_sync_ms);
        for node in self.nodes.clone() {
            let syncs = self.disks[&node].syncs();
            let peer = self.peer_of(&node);
            let slow = self.slow.get_mut(&node).expect("every node has a disk");
            let new = syncs.saturating_sub(slow.syncs_seen);
            slow.syncs_seen = syncs;
            if slow.on && new > 0 {
                let start = slow.held_until.unwrap_or(now).max(now);
                let stall = per_sync.saturating_mul(u32::try_from(new).unwrap_or(u32::MAX));
                let until = (start + stall).min(now + STALL_MAX);
                if slow.held_until.is_none() {
                    actions.push(Action::Hold(node.clone(), peer.clone()));
                }
                slow.held_until = Some(until);
            }
            if slow.held_until.is_some_and(|until| now >= until) {
                slow.held_until = None;
                actions.push(Action::Release(node.clone(), peer));
            }
        }
        actions
    }

    /// A store fault from the scenario.
    pub fn apply_fault(&mut self, fault: &Fault, now: Instant, log: &Log) -> Vec<Action> {
        let host = fault.hosts[0].as_str();
        let disk = &self.disks[host];
        let detail = match fault.kind {
            FaultKind::Promote => {
                self.shared.set_role(host, Role::Primary);
                "becomes primary".to_owned()
            }
            FaultKind::Demote => {
                self.shared.set_role(host, Role::Secondary);
                "becomes secondary".to_owned()
            }
            FaultKind::DiskFull => {
                let quota = disk.used_bytes() + self.config.full_slack_bytes;
                disk.set_quota(Some(quota));
                format!("disk full at {quota} bytes")
            }
            FaultKind::DiskFree => {
                disk.set_quota(None);
                "disk space freed".to_owned()
            }
            FaultKind::DiskSlow => {
                let slow = self.slow.get_mut(host).expect("every node has a disk");
                slow.on = true;
                slow.syncs_seen = disk.syncs();
                format!("every fsync takes {} ms", self.config.slow_sync_ms)
            }
            FaultKind::DiskFast => {
                let slow = self.slow.get_mut(host).expect("every node has a disk");
                slow.on = false;
                "disk fast again".to_owned()
            }
            _ => return Vec::new(),
        };
        log.push(now, "sim", "store.fault", format!("{host} {detail}"));
        let mut actions = Vec::new();
        if fault.kind == FaultKind::DiskFast {
            let slow = self.slow.get_mut(host).expect("every node has a disk");
            if slow.held_until.take().is_some() {
                actions.push(Action::Release(host.to_owned(), self.peer_of(host)));
            }
        }
        actions
    }

    /// The first heal between the nodes: measure what the behind node lacks.
    pub fn healed(&mut self, hosts: &[String]) {
        let is_link = hosts.iter().all(|h| self.nodes.contains(h));
        if !is_link || self.resync.is_some() || !self.config.expect.resync_exact {
            return;
        }
        let inner = self.shared.lock();
        let Some((primary, handle)) = inner.handles.iter().next() else {
            return;
        };
        let behind = self.peer_of(primary);
        let (Some(p), Some(b)) = (inner.stores.get(primary), inner.stores.get(&behind)) else {
            return;
        };
        let (p, b) = (
            p.lock().unwrap_or_else(|e| e.into_inner()),
            b.lock().unwrap_or_else(|e| e.into_inner()),
        );
        let missing_objects = p
            .objects()
            .ids()
            .filter(|id| !b.objects().contains(id))
            .count() as u64;
        let measure = ResyncMeasure {
            primary: primary.clone(),
            missing_entries: p.state().last_seq().saturating_sub(b.state().last_seq()),
            missing_objects,
            at_heal: handle.metrics(),
            at_end: None,
        };
        drop((p, b));
        drop(inner);
        self.resync = Some(measure);
    }

    /// Read both replicas back and hand over the trace.
    pub fn finish(self) -> StoreTrace {
        let mut inner = self.shared.lock();
        let mut trace = std::mem::take(&mut inner.trace);
        if let Some(mut resync) = self.resync {
            resync.at_end = inner
                .handles
                .get(&resync.primary)
                .map(PrimaryHandle::metrics);
            trace.resync = Some(resync);
        }
        for node in &self.nodes {
            let replica = match inner.stores.get(node) {
                Some(store) => {
                    check::inspect(node, &store.lock().unwrap_or_else(|p| p.into_inner()))
                }
                None => {
                    // Down at the end: what a restart would find.
                    let disk: Arc<dyn ironroot_store::storage::Storage> =
                        Arc::clone(&self.disks[node]) as _;
                    match Store::open(disk) {
                        Ok((store, _)) => check::inspect(node, &store),
                        Err(error) => check::Replica {
                            node: node.clone(),
                            open_error: Some(error.to_string()),
                            ..check::Replica::default()
                        },
                    }
                }
            };
            trace.replicas.push(replica);
        }
        trace
    }
}

fn plan_crashes(config: &StoreFile, nodes: &[String], rng: &mut ChaCha8Rng) -> Vec<PlannedCrash> {
    let Some([from, to]) = config.crash_window_ms else {
        return Vec::new();
    };
    let [down_min, down_max] = config.restart_after_ms;
    let mut plan: Vec<PlannedCrash> = (0..config.random_crashes)
        .map(|_| PlannedCrash {
            at: Duration::from_millis(rng.gen_range(from..=to)),
            host: nodes[rng.gen_range(0..nodes.len())].clone(),
            ops: rng.gen_range(0..=config.crash_ops_max),
            down_for: Duration::from_millis(rng.gen_range(down_min..=down_max)),
        })
        .collect();
    plan.sort_by_key(|c| c.at);
    plan
}
