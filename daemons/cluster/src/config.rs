//! Cluster configuration: the serde file format (`deny_unknown_fields`) and a
//! pure [`ClusterFile::validate`] into the runtime [`ClusterConfig`]. Every
//! error names the key path it is about.
//!
//! The timing relations checked here are the ones the crate-level timing
//! argument rests on (see the crate docs): a VIP lifetime plus the clock
//! margin plus one heartbeat interval must fit inside both the dead time
//! (peer vote) and the witness lease.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ironroot_net::VipSpec;
use serde::Deserialize;

use crate::wire::{Key, NodeId};

/// Heartbeat links per node at most.
pub const LINKS_MAX: usize = 4;
/// Gratuitous ARPs per claim at most.
pub const GARP_COUNT_MAX: u32 = 20;
/// Shared key length bounds (bytes).
pub const KEY_LEN_MIN: usize = 16;
pub const KEY_LEN_MAX: usize = 64;
/// Fencing command arguments at most.
pub const FENCE_ARGS_MAX: usize = 32;

/// The file as operators write it (TOML). Shared by both nodes and the
/// witness; each process picks its own identity on the command line.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub cluster_id: u32,
    /// HMAC-SHA256 key, hex.
    pub key_hex: String,
    pub nodes: Vec<NodeFile>,
    #[serde(default)]
    pub witness: Option<WitnessFile>,
    #[serde(default)]
    pub fencing: Option<FencingFile>,
    /// Allow two-node mode with neither witness nor fencing: both nodes may
    /// become active during a partition.
    #[serde(default)]
    pub unsafe_unfenced: bool,
    #[serde(default)]
    pub timing: TimingFile,
    pub vip: VipFile,
    #[serde(default)]
    pub auto_failback: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub name: String,
    pub id: u16,
    /// This node's address on each heartbeat link; link `i` of one node
    /// talks to link `i` of the other.
    pub links: Vec<SocketAddr>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessFile {
    pub addr: SocketAddr,
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FencingFile {
    /// argv; `{node}` is replaced by the name of the node to fence.
    pub command: Vec<String>,
    #[serde(default = "default_fence_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra wait of the standby before it fences the active node, so that
    /// in a partition the incumbent wins the fencing race.
    #[serde(default = "default_standby_delay_ms")]
    pub standby_delay_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimingFile {
    pub interval_ms: u64,
    pub warn_ms: u64,
    pub dead_ms: u64,
    pub initial_dead_ms: u64,
    /// Covers clock-rate differences and the delay between deciding an
    /// action and the kernel applying it.
    pub clock_margin_ms: u64,
    pub monitor_interval_ms: u64,
}

impl Default for TimingFile {
    fn default() -> TimingFile {
        TimingFile {
            interval_ms: 100,
            warn_ms: 500,
            dead_ms: 1200,
            initial_dead_ms: 2500,
            clock_margin_ms: 50,
            monitor_interval_ms: 1000,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipFile {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub interface: String,
    #[serde(default = "default_vip_lifetime_ms")]
    pub lifetime_ms: u64,
    #[serde(default = "default_garp_count")]
    pub garp_count: u32,
    #[serde(default = "default_garp_interval_ms")]
    pub garp_interval_ms: u64,
    /// Longest a claim waits while another host still answers ARP for the
    /// address (0: claim without probing).
    #[serde(default = "default_probe_wait_ms")]
    pub probe_wait_ms: u64,
}

fn default_lease_ms() -> u64 {
    1200
}
fn default_fence_timeout_ms() -> u64 {
    5000
}
fn default_standby_delay_ms() -> u64 {
    300
}
fn default_vip_lifetime_ms() -> u64 {
    1000
}
fn default_garp_count() -> u32 {
    5
}
fn default_garp_interval_ms() -> u64 {
    200
}
fn default_probe_wait_ms() -> u64 {
    500
}

/// How split brain is prevented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuorumMode {
    /// Third vote from a witness lease.
    Witness { addr: SocketAddr, lease: Duration },
    /// Two-node mode: the peer is fenced before takeover.
    Fencing(FencingConfig),
    /// Nothing prevents dual active (explicitly requested).
    Unsafe,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FencingConfig {
    pub command: Vec<String>,
    pub timeout: Duration,
    pub standby_delay: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    pub interval: Duration,
    pub warn: Duration,
    pub dead: Duration,
    pub initial_dead: Duration,
    pub clock_margin: Duration,
    pub monitor_interval: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub id: NodeId,
    pub links: Vec<SocketAddr>,
}

/// The validated configuration of one node.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub cluster_id: u32,
    pub key: Key,
    pub local: NodeSpec,
    pub peer: NodeSpec,
    pub quorum: QuorumMode,
    pub timing: Timing,
    pub vip: VipSpec,
    pub auto_failback: bool,
}

/// The validated configuration of the witness.
#[derive(Clone, Debug)]
pub struct WitnessConfig {
    pub cluster_id: u32,
    pub key: Key,
    pub addr: SocketAddr,
    pub lease: Duration,
    pub nodes: [NodeSpec; 2],
}

/// A config value is wrong; `path` names the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{path}: {problem}")]
pub struct ConfigError {
    pub path: String,
    pub problem: Problem,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Problem {
    #[error("expected exactly 2 nodes, found {0}")]
    NodeCount(usize),
    #[error("must not be empty")]
    Empty,
    #[error("duplicate value {0}")]
    Duplicate(String),
    #[error("node id 0 is reserved for the witness")]
    ReservedId,
    #[error("{count} links, expected 1 to {max}")]
    LinkCount { count: usize, max: usize },
    #[error("node has {found} links, the other node has {expected}")]
    LinkMismatch { found: usize, expected: usize },
    #[error("not valid hex")]
    Hex,
    #[error("key is {len} bytes, expected {min} to {max}")]
    KeyLength { len: usize, min: usize, max: usize },
    #[error("no node named {0}")]
    UnknownNode(String),
    #[error("neither witness nor fencing configured; set unsafe_unfenced = true to run without split-brain protection")]
    NoProtection,
    #[error("{value} ms must be greater than {bound} ms ({why})")]
    TooSmall {
        value: u64,
        bound: u64,
        why: &'static str,
    },
    #[error("{value} ms must be at most {bound} ms ({why})")]
    TooLarge {
        value: u64,
        bound: u64,
        why: &'static str,
    },
    #[error("{0} ms is not a whole number of seconds >= 1 s (IPv4 valid_lft granularity)")]
    WholeSeconds(u64),
    #[error("{value} out of range {min}..={max}")]
    OutOfRange { value: u64, min: u64, max: u64 },
}

fn err(path: impl fmt::Display, problem: Problem) -> ConfigError {
    ConfigError {
        path: path.to_string(),
        problem,
    }
}

impl ClusterFile {
    /// Validate for the node named `local`.
    pub fn validate(&self, local: &str) -> Result<ClusterConfig, ConfigError> {
        let key = self.check_key()?;
        let nodes = self.check_nodes()?;
        let timing = self.timing.check()?;
        let quorum = self.check_quorum(&timing)?;
        let vip = self.vip.check(&timing, &quorum)?;
        let index = nodes
            .iter()
            .position(|n| n.name == local)
            .ok_or_else(|| err("node", Problem::UnknownNode(local.to_string())))?;
        let [first, second] = nodes;
        let (local, peer) = if index == 0 {
            (first, second)
        } else {
            (second, first)
        };
        Ok(ClusterConfig {
            cluster_id: self.cluster_id,
            key,
            local,
            peer,
            quorum,
            timing,
            vip,
            auto_failback: self.auto_failback,
        })
    }

    /// Validate for the witness role.
    pub fn validate_witness(&self) -> Result<WitnessConfig, ConfigError> {
        let key = self.check_key()?;
        let nodes = self.check_nodes()?;
        let timing = self.timing.check()?;
        let QuorumMode::Witness { addr, lease } = self.check_quorum(&timing)? else {
            return Err(err("witness", Problem::Empty));
        };
        Ok(WitnessConfig {
            cluster_id: self.cluster_id,
            key,
            addr,
            lease,
            nodes,
        })
    }

    fn check_key(&self) -> Result<Key, ConfigError> {
        let bytes = decode_hex(&self.key_hex).ok_or_else(|| err("key_hex", Problem::Hex))?;
        if !(KEY_LEN_MIN..=KEY_LEN_MAX).contains(&bytes.len()) {
            return Err(err(
                "key_hex",
                Problem::KeyLength {
                    len: bytes.len(),
                    min: KEY_LEN_MIN,
                    max: KEY_LEN_MAX,
                },
            ));
        }
        Ok(Key::new(bytes))
    }

    fn check_nodes(&self) -> Result<[NodeSpec; 2], ConfigError> {
        let [a, b] = self.nodes.as_slice() else {
            return Err(err("nodes", Problem::NodeCount(self.nodes.len())));
        };
        for (i, node) in [a, b].into_iter().enumerate() {
            if node.name.is_empty() {
                return Err(err(format_args!("nodes[{i}].name"), Problem::Empty));
            }
            if node.id == 0 {
                return Err(err(format_args!("nodes[{i}].id"), Problem::ReservedId));
            }
            let count = node.links.len();
            if count == 0 || count > LINKS_MAX {
                let problem = Problem::LinkCount {
                    count,
                    max: LINKS_MAX,
                };
                return Err(err(format_args!("nodes[{i}].links"), problem));
            }
        }
        if a.name == b.name {
            return Err(err("nodes[1].name", Problem::Duplicate(b.name.clone())));
        }
        if a.id == b.id {
            return Err(err("nodes[1].id", Problem::Duplicate(b.id.to_string())));
        }
        if a.links.len() != b.links.len() {
            let problem = Problem::LinkMismatch {
                found: b.links.len(),
                expected: a.links.len(),
            };
            return Err(err("nodes[1].links", problem));
        }
        let spec = |n: &NodeFile| NodeSpec {
            name: n.name.clone(),
            id: NodeId(n.id),
            links: n.links.clone(),
        };
        Ok([spec(a), spec(b)])
    }

    fn check_quorum(&self, timing: &Timing) -> Result<QuorumMode, ConfigError> {
        let needed = self.vip.lifetime_ms + ms(timing.clock_margin) + ms(timing.interval);
        if let Some(witness) = &self.witness {
            if witness.lease_ms < needed {
                return Err(err(
                    "witness.lease_ms",
                    Problem::TooSmall {
                        value: witness.lease_ms,
                        bound: needed,
                        why: "must cover vip.lifetime_ms + clock_margin_ms + interval_ms",
                    },
                ));
            }
            return Ok(QuorumMode::Witness {
                addr: witness.addr,
                lease: Duration::from_millis(witness.lease_ms),
            });
        }
        if let Some(fencing) = &self.fencing {
            if fencing.command.is_empty() || fencing.command.len() > FENCE_ARGS_MAX {
                return Err(err("fencing.command", Problem::Empty));
            }
            if fencing.timeout_ms == 0 {
                let problem = Problem::OutOfRange {
                    value: 0,
                    min: 1,
                    max: u64::MAX,
                };
                return Err(err("fencing.timeout_ms", problem));
            }
            return Ok(QuorumMode::Fencing(FencingConfig {
                command: fencing.command.clone(),
                timeout: Duration::from_millis(fencing.timeout_ms),
                standby_delay: Duration::from_millis(fencing.standby_delay_ms),
            }));
        }
        if self.unsafe_unfenced {
            return Ok(QuorumMode::Unsafe);
        }
        Err(err("witness", Problem::NoProtection))
    }
}

impl TimingFile {
    fn check(&self) -> Result<Timing, ConfigError> {
        if self.interval_ms == 0 {
            let problem = Problem::OutOfRange {
                value: 0,
                min: 1,
                max: u64::MAX,
            };
            return Err(err("timing.interval_ms", problem));
        }
        let twice = self.interval_ms.saturating_mul(2);
        if self.dead_ms <= twice {
            return Err(err(
                "timing.dead_ms",
                Problem::TooSmall {
                    value: self.dead_ms,
                    bound: twice,
                    why: "2 x timing.interval_ms",
                },
            ));
        }
        // A peer's vote is dated by the send time of the heartbeat it echoes
        // (up to one interval old) and counts only while more than the clock
        // margin remains of its dead time.
        let vote_floor = self.clock_margin_ms.saturating_add(self.interval_ms);
        if self.dead_ms <= vote_floor {
            return Err(err(
                "timing.dead_ms",
                Problem::TooSmall {
                    value: self.dead_ms,
                    bound: vote_floor,
                    why: "timing.clock_margin_ms + timing.interval_ms (a vote would never count)",
                },
            ));
        }
        if self.warn_ms <= self.interval_ms || self.warn_ms > self.dead_ms {
            let problem = Problem::OutOfRange {
                value: self.warn_ms,
                min: self.interval_ms + 1,
                max: self.dead_ms,
            };
            return Err(err("timing.warn_ms", problem));
        }
        if self.initial_dead_ms < self.dead_ms {
            return Err(err(
                "timing.initial_dead_ms",
                Problem::TooSmall {
                    value: self.initial_dead_ms,
                    bound: self.dead_ms.saturating_sub(1),
                    why: "at least timing.dead_ms",
                },
            ));
        }
        if self.monitor_interval_ms == 0 {
            let problem = Problem::OutOfRange {
                value: 0,
                min: 1,
                max: u64::MAX,
            };
            return Err(err("timing.monitor_interval_ms", problem));
        }
        Ok(Timing {
            interval: Duration::from_millis(self.interval_ms),
            warn: Duration::from_millis(self.warn_ms),
            dead: Duration::from_millis(self.dead_ms),
            initial_dead: Duration::from_millis(self.initial_dead_ms),
            clock_margin: Duration::from_millis(self.clock_margin_ms),
            monitor_interval: Duration::from_millis(self.monitor_interval_ms),
        })
    }
}

impl VipFile {
    fn check(&self, timing: &Timing, quorum: &QuorumMode) -> Result<VipSpec, ConfigError> {
        if self.prefix_len > 32 {
            let problem = Problem::OutOfRange {
                value: u64::from(self.prefix_len),
                min: 0,
                max: 32,
            };
            return Err(err("vip.prefix_len", problem));
        }
        if self.interface.is_empty() {
            return Err(err("vip.interface", Problem::Empty));
        }
        if self.garp_count > GARP_COUNT_MAX {
            let problem = Problem::OutOfRange {
                value: u64::from(self.garp_count),
                min: 0,
                max: u64::from(GARP_COUNT_MAX),
            };
            return Err(err("vip.garp_count", problem));
        }
        // The kernel counts valid_lft in whole seconds: anything else would
        // be rounded up behind the timing argument's back.
        if self.lifetime_ms < 1000 || self.lifetime_ms % 1000 != 0 {
            return Err(err(
                "vip.lifetime_ms",
                Problem::WholeSeconds(self.lifetime_ms),
            ));
        }
        // The active node renews the VIP only while its quorum proof outlives
        // the new lifetime; the peer vote lasts one dead time. With fencing
        // the standby powers the old node off before it claims, so the
        // address dies with its host and the dead time need not cover it.
        let bound = ms(timing.dead)
            .saturating_sub(ms(timing.clock_margin))
            .saturating_sub(ms(timing.interval));
        let fenced = matches!(quorum, QuorumMode::Fencing(_));
        if self.lifetime_ms == 0 || (!fenced && self.lifetime_ms > bound) {
            return Err(err(
                "vip.lifetime_ms",
                Problem::TooLarge {
                    value: self.lifetime_ms,
                    bound,
                    why: "timing.dead_ms - clock_margin_ms - interval_ms, and not 0",
                },
            ));
        }
        let mut spec = VipSpec::new(self.addr, self.prefix_len, self.interface.clone());
        spec.lifetime = Duration::from_millis(self.lifetime_ms);
        spec.garp_count = self.garp_count;
        spec.garp_interval = Duration::from_millis(self.garp_interval_ms);
        if self.probe_wait_ms > PROBE_WAIT_MS_MAX {
            let problem = Problem::OutOfRange {
                value: self.probe_wait_ms,
                min: 0,
                max: PROBE_WAIT_MS_MAX,
            };
            return Err(err("vip.probe_wait_ms", problem));
        }
        spec.probe_wait = Duration::from_millis(self.probe_wait_ms);
        Ok(spec)
    }
}

/// Longest `vip.probe_wait_ms`.
pub const PROBE_WAIT_MS_MAX: u64 = 10_000;

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests;
