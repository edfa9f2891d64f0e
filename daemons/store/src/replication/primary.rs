//! The primary side of replication.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use ironroot_net::Instant;

use super::wire::{
    decode_message, encode_message, Divergence, Hello, Message, RefuseReason, MESSAGE_LEN_MAX,
    OFFER_IDS_MAX, WIRE_VERSION,
};
use super::{
    younger, DegradedPolicy, Event, ReplicationConfig, ReplicationMetrics, SplitBrainPolicy, Winner,
};
use crate::journal::{Entry, Record};
use crate::model::{ObjectId, ObjectKind};
use crate::state::last_common_seq;
use crate::store::Store;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Link {
    Down,
    AwaitHello,
    AwaitDivergence { peer: Box<Hello> },
    Ready,
    Closed,
}

enum Payload {
    Entry(Box<Record>),
    Snapshot { seq: u64, bytes: Vec<u8> },
}

impl Payload {
    fn seq(&self) -> u64 {
        match self {
            Payload::Entry(record) => record.seq,
            Payload::Snapshot { seq, .. } => *seq,
        }
    }
}

/// One entry (or snapshot) on its way to the peer.
struct Ship {
    payload: Option<Payload>,
    seq: u64,
    roots: Vec<ObjectId>,
    offered: BTreeSet<ObjectId>,
    lacking: BTreeSet<ObjectId>,
    /// Offers not yet answered, each with the ids it carried.
    outstanding: VecDeque<BTreeSet<ObjectId>>,
    frontier: Vec<ObjectId>,
    /// Objects still to send, children first; `Some` once negotiated.
    sending: Option<VecDeque<ObjectId>>,
    /// Stored bytes of the objects in `sending`.
    sending_bytes: u64,
}

/// How far the peer is behind, for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Highest entry the peer holds durably.
    pub peer_acked: u64,
    /// Whether a resync (reconnect catch-up) is running.
    pub resyncing: bool,
    /// Objects of the entry in flight the peer still lacks.
    pub objects_remaining: u64,
    /// Their stored bytes.
    pub bytes_remaining: u64,
}

/// The primary's replication state machine.
pub struct ReplicationPrimary {
    config: ReplicationConfig,
    link: Link,
    peer_acked: u64,
    peer_outdated: bool,
    resyncing: bool,
    pending: BTreeSet<u64>,
    outbox: BTreeMap<u64, Record>,
    ship: Option<Ship>,
    input: Vec<u8>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    deadline: Option<Instant>,
    /// Set when a connection ends with writes waiting, cleared when the
    /// peer acknowledges something: a peer that keeps accepting connections
    /// and refusing entries (its disk is full) must not hold writes forever
    /// by resetting the answer deadline at every reconnect.
    progress_deadline: Option<Instant>,
    metrics: ReplicationMetrics,
    /// The operator chose this side's history: the next divergence is
    /// resolved in its favour whatever the policy (one-shot).
    keep_local: bool,
}

impl ReplicationPrimary {
    pub fn new(config: ReplicationConfig) -> ReplicationPrimary {
        ReplicationPrimary {
            config,
            link: Link::Down,
            peer_acked: 0,
            peer_outdated: false,
            resyncing: false,
            pending: BTreeSet::new(),
            outbox: BTreeMap::new(),
            ship: None,
            input: Vec::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            deadline: None,
            progress_deadline: None,
            metrics: ReplicationMetrics::default(),
            keep_local: false,
        }
    }

    /// Operator resolution of a split brain on the winning side: at the
    /// next connection the peer's divergent entries are discarded (it keeps
    /// their generations as branches), whatever the policy.
    pub fn resolve_keep_local(&mut self) {
        self.keep_local = true;
    }

    /// Whether [`ReplicationPrimary::resolve_keep_local`] waits to be used.
    pub fn keep_local_pending(&self) -> bool {
        self.keep_local
    }

    pub fn progress(&self) -> Progress {
        let sending = self.ship.as_ref().and_then(|s| s.sending.as_ref());
        Progress {
            peer_acked: self.peer_acked,
            resyncing: self.resyncing,
            objects_remaining: sending.map_or(0, |s| s.len() as u64),
            bytes_remaining: self.ship.as_ref().map_or(0, |s| s.sending_bytes),
        }
    }

    pub fn metrics(&self) -> ReplicationMetrics {
        self.metrics
    }

    /// Whether a new write may start: the peer is connected and in the
    /// protocol, or recorded Outdated and the policy accepts writes then.
    pub fn may_write(&self) -> bool {
        self.link == Link::Ready
            || (self.peer_outdated && self.config.degraded == DegradedPolicy::AcceptWhenOutdated)
    }

