//! The `[store]` section of a scenario: which node starts as primary, the
//! replication policies, the writer's workload, the injected disk and
//! crash faults, and what the store checkers must see.

use std::collections::BTreeMap;

use ironroot_store::replication::{DegradedPolicy, SplitBrainPolicy};
use serde::Deserialize;

use crate::scenario::Node;

/// Most random crashes one run may schedule.
pub const RANDOM_CRASHES_MAX: u32 = 64;
/// Largest file the writer puts in a generation.
pub const FILE_BYTES_MAX: u32 = 1 << 20;
/// Most files in one generation.
pub const FILES_PER_GENERATION_MAX: u32 = 64;

/// The section as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    /// The node that is primary at the start.
    pub primary: String,
    #[serde(default)]
    pub split_brain: PolicyName,
    #[serde(default)]
    pub degraded: DegradedName,
    /// Gap between two writes of the writer on the primary.
    #[serde(default = "default_write_interval_ms")]
    pub write_interval_ms: u64,
    /// Per-node gap, overriding `write_interval_ms` (e.g. `{ b = 5 }`).
    #[serde(default)]
    pub write_interval_ms_of: BTreeMap<String, u64>,
    /// Writers stop here; the rest of the run lets the replicas settle.
    pub writes_until_ms: u64,
    /// Nodes whose writer records DHCP leases only (no generation, no
    /// client change): the zero-changes side of a split brain.
    #[serde(default)]
    pub leases_only: Vec<String>,
    #[serde(default = "default_files_per_generation")]
    pub files_per_generation: u32,
    #[serde(default = "default_file_bytes_max")]
    pub file_bytes_max: u32,
    /// The replication machine's answer timeout.
    #[serde(default = "default_response_timeout_ms")]
    pub response_timeout_ms: u64,
    /// Crashes of a random node at a random storage operation.
    #[serde(default)]
    pub random_crashes: u32,
    /// When random crashes may start, `[from, to]`.
    #[serde(default)]
    pub crash_window_ms: Option<[u64; 2]>,
    /// How long a crashed node stays down, `[min, max]`.
    #[serde(default = "default_restart_after_ms")]
    pub restart_after_ms: [u64; 2],
    /// A random crash hits after 0..=this many mutating storage operations.
    #[serde(default = "default_crash_ops_max")]
    pub crash_ops_max: u64,
    /// When the primary dies, its peer is promoted this long after, if it
    /// is alive and not recorded Outdated (as the cluster manager would);
    /// the old primary comes back as secondary. Unset: the primary is
    /// promoted again when it restarts.
    #[serde(default)]
    pub failover_ms: Option<u64>,
    /// A crash keeps a random prefix of unsynced bytes (a torn write).
    #[serde(default = "default_true")]
    pub torn_tail: bool,
    /// Simulated duration of one fsync on a node whose disk is slow (see
    /// the `disk-slow` fault).
    #[serde(default)]
    pub slow_sync_ms: u64,
    /// Bytes left free when a `disk-full` fault hits.
    #[serde(default)]
    pub full_slack_bytes: u64,
    #[serde(default)]
    pub expect: StoreExpectFile,
}

fn default_write_interval_ms() -> u64 {
    20
}
fn default_files_per_generation() -> u32 {
    3
}
fn default_file_bytes_max() -> u32 {
    2048
}
fn default_response_timeout_ms() -> u64 {
    400
}
fn default_restart_after_ms() -> [u64; 2] {
    [200, 1000]
}
fn default_crash_ops_max() -> u64 {
    12
}
fn default_true() -> bool {
    true
}

/// What the store checkers expect beyond the invariants that always hold.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreExpectFile {
    /// A split brain must be detected.
    #[serde(default)]
    pub split_brain: bool,
    /// The node that must give up its divergent entries; none with a split
    /// brain means the policy must leave it unresolved (disconnect).
    #[serde(default)]
    pub loser: Option<String>,
    /// At the first heal the behind node must receive exactly the entries
    /// and objects it lacks (writers must have stopped before it).
    #[serde(default)]
    pub resync_exact: bool,
    /// Some writes must fail with a clear error (full disk).
    #[serde(default)]
    pub write_errors: bool,
    /// No single write may wait longer than this for its answer
    /// (acknowledged or failed): a writer must never hang.
    #[serde(default)]
    pub write_wait_ms_max: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyName {
    DiscardYoungerPrimary,
    DiscardLeastChanges,
    DiscardZeroChanges,
    #[default]
    Disconnect,
}

