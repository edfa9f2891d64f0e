//! Scenario files: what world to build, which faults to apply when, and
//! what must hold. Parsed with unknown keys rejected, then validated into a
//! [`Scenario`] whose errors name the key path.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::store::config::StoreFile;

/// A scenario file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub name: String,
    pub description: String,
    pub duration_ms: u64,
    /// Seeds `sim check` runs (default 16).
    #[serde(default)]
    pub check_seeds: Option<u64>,
    /// Seeds that once failed; `sim check` runs them too.
    #[serde(default)]
    pub regression_seeds: Vec<u64>,
    pub network: NetworkFile,
    pub nodes: Vec<NodeFile>,
    #[serde(default)]
    pub faults: Vec<FaultFile>,
    /// Run the cluster manager on the nodes (instead of scripted claims).
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
    /// Run the replicated store on the nodes (primary/secondary roles
    /// scripted by faults) with a writer on the primary.
    #[serde(default)]
    pub store: Option<StoreFile>,
    pub probe: ProbeFile,
    pub expect: ExpectFile,
    /// Real DHCP and TFTP on the nodes, simulated PXE clients.
    #[serde(default)]
    pub services: Option<crate::services::ServicesFile>,
}

/// The cluster manager's settings for a scenario; unset values take the
/// cluster crate's defaults.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Run a witness host (the third vote).
    #[serde(default)]
    pub witness: bool,
    /// Two-node mode with a (simulated) power switch.
    #[serde(default)]
    pub fencing: bool,
    /// The power switch refuses every request.
    #[serde(default)]
    pub fence_fails: bool,
    #[serde(default)]
    pub unsafe_unfenced: bool,
    pub interval_ms: Option<u64>,
    pub warn_ms: Option<u64>,
    pub dead_ms: Option<u64>,
    pub initial_dead_ms: Option<u64>,
    pub lease_ms: Option<u64>,
    pub standby_delay_ms: Option<u64>,
    pub clock_margin_ms: Option<u64>,
    /// Simulated time each resource takes to start.
    #[serde(default = "default_resource_start_ms")]
    pub resource_start_ms: u64,
}

fn default_resource_start_ms() -> u64 {
    5
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    pub latency_ms_min: u64,
    pub latency_ms_max: u64,
    pub vip: Ipv4Addr,
    #[serde(default = "default_vip_lifetime_ms")]
    pub vip_lifetime_ms: u64,
    #[serde(default = "default_garp_count")]
    pub garp_count: u32,
    #[serde(default = "default_garp_interval_ms")]
    pub garp_interval_ms: u64,
    /// How long a claim probes for another holder (0: no probing).
    #[serde(default = "default_probe_wait_ms")]
    pub probe_wait_ms: u64,
}

fn default_probe_wait_ms() -> u64 {
    500
}

fn default_vip_lifetime_ms() -> u64 {
    3000
}
fn default_garp_count() -> u32 {
    5
}
fn default_garp_interval_ms() -> u64 {
    200
}

/// One control node. `claim_at_ms` scripts a VIP claim (the seam's own
/// scenarios; cluster scenarios let the cluster manager decide).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub name: String,
    #[serde(default)]
    pub claim_at_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultFile {
    pub at_ms: u64,
    pub kind: FaultKind,
    /// The host the fault hits (crash, die, restart).
    #[serde(default)]
    pub host: Option<String>,
    /// Both ends of a partition, heal or loss.
    #[serde(default)]
    pub between: Option<[String; 2]>,
    /// Fraction of messages lost (loss).
    #[serde(default)]
    pub rate: Option<f64>,
    /// The fault happens at a time drawn from the seed in
    /// `[at_ms, at_ms + jitter_ms]`, so a sweep explores its phase against
    /// heartbeats, renewals and the kernel's lifetime timer.
    #[serde(default)]
    pub jitter_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// The daemon dies; the host's kernel keeps its addresses until they expire.
    Crash,
    /// The whole host dies: software gone, links cut, addresses gone.
    Die,
    /// The host's software starts again (links healed).
    Restart,
    /// No traffic between the two hosts.
    Partition,
    /// Traffic flows again between the two hosts.
    Heal,
    /// Messages between the two hosts are lost at `rate` (0 ends it).
    Loss,
    /// Operator command on `host`: move the services to the peer.
    Switchover,
    /// Store scenarios: `host` becomes primary (a new epoch).
    Promote,
    /// Store scenarios: `host` becomes secondary.
    Demote,
    /// Store scenarios: `host`'s disk is full from now on.
    DiskFull,
    /// Store scenarios: space on `host`'s disk is freed.
    DiskFree,
    /// Store scenarios: every fsync on `host` takes `store.slow_sync_ms`.
    DiskSlow,
    /// Store scenarios: `host`'s disk is fast again.
    DiskFast,
}

