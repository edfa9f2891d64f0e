//! What the node knows of its store's replication, kept up to date from the
//! replication machines' events: the link, a resync in progress, a split
//! brain seen at the last contact and how it was resolved. `ironroot
//! status`, `split-brain resolve` and the metrics read it.

use std::sync::{Arc, Mutex};

use ironroot_store::replication::driver::PrimaryReport;
use ironroot_store::replication::wire::RefuseReason;
use ironroot_store::replication::{Event, Winner};
use serde::Serialize;

use crate::metrics::Sample;

/// The state of the replication link, as an operator reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Link {
    /// No connection to the peer (yet).
    #[default]
    Disconnected,
    /// Hellos exchanged.
    Connected,
    /// The peer is catching up.
    Resyncing,
    /// The peer holds every entry.
    InSync,
    /// Both sides wrote after their last common entry and the policy did
    /// not decide: an operator must.
    SplitBrain,
    /// The active node lacks entries the standby holds (a stale node was
    /// made active).
    PeerAhead,
    /// The connection was refused (protocol or version).
    Refused,
}

impl Link {
    pub const ALL: [Link; 7] = [
        Link::Disconnected,
        Link::Connected,
        Link::Resyncing,
        Link::InSync,
        Link::SplitBrain,
        Link::PeerAhead,
        Link::Refused,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Link::Disconnected => "disconnected",
            Link::Connected => "connected",
            Link::Resyncing => "resyncing",
            Link::InSync => "in-sync",
            Link::SplitBrain => "split-brain",
            Link::PeerAhead => "peer-ahead",
            Link::Refused => "refused",
        }
    }
}

/// A divergence seen at the last contact with the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Divergence {
    /// Last entry both sides share.
    pub common_seq: u64,
    /// Entries this node wrote after it.
    pub local_entries: u64,
    /// Entries the peer wrote after it.
    pub peer_entries: u64,
}

/// The last resolution applied on this node (the losing side).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Discarded {
    pub common_seq: u64,
    /// Generations kept as branches.
    pub branches: Vec<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReplicationState {
    pub link: Link,
    /// The divergence of the split brain waiting for an operator (or seen
    /// at the last contact while a policy resolves it).
    pub divergence: Option<Divergence>,
    /// A split brain (or a stale primary) waits for an operator. Kept
    /// across the reconnects the primary keeps trying, until a connection
    /// resyncs or this side discards its divergence.
    pub unresolved: bool,
    pub resync: Option<(u64, u64)>,
    pub last_discard: Option<Discarded>,
    pub resyncs_total: u64,
    pub in_sync_total: u64,
    /// Split brains detected (once each, not once per reconnect).
    pub split_brains_total: u64,
    pub discards_total: u64,
}

impl ReplicationState {
    /// Whether an operator has something to resolve.
    pub fn needs_resolution(&self) -> bool {
        self.unresolved
    }

    fn diverged(&mut self, divergence: Divergence, decided: bool) -> bool {
        let new = !self.unresolved;
        if new {
            self.split_brains_total += 1;
        }
        self.divergence = Some(divergence);
        if !decided {
            self.unresolved = true;
            self.link = Link::SplitBrain;
        }
        new
    }

    fn resolved(&mut self) {
        self.unresolved = false;
        self.divergence = None;
    }