    /// The protocol ended this connection (refusal, violation, version):
    /// the driver should drop it and reconnect later.
    pub fn is_closed(&self) -> bool {
        self.link == Link::Closed
    }

    pub fn peer_acked(&self) -> u64 {
        self.peer_acked
    }

    fn send(&mut self, message: &Message) {
        self.transmit.push_back(encode_message(message));
    }

    fn expect_answer(&mut self, now: Instant) {
        self.deadline = Some(now + Duration::from_millis(self.config.response_timeout_ms));
    }

    /// A connection to the peer is up: say hello.
    pub fn handle_connected(&mut self, now: Instant, store: &Store) {
        self.link = Link::AwaitHello;
        self.ship = None;
        self.input.clear();
        self.transmit.clear();
        let hello = hello(self.config.node, store);
        self.send(&Message::Hello(hello));
        self.expect_answer(now);
    }

    /// The connection is gone (closed by either side or by a timeout).
    pub fn handle_disconnected(&mut self, now: Instant) {
        self.link = Link::Down;
        self.ship = None;
        self.deadline = None;
        self.input.clear();
        self.transmit.clear();
        // Writes waiting for a peer that is gone: settled at once if it is
        // recorded Outdated already, else tell the owner in time to outdate
        // it.
        if self.peer_outdated {
            self.settle_pending();
        } else if !self.pending.is_empty() {
            self.expect_answer(now);
            self.progress_deadline
                .get_or_insert(now + Duration::from_millis(self.config.response_timeout_ms));
        }
    }

