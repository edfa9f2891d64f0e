//! The sans-IO failover state machine of one control node.
//!
//! Inputs: `handle_heartbeat`, `handle_witness_reply`, `handle_timeout`,
//! `handle_resource_result`, `handle_vip_result`, `handle_fence_result`,
//! `handle_admin`. Outputs: `poll_transmit`, `poll_action`, `poll_event`,
//! `poll_timeout`. Time enters only as `now`.

mod lifecycle;
mod quorum;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use ironroot_net::Instant;

use crate::config::{ClusterConfig, QuorumMode};
use crate::wire::{NodeId, ReplayGuard, Role};

/// Pending outbound packets at most; more are dropped and counted.
pub const TRANSMIT_QUEUE_MAX: usize = 64;
/// Pending events at most; the oldest is dropped and counted.
pub const EVENT_QUEUE_MAX: usize = 1024;
/// Pending actions at most (one sequence step plus one monitor per resource).
pub const ACTION_QUEUE_MAX: usize = 64;
/// Resources a node manages at most.
pub const RESOURCES_MAX: usize = 16;
/// Send times of own heartbeats remembered, to date echoed votes.
pub const SENT_HISTORY_MAX: usize = 64;
/// Witness requests awaiting a reply at most.
pub const WITNESS_PENDING_MAX: usize = 16;

/// Where a packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The peer's address on heartbeat link `link`.
    Peer {
        link: usize,
    },
    Witness,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub destination: Destination,
    pub bytes: Vec<u8>,
}

/// Work for the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Start {
        resource: String,
    },
    Stop {
        resource: String,
    },
    Monitor {
        resource: String,
    },
    /// Claim the VIP; `probe`: look for another holder first (skipped when
    /// the peer was just powered off: nobody can answer).
    ClaimVip {
        probe: bool,
    },
    /// Extend the VIP's lifetime; skip it if the driver gets to it after
    /// `not_after` (the quorum proof would no longer cover the lifetime).
    RenewVip {
        not_after: Instant,
    },
    ReleaseVip,
    Fence {
        node: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceOp {
    Start,
    Stop,
    Monitor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VipOp {
    Claim,
    Renew,
    Release,
}

/// Operator commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admin {
    /// Move the services to the peer with no overlap.
    Switchover,
    /// `true`: never be active (hand over if active); `false`: allowed again.
    Standby(bool),
}

/// Why a node changed state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    Started,
    InitialDeadOver,
    Quorum,
    QuorumLost,
    Switchover,
    AdminStandby,
    AdminOnline,
    StartFailed {
        resource: String,
    },
    MonitorFailed {
        resource: String,
    },
    /// Both nodes active (only after unsafe_unfenced partitions).
    DualActive,
    Outdated,
    NoLongerOutdated,
    SequenceDone,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    StateChanged {
        from: Role,
        to: Role,
        reason: Reason,
    },
    PeerAlive {
        incarnation: u64,
        restarted: bool,
    },
    PeerWarn {
        silent_ms: u64,
    },
    PeerDead,
    /// Heartbeats arrive again on one link (index into the node's links).
    LinkUp {
        link: usize,
    },
    /// No heartbeat on this link for one dead time (the peer may still be
    /// heard on another).
    LinkDown {
        link: usize,
    },
    ResourceStarting {
        resource: String,
    },
    ResourceStarted {
        resource: String,
    },
    ResourceStopping {
        resource: String,
    },
    ResourceStopped {
        resource: String,
    },
    ResourceFailed {
        resource: String,
        op: ResourceOp,
    },
    VipClaiming,
    VipClaimed,
    VipReleasing,
    VipReleased,
    VipFailed {
        op: VipOp,
    },
    LeaseGranted {
        until: Instant,
    },
    LeaseRefused {
        holder: Option<NodeId>,
    },
    FenceRequested {
        node: String,
    },
    FenceResult {
        ok: bool,
    },
    AdminRejected {
        command: Admin,
    },
    Dropped {
        reason: DropReason,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    Malformed,
    Forged,
    WrongCluster,
    WrongSender,
    Replayed,
    Stale,
    UnknownLink,
    UnexpectedReply,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterEvent {
    pub at: Instant,
    pub node: NodeId,
    pub kind: EventKind,
}

/// Counters for metrics; every dropped input lands in one of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    pub heartbeats_sent: u64,
    pub heartbeats_accepted: u64,
    pub dropped_malformed: u64,
    pub dropped_forged: u64,
    pub dropped_wrong_cluster: u64,
    pub dropped_wrong_sender: u64,
    pub dropped_replayed: u64,
    pub dropped_stale: u64,
    pub dropped_unknown_link: u64,
    pub dropped_unexpected_reply: u64,
    pub transmits_dropped: u64,
    pub events_dropped: u64,
    pub witness_requests_dropped: u64,
    pub stop_failures: u64,
    pub failovers: u64,
}

/// The VIP as this node believes it to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vip {
    Released,
    Held,
}

/// The step of a promote/stop sequence awaiting its result.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pending {
    Start(usize),
    Stop(usize),
    Claim,
    Release,
}