impl FaultKind {
    /// Faults only a `[store]` scenario understands.
    pub fn is_store(self) -> bool {
        matches!(
            self,
            FaultKind::Promote
                | FaultKind::Demote
                | FaultKind::DiskFull
                | FaultKind::DiskFree
                | FaultKind::DiskSlow
                | FaultKind::DiskFast
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeFile {
    /// Gap between probes the client sends to the VIP.
    pub interval_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectFile {
    /// Never more than one host holds the VIP on the segment.
    #[serde(default)]
    pub single_owner: bool,
    /// The host that answers the last probe.
    #[serde(default)]
    pub final_responder: Option<String>,
    /// Hosts that must never answer a probe.
    #[serde(default)]
    pub never_responders: Vec<String>,
    /// Budget from the first fault to the first answer from the final responder.
    #[serde(default)]
    pub migration_ms_max: Option<u64>,
    /// The scenario exists to show a split brain: the run passes only if
    /// the checker sees two VIP holders.
    #[serde(default)]
    pub dual_owner_expected: bool,
    /// Changes of the VIP holder set at most (flapping bound).
    #[serde(default)]
    pub owner_changes_max: Option<u64>,
}

/// A validated scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub duration: Duration,
    pub check_seeds: u64,
    pub regression_seeds: Vec<u64>,
    pub latency_min: Duration,
    pub latency_max: Duration,
    pub vip: Ipv4Addr,
    pub vip_lifetime: Duration,
    pub garp_count: u32,
    pub garp_interval: Duration,
    pub probe_wait: Duration,
    pub nodes: Vec<Node>,
    pub faults: Vec<Fault>,
    pub cluster: Option<ClusterSection>,
    pub store: Option<StoreFile>,
    pub probe_interval: Duration,
    pub expect: Expect,
    pub services: Option<crate::services::Services>,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub claim_at: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct Fault {
    pub at: Duration,
    pub jitter: Duration,
    pub kind: FaultKind,
    pub hosts: Vec<String>,
    pub rate: f64,
}

#[derive(Clone, Debug)]
pub struct Expect {
    pub single_owner: bool,
    pub final_responder: Option<String>,
    pub never_responders: Vec<String>,
    pub migration_max: Option<Duration>,
    pub dual_owner_expected: bool,
    pub owner_changes_max: Option<u64>,
}

/// The name of the probing client host.
pub const CLIENT: &str = "client";
/// The name of the witness host (cluster scenarios with a witness).
pub const WITNESS: &str = "witness";
/// Upper bound on simulated time, so a typo cannot run for hours.
pub const DURATION_MS_MAX: u64 = 3_600_000;
/// Upper bound on nodes in one scenario.
pub const NODES_MAX: usize = 8;
/// Upper bound on faults in one scenario.
pub const FAULTS_MAX: usize = 256;

/// Why a scenario file was refused; the message names the key path.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{file}: {key}: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
}

impl Scenario {
    /// Read, parse and validate a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: display.clone(),
            source,
        })?;
        Scenario::parse(&text, &display)
    }

    /// Parse and validate scenario text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
        let raw: ScenarioFile = toml::from_str(text).map_err(|error| ScenarioError::Parse {
            path: file.to_owned(),
            message: error.to_string(),
        })?;
        raw.validate()
            .map_err(|(key, message)| ScenarioError::Invalid {
                file: file.to_owned(),
                key,
                message,
            })
    }
}

type Invalid = (String, String);

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    (key.into(), message.into())
}

