//! Synchronous replication (protocol C), sans-IO: [`ReplicationPrimary`] and
//! [`ReplicationSecondary`] are state machines fed the peer's messages and
//! the local writes, drained through `poll_transmit`, `poll_event` and
//! `poll_timeout`; [`driver`] moves their bytes over a TCP stream of the
//! network seam.
//!
//! An entry goes out as a negotiation, then objects, then the entry: the
//! primary offers the ids an entry references, the secondary answers which
//! it lacks, the primary offers those objects' children, and so on; then it
//! sends only the lacking objects, children before parents (so a node that
//! has a tree always has everything below it), then the entry. The
//! secondary acknowledges once the entry is durable, and only then is the
//! writer told. The same exchange resyncs a node that was away (entries it
//! misses, objects it lacks) or, behind the compaction point, ships a
//! snapshot.

pub mod driver;
mod primary;
mod secondary;
pub mod wire;

#[cfg(test)]
mod tests;

pub use primary::{Progress, ReplicationPrimary};
pub use secondary::ReplicationSecondary;

use crate::journal::Epoch;

/// Resolution of a split brain (both sides wrote after their last common
/// entry), in the spirit of DRBD's `after-sb-*`. The loser's generations
/// are preserved as branches, never destroyed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SplitBrainPolicy {
    /// The side promoted later (higher epoch) loses.
    DiscardYoungerPrimary,
    /// The side with fewer non-lease entries loses; a tie disconnects.
    DiscardLeastChanges,
    /// A side whose divergent entries are only leases loses; otherwise
    /// disconnect.
    DiscardZeroChanges,
    /// Report and refuse to connect until an operator decides.
    #[default]
    Disconnect,
}

/// What the primary does with writes while its peer is unreachable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DegradedPolicy {
    /// Acknowledge writes once the peer is recorded Outdated.
    #[default]
    AcceptWhenOutdated,
    /// Never acknowledge a write the peer does not hold.
    RefuseWrites,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationConfig {
    pub node: u32,
    pub split_brain: SplitBrainPolicy,
    pub degraded: DegradedPolicy,
    /// How long to wait for any answer the protocol expects.
    pub response_timeout_ms: u64,
    /// Bytes of objects per message.
    pub objects_batch_bytes_max: usize,
    /// Writes waiting for the peer's ack.
    pub pending_writes_max: usize,
    /// Entries read from the journal at once during resync.
    pub resync_entries_batch_max: usize,
}

impl ReplicationConfig {
    pub fn new(node: u32) -> ReplicationConfig {
        ReplicationConfig {
            node,
            split_brain: SplitBrainPolicy::default(),
            degraded: DegradedPolicy::default(),
            response_timeout_ms: 5_000,
            objects_batch_bytes_max: 4 << 20,
            pending_writes_max: 1_024,
            resync_entries_batch_max: 256,
        }
    }
}

/// Which side wins a split brain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Winner {
    Local,
    Peer,
    /// Nobody: the policy says disconnect.
    Undecided,
}

/// Something the node's owner must know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Hellos exchanged, versions match.
    Connected {
        peer_node: u32,
    },
    /// Added by the drivers: the connection to the peer ended.
    Disconnected,
    VersionMismatch {
        local: u32,
        peer: u32,
    },
    ResyncStarted {
        from_seq: u64,
        to_seq: u64,
        snapshot: bool,
    },
    /// The peer holds every entry up to `seq` durably.
    PeerProgress {
        seq: u64,
    },
    InSync {
        seq: u64,
    },
    /// A write may be reported done to its caller.
    Acknowledged {
        seq: u64,
    },
    /// A write will not be acknowledged (peer gone, writes refused while
    /// degraded). It is on this node's disk but not guaranteed to survive.
    WriteFailed {
        seq: u64,
    },
    /// The peer stopped answering; the connection should be closed. The
    /// owner records the peer Outdated (witness or fencing) and calls
    /// `handle_peer_outdated`.
    PeerUnresponsive,
    SplitBrain {
        common_seq: u64,
        local_entries: u64,
        peer_entries: u64,
        winner: Winner,
    },
    /// The peer holds entries this primary lacks and this side wrote none:
    /// roles are wrong (a stale node was promoted).
    PeerAhead {
        peer_seq: u64,
        local_seq: u64,
    },
    /// Secondary: this side holds entries after the last one it shares
    /// with the primary (a split brain if the primary has some too, else
    /// a stale primary). The primary decides by its policy.
    Diverged {
        common_seq: u64,
        local_entries: u64,
        peer_entries: u64,
    },
    /// The operator's discard of this side's divergence failed (storage
    /// error, or divergence behind the compaction point); still armed.
    DiscardFailed,
    /// This side gave up its divergent entries after `common_seq`; the
    /// generations they made are kept as branches.
    DiscardedDivergence {
        common_seq: u64,
        branches: Vec<u64>,
    },
    Refused {
        reason: wire::RefuseReason,
    },
    /// The peer sent something the protocol does not allow; counted, and
    /// the connection should be closed.
    ProtocolViolation,
}

/// Counters of peer misbehaviour (never a panic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicationMetrics {
    pub malformed_messages: u64,
    pub unexpected_messages: u64,
    pub corrupt_objects: u64,
    pub objects_sent: u64,
    pub object_bytes_sent: u64,
    pub entries_sent: u64,
}

/// Which side's first divergent epoch is younger.
fn younger(local: Option<Epoch>, peer: Option<Epoch>) -> Winner {
    match (local, peer) {
        (Some(l), Some(p)) if l < p => Winner::Local,
        (Some(l), Some(p)) if p < l => Winner::Peer,
        _ => Winner::Undecided,
    }
}