/// What the peer last told us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PeerView {
    incarnation: u64,
    seq: u64,
    role: Role,
    flags: crate::wire::Flags,
    heard_at: Instant,
    alive_since: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fencing {
    Idle,
    InFlight,
    /// The peer was fenced and has not been heard since.
    Done,
}

/// One control node's failover state machine.
pub struct Node {
    config: ClusterConfig,
    incarnation: u64,
    role: Role,
    stop_reason: Option<Reason>,
    started_at: Instant,
    /// The `now` of the latest input.
    last_input_at: Instant,
    resources: Vec<String>,
    /// `resources[..started]` are running.
    started: usize,
    vip: Vip,
    pending: Option<Pending>,
    monitors_in_flight: BTreeSet<String>,
    next_monitor_at: Instant,
    next_vip_renew_at: Instant,
    next_fence_at: Instant,
    next_seq: u64,
    next_heartbeat_at: Instant,
    sent_at: BTreeMap<u64, Instant>,
    link_guards: Vec<ReplayGuard>,
    /// When each link last carried an accepted heartbeat, and whether it
    /// counts as up (reported by LinkUp/LinkDown).
    link_heard: Vec<Option<Instant>>,
    link_up: Vec<bool>,
    peer: Option<PeerView>,
    peer_dead_reported: bool,
    peer_warned: bool,
    peer_vote_until: Option<Instant>,
    /// Until when our own vote for the peer binds us: no promotion before.
    vote_promised_until: Option<Instant>,
    lease_until: Option<Instant>,
    next_request_id: u64,
    witness_pending: BTreeMap<u64, Instant>,
    last_witness_at: Option<Instant>,
    outdated: bool,
    /// The embedder's word that the peer's store holds everything ours
    /// does (see [`Node::set_peer_current`]); true without a store.
    peer_current: bool,
    /// The witness's last reply named the peer Outdated.
    peer_marked_outdated: bool,
    fencing: Fencing,
    handoff_until: Option<Instant>,
    admin_standby: bool,
    transmits: VecDeque<Transmit>,
    actions: VecDeque<Action>,
    events: VecDeque<ClusterEvent>,
    counters: NodeCounters,
}

/// Why a node could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    #[error("{count} resources, at most {max}")]
    TooManyResources { count: usize, max: usize },
    #[error("duplicate resource name {0}")]
    DuplicateResource(String),
}