    /// Writes waiting for a peer recorded Outdated: settled by the
    /// degraded policy.
    fn settle_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for seq in pending {
            self.events.push_back(match self.config.degraded {
                DegradedPolicy::AcceptWhenOutdated => Event::Acknowledged { seq },
                DegradedPolicy::RefuseWrites => Event::WriteFailed { seq },
            });
        }
    }

    /// The owner recorded the peer Outdated (witness or fencing): pending
    /// writes are settled by the degraded policy.
    pub fn handle_peer_outdated(&mut self, _now: Instant) {
        self.peer_outdated = true;
        self.progress_deadline = None;
        // Resync reads them back from the journal; degraded mode must not
        // grow memory.
        self.outbox.clear();
        self.settle_pending();
    }

    /// A write this node made durably; it is acknowledged once the peer
    /// holds it (see [`Event::Acknowledged`]).
    pub fn handle_local_write(&mut self, now: Instant, store: &Store, record: Record) {
        let seq = record.seq;
        if self.link != Link::Ready && self.peer_outdated {
            self.events.push_back(match self.config.degraded {
                DegradedPolicy::AcceptWhenOutdated => Event::Acknowledged { seq },
                DegradedPolicy::RefuseWrites => Event::WriteFailed { seq },
            });
            return;
        }
        if self.pending.len() >= self.config.pending_writes_max {
            self.events.push_back(Event::WriteFailed { seq });
            return;
        }
        self.pending.insert(seq);
        if self.outbox.len() < self.config.pending_writes_max {
            self.outbox.insert(seq, record);
        }
        if self.link != Link::Ready && self.deadline.is_none() {
            self.expect_answer(now);
        }
        self.advance(now, store);
    }

    /// Bytes from the peer.
    pub fn handle_bytes(&mut self, now: Instant, store: &Store, bytes: &[u8]) {
        if self.link == Link::Closed || self.link == Link::Down {
            return;
        }
        if self.input.len() + bytes.len() > MESSAGE_LEN_MAX + 4 {
            // More than one maximal frame pending means the peer ignores
            // the framing.
            return self.violation();
        }
        self.input.extend_from_slice(bytes);
        loop {
            match decode_message(&self.input) {
                Ok(Some((message, used))) => {
                    self.input.drain(..used);
                    self.handle_message(now, store, message);
                    if matches!(self.link, Link::Closed | Link::Down) {
                        return;
                    }
                }
                Ok(None) => return,
                Err(_) => {
                    self.metrics.malformed_messages += 1;
                    return self.violation();
                }
            }
        }
    }

    fn violation(&mut self) {
        self.metrics.unexpected_messages += 1;
        self.send(&Message::Refused {
            reason: RefuseReason::ProtocolViolation,
        });
        self.close(Event::ProtocolViolation);
    }

    fn close(&mut self, event: Event) {
        self.events.push_back(event);
        self.link = Link::Closed;
        self.ship = None;
        self.deadline = None;
    }

    fn handle_message(&mut self, now: Instant, store: &Store, message: Message) {
        match (&self.link, message) {
            (Link::AwaitHello, Message::Hello(peer)) => {
                if peer.wire_version != WIRE_VERSION {
                    self.send(&Message::VersionRefused {
                        supported: WIRE_VERSION,
                    });
                    return self.close(Event::VersionMismatch {
                        local: WIRE_VERSION,
                        peer: peer.wire_version,
                    });
                }
                self.events.push_back(Event::Connected {
                    peer_node: peer.node,
                });
                self.link = Link::AwaitDivergence {
                    peer: Box::new(peer),
                };
                self.expect_answer(now);
            }
            (Link::AwaitDivergence { peer }, Message::Divergence(divergence)) => {
                let peer = peer.clone();
                self.handle_divergence(now, store, &peer, divergence);
            }
            (Link::Ready, Message::Lacking { ids }) => self.handle_lacking(now, store, ids),
            (Link::Ready, Message::Ack { seq }) => self.handle_ack(now, store, seq),
            (_, Message::VersionRefused { supported }) => self.close(Event::VersionMismatch {
                local: WIRE_VERSION,
                peer: supported,
            }),
            (_, Message::Refused { reason }) => self.close(Event::Refused { reason }),
            _ => self.violation(),
        }
    }

    fn handle_divergence(&mut self, now: Instant, store: &Store, peer: &Hello, d: Divergence) {
        let state = store.state();
        let common = last_common_seq(
            &state.epochs,
            state.last_seq(),
            &peer.epochs,
            peer.last.map_or(0, |l| l.seq),
        );
        if common != d.common_seq {
            return self.violation();
        }
        let local_entries = state.last_seq() - common;
        // The peer was primary and died before replicating its last entries,
        // and never recorded us Outdated: none of them was acknowledged, so
        // they go (its generations are kept as branches). No split brain.
        let unacknowledged = d.entries_after > 0 && !d.outdated_after;
        if unacknowledged {
            // Nothing to resolve: an operator's keep-local is spent too.
            self.keep_local = false;
            self.send(&Message::Truncate { seq: common });
        } else if d.entries_after > 0 && local_entries == 0 && !self.keep_local {
            self.send(&Message::Refused {
                reason: RefuseReason::PeerAhead,
            });
            return self.close(Event::PeerAhead {
                peer_seq: common + d.entries_after,
                local_seq: state.last_seq(),
            });
        }
        if d.entries_after > 0 && !unacknowledged {
            let winner = if self.keep_local {
                Winner::Local
            } else {
                self.split_brain_winner(store, common, &d)
            };
            self.keep_local = false;
            self.events.push_back(Event::SplitBrain {
                common_seq: common,
                local_entries,
                peer_entries: d.entries_after,
                winner,
            });
            if winner != Winner::Local {
                self.send(&Message::Refused {
                    reason: RefuseReason::SplitBrainUnresolved,
                });
                return self.close(Event::Refused {
                    reason: RefuseReason::SplitBrainUnresolved,
                });
            }
            self.send(&Message::Truncate { seq: common });
        }
        self.link = Link::Ready;
        self.deadline = None;
        self.peer_acked = common;
        // A peer that cannot go back to `common` through its journal gets
        // a snapshot instead.
        let peer_can_truncate = d.entries_after == 0
            || peer
                .journal_first_seq
                .is_some_and(|first| first <= common + 1);
        self.resyncing = true;
        let snapshot = !peer_can_truncate || self.needs_snapshot(store);
        self.events.push_back(Event::ResyncStarted {
            from_seq: common + 1,
            to_seq: state.last_seq(),
            snapshot,
        });
        if snapshot {
            self.start_ship(now, store, true);
        } else {
            self.advance(now, store);
        }
    }

    /// Who wins a split brain after `common`, by the configured policy.
    fn split_brain_winner(&self, store: &Store, common: u64, d: &Divergence) -> Winner {
        let local_changes = count_changes(store, common);
        match self.config.split_brain {
            SplitBrainPolicy::Disconnect => Winner::Undecided,
            SplitBrainPolicy::DiscardYoungerPrimary => {
                younger(store.state().epoch_of(common + 1), d.first_epoch_after)
            }
            SplitBrainPolicy::DiscardLeastChanges => match local_changes.cmp(&d.changes_after) {
                std::cmp::Ordering::Greater => Winner::Local,
                std::cmp::Ordering::Less => Winner::Peer,
                std::cmp::Ordering::Equal => Winner::Undecided,
            },
            SplitBrainPolicy::DiscardZeroChanges => match (local_changes, d.changes_after) {
                (_, 0) => Winner::Local,
                (0, _) => Winner::Peer,
                _ => Winner::Undecided,
            },
        }
    }

    fn needs_snapshot(&self, store: &Store) -> bool {
        let next = self.peer_acked + 1;
        next <= store.state().last_seq()
            && !self.outbox.contains_key(&next)
            && store.journal().first_seq().is_none_or(|first| first > next)
    }

    /// Start shipping the next entry the peer lacks, if idle.
    fn advance(&mut self, now: Instant, store: &Store) {
        if self.link != Link::Ready || self.ship.is_some() {
            return;
        }
        let next = self.peer_acked + 1;
        if next > store.state().last_seq() {
            if self.resyncing {
                self.resyncing = false;
                self.peer_outdated = false;
                self.events.push_back(Event::InSync {
                    seq: self.peer_acked,
                });
            }
            return;
        }
        let snapshot = self.needs_snapshot(store);
        self.start_ship(now, store, snapshot);
    }

    fn start_ship(&mut self, now: Instant, store: &Store, snapshot: bool) {
        let payload = if snapshot {
            Payload::Snapshot {
                seq: store.state().last_seq(),
                bytes: store.snapshot(),
            }
        } else {
            let next = self.peer_acked + 1;
            if !self.outbox.contains_key(&next) {
                let batch = store
                    .journal()
                    .read_from(next, self.config.resync_entries_batch_max)
                    .unwrap_or_default();
                for record in batch {
                    self.outbox.insert(record.seq, record);
                }
            }
            match self.outbox.get(&next) {
                Some(record) => Payload::Entry(Box::new(record.clone())),
                None => return self.close(Event::ProtocolViolation),
            }
        };
        let roots = match &payload {
            Payload::Entry(record) => record.entry.object_roots(),
            Payload::Snapshot { .. } => snapshot_roots(store),
        };
        let mut ship = Ship {
            seq: payload.seq(),
            payload: Some(payload),
            roots: roots.clone(),
            offered: BTreeSet::new(),
            lacking: BTreeSet::new(),
            outstanding: VecDeque::new(),
            frontier: roots,
            sending: None,
            sending_bytes: 0,
        };
        self.offer_frontier(now, store, &mut ship);
        self.ship = Some(ship);
    }

    fn offer_frontier(&mut self, now: Instant, store: &Store, ship: &mut Ship) {
        let frontier: Vec<ObjectId> = std::mem::take(&mut ship.frontier)
            .into_iter()
            .filter(|id| ship.offered.insert(*id))
            .collect();
        if frontier.is_empty() {
            let order = post_order(store, &ship.roots, &ship.lacking);
            ship.sending_bytes = order
                .iter()
                .map(|id| store.objects().stored_len(id).unwrap_or(0))
                .sum();
            ship.sending = Some(order.into());
            // Streaming may take longer than one answer: the driver's write
            // timeout covers it, and the wait for the ack starts once the
            // payload is out.
            self.deadline = None;
            return;
        }
        for ids in frontier.chunks(OFFER_IDS_MAX) {
            ship.outstanding.push_back(ids.iter().copied().collect());
            self.send(&Message::Offer { ids: ids.to_vec() });
        }
        self.expect_answer(now);
    }

    fn handle_lacking(&mut self, now: Instant, store: &Store, ids: Vec<ObjectId>) {
        let Some(mut ship) = self.ship.take() else {
            return self.violation();
        };
        let Some(offer) = ship.outstanding.pop_front() else {
            return self.violation();
        };
        for id in ids {
            if !offer.contains(&id) {
                return self.violation();
            }
            if ship.lacking.insert(id) && store.objects().kind(&id) != Some(ObjectKind::Chunk) {
                ship.frontier
                    .extend(store.objects().children(&id).unwrap_or_default());
            }
        }
        if ship.outstanding.is_empty() {
            self.offer_frontier(now, store, &mut ship);
        }
        self.ship = Some(ship);
    }

    fn handle_ack(&mut self, now: Instant, store: &Store, seq: u64) {
        if seq > store.state().last_seq() {
            return self.violation();
        }
        if seq > self.peer_acked {
            self.peer_acked = seq;
            self.progress_deadline = None;
            self.events.push_back(Event::PeerProgress { seq });
        }
        let acked: Vec<u64> = self.pending.range(..=seq).copied().collect();
        for seq in acked {
            self.pending.remove(&seq);
            self.events.push_back(Event::Acknowledged { seq });
        }
        self.outbox.retain(|s, _| *s > seq);
        if self.ship.as_ref().is_some_and(|s| s.seq <= seq) {
            self.ship = None;
            self.deadline = None;
        }
        self.advance(now, store);
    }

    /// Time passed: give up on a peer that did not answer in time.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|d| now >= d) {
            self.deadline = None;
            self.progress_deadline = None;
            self.link = Link::Down;
            self.ship = None;
            self.events.push_back(Event::PeerUnresponsive);
            if self.peer_outdated {
                self.settle_pending();
            }
        }
    }

    /// Next bytes for the peer.
    pub fn poll_transmit(&mut self, now: Instant, store: &Store) -> Option<Vec<u8>> {
        if let Some(bytes) = self.transmit.pop_front() {
            return Some(bytes);
        }
        let ship = self.ship.as_mut()?;
        let sending = ship.sending.as_mut()?;
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        let mut sent_stored = 0u64;
        while let Some(id) = sending.front().copied() {
            let Ok((kind, bytes)) = store.objects().get(&id) else {
                // A local object failed its hash: never ship it.
                self.metrics.corrupt_objects += 1;
                self.close(Event::Refused {
                    reason: RefuseReason::CorruptObject,
                });
                return None;
            };
            if !batch.is_empty() && batch_bytes + bytes.len() > self.config.objects_batch_bytes_max
            {
                break;
            }
            sending.pop_front();
            sent_stored += store.objects().stored_len(&id).unwrap_or(0);
            batch_bytes += bytes.len();
            self.metrics.objects_sent += 1;
            self.metrics.object_bytes_sent += bytes.len() as u64;
            batch.push((id, kind, bytes));
        }
        ship.sending_bytes = ship.sending_bytes.saturating_sub(sent_stored);
        if !batch.is_empty() {
            return Some(encode_message(&Message::Objects { objects: batch }));
        }
        let payload = ship.payload.take()?;
        self.expect_answer(now);
        self.metrics.entries_sent += 1;
        Some(encode_message(&match payload {
            Payload::Entry(record) => Message::Entry { record },
            Payload::Snapshot { bytes, .. } => Message::Snapshot { bytes },
        }))
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.deadline, self.progress_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

pub(super) fn hello(node: u32, store: &Store) -> Hello {
    Hello {
        wire_version: WIRE_VERSION,
        node,
        last: store.state().last,
        epochs: store.state().epochs.clone(),
        journal_first_seq: store.journal().first_seq(),
    }
}

/// Non-lease entries after `common` in this node's journal.
pub(super) fn count_changes(store: &Store, common: u64) -> u64 {
    let records = store
        .journal()
        .read_from(common + 1, usize::MAX)
        .unwrap_or_default();
    records
        .iter()
        .filter(|r| !r.entry.is_lease() && r.entry != Entry::PeerOutdated)
        .count() as u64
}

/// Whether this node's entries after `common` include an
/// [`Entry::PeerOutdated`] (it may have acknowledged some alone).
pub(super) fn outdated_after(store: &Store, common: u64) -> bool {
    store
        .journal()
        .read_from(common + 1, usize::MAX)
        .unwrap_or_default()
        .iter()
        .any(|r| r.entry == Entry::PeerOutdated)
}

fn snapshot_roots(store: &Store) -> Vec<ObjectId> {
    let state = store.state();
    let mut roots: Vec<ObjectId> = state
        .generations
        .values()
        .filter_map(|g| g.root.kind.object())
        .chain(
            state
                .clients
                .values()
                .filter_map(|c| c.exceptions.as_ref().and_then(|n| n.kind.object())),
        )
        .collect();
    roots.sort();
    roots.dedup();
    roots
}

/// The `lacking` objects reachable from `roots`, children before parents.
fn post_order(store: &Store, roots: &[ObjectId], lacking: &BTreeSet<ObjectId>) -> Vec<ObjectId> {
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    let mut stack: Vec<(ObjectId, bool)> = roots
        .iter()
        .filter(|id| lacking.contains(id))
        .map(|id| (*id, false))
        .collect();
    while let Some((id, expanded)) = stack.pop() {
        if done.contains(&id) {
            continue;
        }
        if expanded {
            done.insert(id);
            out.push(id);
            continue;
        }
        stack.push((id, true));
        if store.objects().kind(&id) == Some(ObjectKind::Chunk) {
            continue;
        }
        for child in store.objects().children(&id).unwrap_or_default() {
            if lacking.contains(&child) && !done.contains(&child) {
                stack.push((child, false));
            }
        }
    }
    out
}