    /// Fold one replication event in; true if it reports a divergence not
    /// known before (worth a warning; the repeats of every reconnect are
    /// not).
    pub fn handle_event(&mut self, event: &Event) -> bool {
        match event {
            Event::Connected { .. } => {
                if !self.unresolved {
                    self.link = Link::Connected;
                }
            }
            Event::Disconnected | Event::PeerUnresponsive => {
                if !self.unresolved {
                    self.link = Link::Disconnected;
                }
            }
            Event::ResyncStarted {
                from_seq, to_seq, ..
            } => {
                self.resolved();
                self.link = Link::Resyncing;
                self.resync = Some((*from_seq, *to_seq));
                self.resyncs_total += 1;
            }
            Event::InSync { .. } => {
                self.resolved();
                self.link = Link::InSync;
                self.resync = None;
                self.in_sync_total += 1;
            }
            Event::SplitBrain {
                common_seq,
                local_entries,
                peer_entries,
                winner,
            } => {
                let divergence = Divergence {
                    common_seq: *common_seq,
                    local_entries: *local_entries,
                    peer_entries: *peer_entries,
                };
                return self.diverged(divergence, *winner == Winner::Local);
            }
            Event::Diverged {
                common_seq,
                local_entries,
                peer_entries,
            } => {
                // The primary decides; its refusal (below) says it waits
                // for an operator.
                let new = !self.unresolved && self.divergence.is_none();
                self.divergence = Some(Divergence {
                    common_seq: *common_seq,
                    local_entries: *local_entries,
                    peer_entries: *peer_entries,
                });
                return new;
            }
            Event::PeerAhead {
                peer_seq,
                local_seq,
            } => {
                let divergence = Divergence {
                    common_seq: *local_seq,
                    local_entries: 0,
                    peer_entries: peer_seq - local_seq,
                };
                let new = self.diverged(divergence, false);
                self.link = Link::PeerAhead;
                return new;
            }
            Event::Refused { reason } => match reason {
                RefuseReason::SplitBrainUnresolved => {
                    if !self.unresolved {
                        self.split_brains_total += 1;
                    }
                    self.unresolved = true;
                    self.link = Link::SplitBrain;
                }
                RefuseReason::PeerAhead => {
                    self.unresolved = true;
                    self.link = Link::PeerAhead;
                }
                _ => self.link = Link::Refused,
            },
            Event::DiscardedDivergence {
                common_seq,
                branches,
            } => {
                self.resolved();
                self.link = Link::Resyncing;
                self.discards_total += 1;
                self.last_discard = Some(Discarded {
                    common_seq: *common_seq,
                    branches: branches.clone(),
                });
            }
            Event::VersionMismatch { .. } | Event::ProtocolViolation => self.link = Link::Refused,
            Event::PeerProgress { .. }
            | Event::Acknowledged { .. }
            | Event::WriteFailed { .. }
            | Event::DiscardFailed => {}
        }
        false
    }
}

/// Replication metrics: link state, lag, resync progress, split brains.
pub fn samples(
    state: &ReplicationState,
    primary: Option<PrimaryReport>,
    last_seq: u64,
) -> Vec<Sample> {
    let mut out: Vec<Sample> = Link::ALL
        .iter()
        .map(|link| {
            Sample::gauge(
                "ironroot_replication_link",
                "State of the replication link to the peer (1 = current).",
                f64::from(u8::from(state.link == *link)),
            )
            .label("state", link.name())
        })
        .collect();
    out.push(Sample::gauge(
        "ironroot_replication_split_brain",
        "Whether a split brain waits for an operator's resolution.",
        f64::from(u8::from(state.needs_resolution())),
    ));
    for (name, help, value) in [
        (
            "ironroot_replication_split_brains_total",
            "Split brains detected by this node as primary.",
            state.split_brains_total,
        ),
        (
            "ironroot_replication_resyncs_total",
            "Resyncs started by this node as primary.",
            state.resyncs_total,
        ),
        (
            "ironroot_replication_discards_total",
            "Times this node gave up its divergent entries (kept as branches).",
            state.discards_total,
        ),
    ] {
        out.push(Sample::counter(name, help, value));
    }
    // Only the primary knows how far behind the peer is.
    if let Some(report) = primary {
        let progress = report.progress;
        let behind = last_seq.saturating_sub(progress.peer_acked);
        out.push(Sample::gauge(
            "ironroot_replication_lag_entries",
            "Journal entries the peer does not hold yet (primary only).",
            behind as f64,
        ));
        out.push(Sample::gauge(
            "ironroot_replication_lag_bytes",
            "Bytes of objects still to ship for the entry in flight (primary only).",
            progress.bytes_remaining as f64,
        ));
        let resyncing = progress.resyncing;
        out.push(Sample::gauge(
            "ironroot_replication_resync_entries_remaining",
            "Entries a running resync still has to ship (primary only).",
            if resyncing { behind as f64 } else { 0.0 },
        ));
        out.push(Sample::gauge(
            "ironroot_replication_resync_objects_remaining",
            "Objects the entry in flight of a running resync still has to ship (primary only).",
            if resyncing {
                progress.objects_remaining as f64
            } else {
                0.0
            },
        ));
    }
    out
}

/// Shared between the event trackers, the admin API and metrics.
pub type SharedReplicationState = Arc<Mutex<ReplicationState>>;