impl Node {
    /// A node starting at `now` in its `incarnation` (already bumped and
    /// durable), managing `resources` in start order.
    pub fn new(
        config: ClusterConfig,
        incarnation: u64,
        resources: Vec<String>,
        now: Instant,
    ) -> Result<Node, NodeError> {
        if resources.len() > RESOURCES_MAX {
            return Err(NodeError::TooManyResources {
                count: resources.len(),
                max: RESOURCES_MAX,
            });
        }
        let mut seen = BTreeSet::new();
        for name in &resources {
            if !seen.insert(name.as_str()) {
                return Err(NodeError::DuplicateResource(name.clone()));
            }
        }
        let links = config.local.links.len();
        let mut node = Node {
            config,
            incarnation,
            role: Role::InitialDead,
            stop_reason: None,
            started_at: now,
            last_input_at: now,
            resources,
            started: 0,
            vip: Vip::Released,
            pending: None,
            monitors_in_flight: BTreeSet::new(),
            next_monitor_at: now,
            next_vip_renew_at: now,
            next_fence_at: now,
            next_seq: 1,
            next_heartbeat_at: now,
            sent_at: BTreeMap::new(),
            link_guards: vec![ReplayGuard::default(); links],
            link_heard: vec![None; links],
            link_up: vec![false; links],
            peer: None,
            peer_dead_reported: false,
            peer_warned: false,
            peer_vote_until: None,
            vote_promised_until: None,
            lease_until: None,
            next_request_id: 1,
            witness_pending: BTreeMap::new(),
            last_witness_at: None,
            outdated: false,
            peer_current: true,
            peer_marked_outdated: false,
            fencing: Fencing::Idle,
            handoff_until: None,
            admin_standby: false,
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            counters: NodeCounters::default(),
        };
        node.event(
            now,
            EventKind::StateChanged {
                from: Role::InitialDead,
                to: Role::InitialDead,
                reason: Reason::Started,
            },
        );
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.config.local.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub fn counters(&self) -> &NodeCounters {
        &self.counters
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Whether the VIP is (believed) configured here.
    pub fn holds_vip(&self) -> bool {
        self.vip == Vip::Held
    }

    /// Timers fired: send heartbeats, age the peer, drive sequences.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.send_heartbeats_if_due(now);
        self.age_peer(now);
        self.send_witness_if_due(now);
        self.step(now);
        self.check_invariants(now);
    }

    /// Whether the peer's store holds every entry ours does (the replication
    /// link is in sync). While the peer is alive but not current, this
    /// node's lease requests tell the witness the peer is not to be
    /// trusted, so its Outdated mark stays until the resync is complete: a
    /// node that dies mid-resync leaves a peer that refuses promotion, not
    /// a stale active. Embedders without a store leave it true.
    pub fn set_peer_current(&mut self, current: bool) {
        self.peer_current = current;
    }

    /// Operator command.
    pub fn handle_admin(&mut self, now: Instant, command: Admin) {
        match command {
            Admin::Switchover => {
                let peer_ready =
                    self.peer_alive(now) && self.peer.is_some_and(|p| p.flags.eligible);
                if self.role == Role::Active && peer_ready {
                    self.begin_stopping(now, Reason::Switchover);
                } else {
                    self.event(now, EventKind::AdminRejected { command });
                }
            }
            Admin::Standby(true) => {
                self.admin_standby = true;
                match self.role {
                    Role::Active | Role::Promoting => {
                        self.begin_stopping(now, Reason::AdminStandby)
                    }
                    Role::Standby | Role::InitialDead | Role::Outdated => {
                        self.set_role(now, Role::Maintenance, Reason::AdminStandby)
                    }
                    Role::Stopping | Role::Maintenance => {}
                }
            }
            Admin::Standby(false) => {
                self.admin_standby = false;
                if self.role == Role::Maintenance {
                    self.set_role(now, Role::Standby, Reason::AdminOnline);
                }
            }
        }
        self.step(now);
        self.check_invariants(now);
    }

    /// Earliest instant `handle_timeout` must be called. Deadlines at or
    /// before the last input were handled with it and are not repeated.
    pub fn poll_timeout(&self) -> Instant {
        let timing = &self.config.timing;
        let mut candidates = Vec::with_capacity(4);
        if let Some(peer) = self.peer {
            if !self.peer_warned {
                candidates.push(peer.heard_at + timing.warn);
            }
            if !self.peer_dead_reported {
                candidates.push(peer.heard_at + timing.dead);
            }
        }
        if self.role == Role::InitialDead {
            candidates.push(self.started_at + timing.initial_dead);
        }
        candidates.extend(self.quorum_lapse_at());
        candidates.extend(self.vote_promised_until);
        if let (QuorumMode::Fencing(fencing), Some(peer)) = (&self.config.quorum, self.peer) {
            candidates.push(peer.heard_at + timing.dead + fencing.standby_delay);
        }
        // The heartbeat deadline always moves forward when handled.
        let later = candidates.into_iter().filter(|at| *at > self.last_input_at);
        later.fold(self.next_heartbeat_at, Instant::min)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ClusterEvent> {
        self.events.pop_front()
    }

    fn transmit(&mut self, destination: Destination, bytes: Vec<u8>) {
        if self.transmits.len() >= TRANSMIT_QUEUE_MAX {
            self.counters.transmits_dropped += 1;
            return;
        }
        self.transmits.push_back(Transmit { destination, bytes });
    }

    fn action(&mut self, action: Action) {
        assert!(
            self.actions.len() < ACTION_QUEUE_MAX,
            "action queue over its bound: the driver is not draining it"
        );
        self.actions.push_back(action);
    }

    fn event(&mut self, at: Instant, kind: EventKind) {
        if self.events.len() >= EVENT_QUEUE_MAX {
            self.events.pop_front();
            self.counters.events_dropped += 1;
        }
        let node = self.config.local.id;
        self.events.push_back(ClusterEvent { at, node, kind });
    }

    fn set_role(&mut self, now: Instant, to: Role, reason: Reason) {
        let from = self.role;
        if from == to {
            return;
        }
        if to == Role::Active {
            assert!(
                self.has_quorum(now),
                "{}: Active without a quorum proof",
                self.id()
            );
            assert_eq!(
                self.started,
                self.resources.len(),
                "Active before every resource started"
            );
        }
        if to == Role::Promoting {
            assert!(
                self.has_quorum(now),
                "{}: promoting without a quorum proof",
                self.id()
            );
        }
        self.role = to;
        self.event(now, EventKind::StateChanged { from, to, reason });
    }

    fn check_invariants(&mut self, now: Instant) {
        assert!(now >= self.last_input_at, "time went backwards");
        self.last_input_at = now;
        match self.role {
            Role::InitialDead | Role::Standby | Role::Outdated | Role::Maintenance => {
                assert_eq!(
                    self.started,
                    0,
                    "{}: {:?} with resources running",
                    self.id(),
                    self.role
                );
                assert_eq!(
                    self.vip,
                    Vip::Released,
                    "{}: {:?} holding the VIP",
                    self.id(),
                    self.role
                );
                assert!(
                    self.pending.is_none(),
                    "{}: {:?} with a step pending",
                    self.id(),
                    self.role
                );
            }
            Role::Active => {
                assert_eq!(
                    self.started,
                    self.resources.len(),
                    "Active with resources down"
                );
                assert!(self.pending.is_none() || self.pending == Some(Pending::Claim));
            }
            Role::Promoting | Role::Stopping => {}
        }
        assert!(self.started <= self.resources.len());
        assert!(self.sent_at.len() <= SENT_HISTORY_MAX);
        assert!(self.witness_pending.len() <= WITNESS_PENDING_MAX);
        assert!(self.transmits.len() <= TRANSMIT_QUEUE_MAX);
        assert!(self.events.len() <= EVENT_QUEUE_MAX);
    }
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