impl PolicyName {
    pub fn policy(self) -> SplitBrainPolicy {
        match self {
            PolicyName::DiscardYoungerPrimary => SplitBrainPolicy::DiscardYoungerPrimary,
            PolicyName::DiscardLeastChanges => SplitBrainPolicy::DiscardLeastChanges,
            PolicyName::DiscardZeroChanges => SplitBrainPolicy::DiscardZeroChanges,
            PolicyName::Disconnect => SplitBrainPolicy::Disconnect,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DegradedName {
    #[default]
    AcceptWhenOutdated,
    RefuseWrites,
}

impl DegradedName {
    pub fn policy(self) -> DegradedPolicy {
        match self {
            DegradedName::AcceptWhenOutdated => DegradedPolicy::AcceptWhenOutdated,
            DegradedName::RefuseWrites => DegradedPolicy::RefuseWrites,
        }
    }
}

type Invalid = (String, String);

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    (key.into(), message.into())
}

impl StoreFile {
    /// Check every value against the scenario's nodes and duration; pure.
    pub fn validate(&self, nodes: &[Node], duration_ms: u64) -> Result<(), Invalid> {
        if nodes.len() != 2 {
            return Err(invalid("nodes", "a [store] scenario has exactly two nodes"));
        }
        let known = |name: &str| nodes.iter().any(|n| n.name == name);
        if !known(&self.primary) {
            return Err(invalid(
                "store.primary",
                format!("unknown node {:?}", self.primary),
            ));
        }
        if self.write_interval_ms == 0 {
            return Err(invalid("store.write_interval_ms", "must be positive"));
        }
        for (host, interval) in &self.write_interval_ms_of {
            if !known(host) || *interval == 0 {
                return Err(invalid(
                    format!("store.write_interval_ms_of.{host}"),
                    "needs a known node and a positive interval",
                ));
            }
        }
        if let Some(host) = self.leases_only.iter().find(|h| !known(h)) {
            return Err(invalid(
                "store.leases_only",
                format!("unknown node {host:?}"),
            ));
        }
        if self.writes_until_ms >= duration_ms {
            return Err(invalid(
                "store.writes_until_ms",
                "must be before the end of the scenario (the replicas need time to settle)",
            ));
        }
        if !(1..=FILES_PER_GENERATION_MAX).contains(&self.files_per_generation) {
            return Err(invalid(
                "store.files_per_generation",
                format!("must be in 1..={FILES_PER_GENERATION_MAX}"),
            ));
        }
        if !(1..=FILE_BYTES_MAX).contains(&self.file_bytes_max) {
            return Err(invalid(
                "store.file_bytes_max",
                format!("must be in 1..={FILE_BYTES_MAX}"),
            ));
        }
        if self.response_timeout_ms == 0 {
            return Err(invalid("store.response_timeout_ms", "must be positive"));
        }
        self.validate_crashes(duration_ms)?;
        if let Some(loser) = self.expect.loser.as_ref().filter(|l| !known(l)) {
            return Err(invalid(
                "store.expect.loser",
                format!("unknown node {loser:?}"),
            ));
        }
        if self.expect.loser.is_some() && !self.expect.split_brain {
            return Err(invalid("store.expect.loser", "needs split_brain = true"));
        }
        let disconnect = self.split_brain == PolicyName::Disconnect;
        if self.expect.loser.is_some() && disconnect {
            return Err(invalid(
                "store.expect.loser",
                "the disconnect policy never discards a side",
            ));
        }
        Ok(())
    }

    fn validate_crashes(&self, duration_ms: u64) -> Result<(), Invalid> {
        if self.random_crashes > RANDOM_CRASHES_MAX {
            return Err(invalid(
                "store.random_crashes",
                format!("at most {RANDOM_CRASHES_MAX}"),
            ));
        }
        let [low, high] = self.restart_after_ms;
        if low > high || low == 0 {
            return Err(invalid(
                "store.restart_after_ms",
                format!("[{low}, {high}]: need 0 < min <= max"),
            ));
        }
        match (self.random_crashes, self.crash_window_ms) {
            (0, None) => Ok(()),
            (0, Some(_)) => Err(invalid(
                "store.crash_window_ms",
                "needs random_crashes > 0",
            )),
            (_, None) => Err(invalid(
                "store.crash_window_ms",
                "random crashes need a window [from, to]",
            )),
            (_, Some([from, to])) if from > to || to + high >= duration_ms => Err(invalid(
                "store.crash_window_ms",
                format!(
                    "[{from}, {to}]: need from <= to and to + restart_after_ms max before duration_ms"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The writer's gap on `host`.
    pub fn interval_ms_of(&self, host: &str) -> u64 {
        self.write_interval_ms_of
            .get(host)
            .copied()
            .unwrap_or(self.write_interval_ms)
    }
}
