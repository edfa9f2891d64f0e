//! The secondary side of replication: answers offers, stores objects, and
//! acknowledges an entry only once it is durable here.

use std::collections::VecDeque;

use ironroot_net::Instant;

use super::primary::{count_changes, hello, outdated_after};
use super::wire::{
    decode_message, encode_message, Divergence, Message, RefuseReason, MESSAGE_LEN_MAX,
    OFFER_IDS_MAX, WIRE_VERSION,
};
use super::{Event, ReplicationConfig, ReplicationMetrics};
use crate::journal::JournalError;
use crate::objects::ObjectError;
use crate::state::last_common_seq;
use crate::store::{Store, StoreError};

/// Whether a store error is this node's storage failing.
fn is_storage(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Object(ObjectError::Storage(_)) | StoreError::Journal(JournalError::Storage(_))
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Down,
    AwaitHello,
    Ready,
    Closed,
}

/// The secondary's replication state machine.
pub struct ReplicationSecondary {
    config: ReplicationConfig,
    link: Link,
    input: Vec<u8>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    metrics: ReplicationMetrics,
    /// The operator gave up this side's history: the next divergence is
    /// resolved by keeping its generations as branches and going back to
    /// the common entry (one-shot).
    discard_local: bool,
    /// The primary's last entry at hello: `InSync` once it is held here.
    catch_up_to: Option<u64>,
}

impl ReplicationSecondary {
    pub fn new(config: ReplicationConfig) -> ReplicationSecondary {
        ReplicationSecondary {
            config,
            link: Link::Down,
            input: Vec::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            metrics: ReplicationMetrics::default(),
            discard_local: false,
            catch_up_to: None,
        }
    }

    /// Operator resolution of a split brain on the losing side: at the
    /// next primary's hello, the entries after the common one are dropped
    /// (their generations kept as branches) and this side resyncs.
    pub fn resolve_discard_local(&mut self) {
        self.discard_local = true;
    }

    /// Whether [`ReplicationSecondary::resolve_discard_local`] waits to be
    /// used.
    pub fn discard_local_pending(&self) -> bool {
        self.discard_local
    }

    pub fn metrics(&self) -> ReplicationMetrics {
        self.metrics
    }

    fn send(&mut self, message: &Message) {
        self.transmit.push_back(encode_message(message));
    }

    pub fn handle_connected(&mut self, _now: Instant, store: &Store) {
        self.link = Link::AwaitHello;
        self.input.clear();
        self.transmit.clear();
        let hello = hello(self.config.node, store);
        self.send(&Message::Hello(hello));
    }

    pub fn handle_disconnected(&mut self, _now: Instant) {
        self.link = Link::Down;
        self.catch_up_to = None;
        self.input.clear();
        self.transmit.clear();
    }

    /// Bytes from the primary.
    pub fn handle_bytes(&mut self, now: Instant, store: &mut Store, bytes: &[u8]) {
        if matches!(self.link, Link::Down | Link::Closed) {
            return;
        }
        if self.input.len() + bytes.len() > MESSAGE_LEN_MAX + 4 {
            return self.refuse(RefuseReason::ProtocolViolation, Event::ProtocolViolation);
        }
        self.input.extend_from_slice(bytes);
        loop {
            match decode_message(&self.input) {
                Ok(Some((message, used))) => {
                    self.input.drain(..used);
                    self.handle_message(now, store, message);
                    if matches!(self.link, Link::Down | Link::Closed) {
                        return;
                    }
                }
                Ok(None) => return,
                Err(_) => {
                    self.metrics.malformed_messages += 1;
                    return self.refuse(RefuseReason::ProtocolViolation, Event::ProtocolViolation);
                }
            }
        }
    }

    /// This node's disk refused what the primary sent: say so, so the
    /// primary (and the operator) see a local storage failure here, not a
    /// protocol violation or a corrupt object.
    fn storage_failed(&mut self) {
        self.refuse(
            RefuseReason::StorageFailed,
            Event::Refused {
                reason: RefuseReason::StorageFailed,
            },
        );
    }

    fn refuse(&mut self, reason: RefuseReason, event: Event) {
        if event == Event::ProtocolViolation {
            self.metrics.unexpected_messages += 1;
        }
        self.send(&Message::Refused { reason });
        self.events.push_back(event);
        self.link = Link::Closed;
    }