impl ScenarioFile {
    /// Check every value and cross-reference; pure.
    pub fn validate(self) -> Result<Scenario, Invalid> {
        if self.duration_ms == 0 || self.duration_ms > DURATION_MS_MAX {
            return Err(invalid(
                "duration_ms",
                format!("must be in 1..={DURATION_MS_MAX}"),
            ));
        }
        let net = &self.network;
        if net.latency_ms_min > net.latency_ms_max {
            return Err(invalid(
                "network.latency_ms_min",
                format!(
                    "{} is above latency_ms_max {}",
                    net.latency_ms_min, net.latency_ms_max
                ),
            ));
        }
        if net.vip_lifetime_ms < 1000 {
            return Err(invalid(
                "network.vip_lifetime_ms",
                "must be at least 1000 (valid_lft has 1 s granularity)",
            ));
        }
        if net.garp_count == 0 {
            return Err(invalid("network.garp_count", "must be at least 1"));
        }
        let nodes = self.validate_nodes()?;
        let faults = self.validate_faults(&nodes)?;
        let expect = self.validate_expect(&nodes)?;
        self.validate_cluster(&nodes)?;
        self.validate_store(&nodes)?;
        if self.probe.interval_ms == 0 {
            return Err(invalid("probe.interval_ms", "must be positive"));
        }
        let services = match &self.services {
            Some(_) if self.cluster.is_none() => {
                return Err(invalid("services", "needs a [cluster] section"))
            }
            Some(file) => Some(file.validate(self.duration_ms)?),
            None => None,
        };
        Ok(Scenario {
            name: self.name,
            description: self.description,
            duration: Duration::from_millis(self.duration_ms),
            check_seeds: self.check_seeds.unwrap_or(16),
            regression_seeds: self.regression_seeds,
            latency_min: Duration::from_millis(net.latency_ms_min),
            latency_max: Duration::from_millis(net.latency_ms_max),
            vip: net.vip,
            vip_lifetime: Duration::from_millis(net.vip_lifetime_ms),
            garp_count: net.garp_count,
            garp_interval: Duration::from_millis(net.garp_interval_ms),
            probe_wait: Duration::from_millis(net.probe_wait_ms),
            nodes,
            faults,
            cluster: self.cluster.clone(),
            store: self.store.clone(),
            probe_interval: Duration::from_millis(self.probe.interval_ms),
            expect,
            services,
        })
    }