/// Log every replication event and fold it into `state`.
pub async fn track(
    role: &'static str,
    mut events: tokio::sync::mpsc::Receiver<Event>,
    state: SharedReplicationState,
) {
    while let Some(event) = events.recv().await {
        let new = state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .handle_event(&event);
        match &event {
            Event::SplitBrain { .. } | Event::Diverged { .. } | Event::PeerAhead { .. } if new => {
                tracing::warn!(role, ?event, "replication: divergent histories");
            }
            Event::DiscardFailed => tracing::error!(
                role,
                "replication: discarding this node's divergent entries failed; still armed"
            ),
            // Every reconnect while a split brain waits repeats these.
            _ if state.lock().unwrap_or_else(|p| p.into_inner()).unresolved => {
                tracing::debug!(role, ?event, "replication");
            }
            _ => tracing::info!(role, ?event, "replication"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_brain_is_reported_until_resolved() {
        let mut state = ReplicationState::default();
        let undecided = Event::SplitBrain {
            common_seq: 4,
            local_entries: 2,
            peer_entries: 1,
            winner: Winner::Undecided,
        };
        // The primary retries every reconnect delay: one detection, one
        // warning, one count.
        for round in 0..3 {
            state.handle_event(&Event::Connected { peer_node: 2 });
            assert_eq!(state.handle_event(&undecided), round == 0, "round {round}");
            state.handle_event(&Event::Refused {
                reason: RefuseReason::SplitBrainUnresolved,
            });
            state.handle_event(&Event::Disconnected);
            assert_eq!(state.link, Link::SplitBrain, "kept across reconnects");
        }
        assert_eq!(state.split_brains_total, 1);
        assert!(state.needs_resolution());
        assert_eq!(state.divergence.map(|d| d.common_seq), Some(4));
        for event in [
            Event::Connected { peer_node: 2 },
            Event::SplitBrain {
                common_seq: 4,
                local_entries: 2,
                peer_entries: 1,
                winner: Winner::Local,
            },
            Event::ResyncStarted {
                from_seq: 5,
                to_seq: 6,
                snapshot: false,
            },
        ] {
            state.handle_event(&event);
        }
        assert_eq!(state.link, Link::Resyncing);
        assert!(!state.needs_resolution(), "resolution under way");
        state.handle_event(&Event::InSync { seq: 6 });
        assert_eq!(state.link, Link::InSync);
        assert_eq!(state.divergence, None);
        assert_eq!(
            state.split_brains_total, 1,
            "the same split brain, resolved"
        );
    }

    #[test]
    fn metrics_show_lag_resync_progress_and_split_brain() {
        let mut state = ReplicationState::default();
        state.handle_event(&Event::ResyncStarted {
            from_seq: 3,
            to_seq: 10,
            snapshot: false,
        });
        let report = PrimaryReport {
            progress: ironroot_store::replication::Progress {
                peer_acked: 4,
                resyncing: true,
                objects_remaining: 12,
                bytes_remaining: 4096,
            },
            keep_local_pending: false,
        };
        let text = crate::metrics::render(&samples(&state, Some(report), 10));
        for line in [
            "ironroot_replication_link{state=\"resyncing\"} 1\n",
            "ironroot_replication_link{state=\"in-sync\"} 0\n",
            "ironroot_replication_lag_entries 6\n",
            "ironroot_replication_lag_bytes 4096\n",
            "ironroot_replication_resync_entries_remaining 6\n",
            "ironroot_replication_resync_objects_remaining 12\n",
            "ironroot_replication_resyncs_total 1\n",
            "ironroot_replication_split_brain 0\n",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
        state.handle_event(&Event::Refused {
            reason: RefuseReason::SplitBrainUnresolved,
        });
        let text = crate::metrics::render(&samples(&state, None, 10));
        assert!(
            text.contains("ironroot_replication_split_brain 1\n"),
            "{text}"
        );
        assert!(
            !text.contains("lag_entries"),
            "only the primary knows the lag"
        );
    }

    #[test]
    fn the_loser_records_the_branches_it_kept() {
        let mut state = ReplicationState::default();
        state.handle_event(&Event::Connected { peer_node: 1 });
        state.handle_event(&Event::Diverged {
            common_seq: 3,
            local_entries: 1,
            peer_entries: 2,
        });
        state.handle_event(&Event::Refused {
            reason: RefuseReason::SplitBrainUnresolved,
        });
        assert_eq!(state.link, Link::SplitBrain);
        state.handle_event(&Event::DiscardedDivergence {
            common_seq: 3,
            branches: vec![4],
        });
        state.handle_event(&Event::Connected { peer_node: 1 });
        assert!(!state.needs_resolution());
        assert_eq!(state.discards_total, 1);
        assert_eq!(
            state.last_discard,
            Some(Discarded {
                common_seq: 3,
                branches: vec![4]
            })
        );
    }
}