    fn handle_message(&mut self, _now: Instant, store: &mut Store, message: Message) {
        match (self.link, message) {
            (Link::AwaitHello, Message::Hello(peer)) => self.handle_hello(store, &peer),
            (Link::Ready, Message::Truncate { seq }) => self.handle_truncate(store, seq),
            (Link::Ready, Message::Offer { ids }) => {
                if ids.len() > OFFER_IDS_MAX {
                    return self.refuse(RefuseReason::ProtocolViolation, Event::ProtocolViolation);
                }
                let lacking = ids
                    .into_iter()
                    .filter(|id| !store.objects().contains(id))
                    .collect();
                self.send(&Message::Lacking { ids: lacking });
            }
            (Link::Ready, Message::Objects { objects }) => {
                for (id, kind, bytes) in objects {
                    match store.objects_mut().put_verified(id, kind, &bytes) {
                        Ok(_) => {}
                        Err(ObjectError::Storage(_)) => return self.storage_failed(),
                        Err(_) => {
                            self.metrics.corrupt_objects += 1;
                            return self.refuse(
                                RefuseReason::CorruptObject,
                                Event::Refused {
                                    reason: RefuseReason::CorruptObject,
                                },
                            );
                        }
                    }
                }
            }
            (Link::Ready, Message::Entry { record }) => {
                let seq = record.seq;
                let duplicate = store.state().last_seq() >= seq
                    && store.state().epoch_of(seq) == Some(record.epoch);
                let applied = if duplicate {
                    Ok(())
                } else {
                    store.apply_replicated(&record)
                };
                match applied {
                    Ok(()) => {}
                    Err(error) if is_storage(&error) => return self.storage_failed(),
                    Err(_) => {
                        return self
                            .refuse(RefuseReason::ProtocolViolation, Event::ProtocolViolation)
                    }
                }
                self.send(&Message::Ack { seq });
                self.check_caught_up(seq);
            }
            (Link::Ready, Message::Snapshot { bytes }) => match store.install_snapshot(&bytes) {
                Ok(()) => {
                    let seq = store.state().last_seq();
                    self.send(&Message::Ack { seq });
                    self.check_caught_up(seq);
                }
                Err(error) if is_storage(&error) => self.storage_failed(),
                Err(_) => self.refuse(RefuseReason::ProtocolViolation, Event::ProtocolViolation),
            },
            (_, Message::VersionRefused { supported }) => {
                self.events.push_back(Event::VersionMismatch {
                    local: WIRE_VERSION,
                    peer: supported,
                });
                self.link = Link::Closed;
            }
            (_, Message::Refused { reason }) => {
                self.events.push_back(Event::Refused { reason });
                self.link = Link::Closed;
            }
            _ => self.refuse(RefuseReason::ProtocolViolation, Event::ProtocolViolation),
        }
    }

    /// The primary's hello: check the version, then tell it how this
    /// side's history relates to its own.
    fn handle_hello(&mut self, store: &mut Store, peer: &super::wire::Hello) {
        if peer.wire_version != WIRE_VERSION {
            self.send(&Message::VersionRefused {
                supported: WIRE_VERSION,
            });
            self.events.push_back(Event::VersionMismatch {
                local: WIRE_VERSION,
                peer: peer.wire_version,
            });
            self.link = Link::Closed;
            return;
        }
        self.events.push_back(Event::Connected {
            peer_node: peer.node,
        });
        let peer_last = peer.last.map_or(0, |l| l.seq);
        let state = store.state();
        let common = last_common_seq(&state.epochs, state.last_seq(), &peer.epochs, peer_last);
        let local_entries = state.last_seq() - common;
        if local_entries > 0 && self.discard_local {
            if !self.discard_after(store, common) {
                return;
            }
        } else if local_entries > 0 {
            self.events.push_back(Event::Diverged {
                common_seq: common,
                local_entries,
                peer_entries: peer_last.saturating_sub(common),
            });
        }
        let state = store.state();
        let divergence_free = state.last_seq() == common;
        let divergence = Divergence {
            common_seq: common,
            entries_after: state.last_seq() - common,
            changes_after: count_changes(store, common),
            first_epoch_after: state.epoch_of(common + 1),
            outdated_after: outdated_after(store, common),
        };
        self.send(&Message::Divergence(divergence));
        self.link = Link::Ready;
        self.catch_up_to = Some(peer_last);
        if divergence_free {
            self.check_caught_up(store.state().last_seq());
        }
    }

    /// Tell the owner once this side holds what the primary had at hello.
    fn check_caught_up(&mut self, seq: u64) {
        if self.catch_up_to.is_some_and(|target| seq >= target) {
            self.catch_up_to = None;
            self.events.push_back(Event::InSync { seq });
        }
    }

    /// The operator's resolution: keep this side's divergent generations
    /// as branches and go back to `common`. False if that failed (the
    /// connection is refused and the resolution stays armed).
    fn discard_after(&mut self, store: &mut Store, common: u64) -> bool {
        let branches = match store.preserve_branches_after(common) {
            Ok(branches) => branches,
            Err(_) => {
                self.refuse(RefuseReason::SplitBrainUnresolved, Event::DiscardFailed);
                return false;
            }
        };
        if !matches!(store.truncate_after(common), Ok(true)) {
            // Behind the compaction point the journal cannot go back.
            self.refuse(RefuseReason::SplitBrainUnresolved, Event::DiscardFailed);
            return false;
        }
        self.discard_local = false;
        self.events.push_back(Event::DiscardedDivergence {
            common_seq: common,
            branches,
        });
        true
    }

    /// This side lost a split brain: keep its divergent generations as
    /// branches, then go back to the common entry (or wait for the
    /// snapshot the primary sends when the journal cannot go back).
    fn handle_truncate(&mut self, store: &mut Store, seq: u64) {
        if seq >= store.state().last_seq() {
            return;
        }
        let branches = match store.preserve_branches_after(seq) {
            Ok(branches) => branches,
            Err(_) => {
                return self.refuse(RefuseReason::ProtocolViolation, Event::ProtocolViolation)
            }
        };
        if store.truncate_after(seq).is_err() {
            return self.refuse(RefuseReason::ProtocolViolation, Event::ProtocolViolation);
        }
        self.events.push_back(Event::DiscardedDivergence {
            common_seq: seq,
            branches,
        });
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The secondary waits on nothing of its own; the primary's silence is
    /// the cluster manager's business.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}