    fn validate_nodes(&self) -> Result<Vec<Node>, Invalid> {
        if self.nodes.is_empty() || self.nodes.len() > NODES_MAX {
            return Err(invalid("nodes", format!("need 1..={NODES_MAX} nodes")));
        }
        let mut seen = BTreeSet::new();
        let mut nodes = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let valid_name = !node.name.is_empty()
                && node
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !valid_name || node.name == CLIENT {
                return Err(invalid(
                    format!("nodes[{i}].name"),
                    format!("{:?}: use [a-z0-9-], not \"{CLIENT}\"", node.name),
                ));
            }
            if !seen.insert(node.name.clone()) {
                return Err(invalid(
                    format!("nodes[{i}].name"),
                    format!("{} appears twice", node.name),
                ));
            }
            if node.claim_at_ms.is_some_and(|at| at >= self.duration_ms) {
                return Err(invalid(
                    format!("nodes[{i}].claim_at_ms"),
                    "is after the end of the scenario",
                ));
            }
            nodes.push(Node {
                name: node.name.clone(),
                claim_at: node.claim_at_ms.map(Duration::from_millis),
            });
        }
        Ok(nodes)
    }

    fn validate_faults(&self, nodes: &[Node]) -> Result<Vec<Fault>, Invalid> {
        if self.faults.len() > FAULTS_MAX {
            return Err(invalid("faults", format!("at most {FAULTS_MAX}")));
        }
        let witness = self.cluster.as_ref().is_some_and(|c| c.witness);
        let known = |name: &str| {
            name == CLIENT
                || (witness && name == WITNESS)
                || (self.services.is_some() && name == crate::services::PXE)
                || nodes.iter().any(|n| n.name == name)
        };
        let mut faults = Vec::new();
        let mut last_at = 0;
        for (i, fault) in self.faults.iter().enumerate() {
            let key = |field: &str| format!("faults[{i}].{field}");
            if fault.at_ms < last_at || fault.at_ms >= self.duration_ms {
                return Err(invalid(
                    key("at_ms"),
                    "faults must be in time order and inside duration_ms",
                ));
            }
            last_at = fault.at_ms;
            let hosts = match (fault.kind, &fault.host, &fault.between) {
                (
                    FaultKind::Crash | FaultKind::Die | FaultKind::Restart | FaultKind::Switchover,
                    Some(host),
                    None,
                ) => vec![host.clone()],
                (kind, Some(host), None) if kind.is_store() => vec![host.clone()],
                (FaultKind::Partition | FaultKind::Heal | FaultKind::Loss, None, Some([a, b])) if a != b => {
                    vec![a.clone(), b.clone()]
                }
                (FaultKind::Partition | FaultKind::Heal | FaultKind::Loss, _, _) => {
                    return Err(invalid(key("between"), "partition, heal and loss take `between = [a, b]` with two different hosts and no `host`"))
                }
                _ => return Err(invalid(key("host"), "crash, die, restart, switchover, promote, demote and disk faults take `host` and no `between`")),
            };
            let rate = match (fault.kind, fault.rate) {
                (FaultKind::Loss, Some(rate)) if (0.0..=1.0).contains(&rate) => rate,
                (FaultKind::Loss, _) => {
                    return Err(invalid(key("rate"), "loss takes a rate in 0.0..=1.0"))
                }
                (_, None) => 0.0,
                (_, Some(_)) => return Err(invalid(key("rate"), "only loss takes a rate")),
            };
            if fault.kind.is_store() && self.store.is_none() {
                return Err(invalid(
                    key("kind"),
                    "promote, demote and disk faults need a [store] section",
                ));
            }
            if fault.kind.is_store() && !nodes.iter().any(|n| n.name == hosts[0]) {
                return Err(invalid(
                    key("host"),
                    format!("{:?} is not a store node", hosts[0]),
                ));
            }
            if fault.kind == FaultKind::Switchover && self.cluster.is_none() {
                return Err(invalid(key("kind"), "switchover needs a [cluster] section"));
            }
            if let Some(unknown) = hosts.iter().find(|h| !known(h)) {
                return Err(invalid(key("host"), format!("unknown host {unknown:?}")));
            }
            faults.push(Fault {
                at: Duration::from_millis(fault.at_ms),
                jitter: Duration::from_millis(fault.jitter_ms),
                kind: fault.kind,
                hosts,
                rate,
            });
        }
        Ok(faults)
    }

    fn validate_expect(&self, nodes: &[Node]) -> Result<Expect, Invalid> {
        let known = |name: &String| nodes.iter().any(|n| &n.name == name);
        if let Some(host) = self.expect.final_responder.as_ref().filter(|h| !known(h)) {
            return Err(invalid(
                "expect.final_responder",
                format!("unknown node {host:?}"),
            ));
        }
        if let Some(host) = self.expect.never_responders.iter().find(|h| !known(h)) {
            return Err(invalid(
                "expect.never_responders",
                format!("unknown node {host:?}"),
            ));
        }
        if self.expect.migration_ms_max.is_some() && self.faults.is_empty() {
            return Err(invalid(
                "expect.migration_ms_max",
                "needs at least one fault to measure from",
            ));
        }
        Ok(Expect {
            single_owner: self.expect.single_owner,
            final_responder: self.expect.final_responder.clone(),
            never_responders: self.expect.never_responders.clone(),
            migration_max: self.expect.migration_ms_max.map(Duration::from_millis),
            dual_owner_expected: self.expect.dual_owner_expected,
            owner_changes_max: self.expect.owner_changes_max,
        })
    }

    fn validate_store(&self, nodes: &[Node]) -> Result<(), Invalid> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        if self.cluster.is_some() {
            return Err(invalid(
                "store",
                "a [store] scenario scripts roles itself; remove [cluster]",
            ));
        }
        if let Some(i) = nodes.iter().position(|n| n.claim_at.is_some()) {
            return Err(invalid(
                format!("nodes[{i}].claim_at_ms"),
                "store nodes do not claim the VIP; remove it",
            ));
        }
        store.validate(nodes, self.duration_ms)
    }

    fn validate_cluster(&self, nodes: &[Node]) -> Result<(), Invalid> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        if nodes.len() != 2 {
            return Err(invalid(
                "nodes",
                "a [cluster] scenario has exactly two nodes",
            ));
        }
        if let Some(i) = nodes.iter().position(|n| n.claim_at.is_some()) {
            return Err(invalid(
                format!("nodes[{i}].claim_at_ms"),
                "the cluster manager decides claims; remove it",
            ));
        }
        let modes = [cluster.witness, cluster.fencing, cluster.unsafe_unfenced];
        if modes.iter().filter(|m| **m).count() != 1 {
            return Err(invalid(
                "cluster",
                "set exactly one of witness, fencing, unsafe_unfenced",
            ));
        }
        if cluster.fence_fails && !cluster.fencing {
            return Err(invalid("cluster.fence_fails", "needs fencing = true"));
        }
        if self.expect.dual_owner_expected && self.expect.single_owner {
            return Err(invalid(
                "expect.dual_owner_expected",
                "contradicts single_owner = true",
            ));
        }
        Ok(())
    }
}
