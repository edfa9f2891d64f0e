//! The replication state machines against each other, with virtual time
//! and in-memory storage.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ironroot_net::Instant;

use super::wire::{encode_message, Hello, Message, RefuseReason};
use super::*;
use crate::journal::{Lease, Record};
use crate::model::{NodeKind, Timestamp};
use crate::storage::MemStorage;
use crate::store::Store;

fn store(node: u32, primary: bool) -> Store {
    let (mut store, _) = Store::open(Arc::new(MemStorage::new())).unwrap();
    if primary {
        store.promote(node, 0);
    }
    store
}

fn write_file(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

struct Pair {
    a: Store,
    b: Store,
    primary: ReplicationPrimary,
    secondary: ReplicationSecondary,
    now: Instant,
    primary_events: Vec<Event>,
    secondary_events: Vec<Event>,
    link_up: bool,
    tree: tempfile::TempDir,
}

impl Pair {
    fn new(config: ReplicationConfig) -> Pair {
        Pair::with_stores(store(1, true), store(2, false), config)
    }

    fn with_stores(a: Store, b: Store, config: ReplicationConfig) -> Pair {
        let mut secondary_config = config.clone();
        secondary_config.node = 2;
        Pair {
            a,
            b,
            primary: ReplicationPrimary::new(config),
            secondary: ReplicationSecondary::new(secondary_config),
            now: Instant::from_millis(1_000),
            primary_events: Vec::new(),
            secondary_events: Vec::new(),
            link_up: false,
            tree: tempfile::tempdir().unwrap(),
        }
    }

    fn connect(&mut self) {
        self.link_up = true;
        self.primary.handle_connected(self.now, &self.a);
        self.secondary.handle_connected(self.now, &self.b);
        self.pump();
    }

    fn disconnect(&mut self) {
        self.link_up = false;
        self.primary.handle_disconnected(self.now);
        self.secondary.handle_disconnected(self.now);
    }

    fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            while let Some(bytes) = self.primary.poll_transmit(self.now, &self.a) {
                if self.link_up {
                    self.secondary.handle_bytes(self.now, &mut self.b, &bytes);
                }
                moved = true;
            }
            while let Some(bytes) = self.secondary.poll_transmit() {
                if self.link_up {
                    self.primary.handle_bytes(self.now, &self.a, &bytes);
                }
                moved = true;
            }
            while let Some(event) = self.primary.poll_event() {
                self.primary_events.push(event);
            }
            while let Some(event) = self.secondary.poll_event() {
                self.secondary_events.push(event);
            }
            if !moved {
                return;
            }
        }
        panic!("replication did not settle");
    }

    /// Import the scratch tree as a new generation and hand it to the
    /// primary machine, without pumping.
    fn import(&mut self, image: &str) -> Record {
        let record = self
            .a
            .import_dir(image, self.tree.path(), Timestamp::default(), "m")
            .unwrap();
        self.primary
            .handle_local_write(self.now, &self.a, record.clone());
        record
    }

    fn acked(&self, seq: u64) -> bool {
        self.primary_events.contains(&Event::Acknowledged { seq })
    }

    fn assert_converged(&self) {
        assert_eq!(self.a.state().content_hash(), self.b.state().content_hash());
    }
}

#[test]
fn a_write_is_acknowledged_only_once_the_peer_holds_it() {
    let mut pair = Pair::new(ReplicationConfig::new(1));
    pair.connect();
    assert!(pair
        .primary_events
        .contains(&Event::Connected { peer_node: 2 }));
    write_file(pair.tree.path(), "etc/hostname", b"node");
    let record = pair.import("debian");
    assert!(!pair.acked(record.seq), "not before the peer answered");
    pair.pump();
    assert!(pair.acked(record.seq));
    pair.assert_converged();
    let root = &pair.b.state().current("debian").unwrap().root;
    let NodeKind::Dir { tree } = &root.kind else {
        panic!()
    };
    let etc = pair.b.objects().get_tree(tree).unwrap().entries[&b"etc"[..]].clone();
    let NodeKind::Dir { tree } = &etc.kind else {
        panic!()
    };
    let host = pair.b.objects().get_tree(tree).unwrap().entries[&b"hostname"[..]].clone();
    assert_eq!(pair.b.read_file(host.file_id, 0, 10).unwrap(), b"node");
}

#[test]
fn a_small_change_ships_only_the_changed_chunks() {
    let mut pair = Pair::new(ReplicationConfig::new(1));
    pair.connect();
    let mut big = pseudo_random(4 << 20, 5);
    write_file(pair.tree.path(), "usr/lib/big.so", &big);
    write_file(pair.tree.path(), "etc/other", b"unchanged");
    pair.import("debian");
    pair.pump();
    let first = pair.primary.metrics().object_bytes_sent;
    assert!(first > 4 << 20);
    big[2_000_000..2_000_100].copy_from_slice(&[0u8; 100]);
    write_file(pair.tree.path(), "usr/lib/big.so", &big);
    let record = pair.import("debian");
    pair.pump();
    assert!(pair.acked(record.seq));
    let second = pair.primary.metrics().object_bytes_sent - first;
    assert!(
        second < 600 * 1024,
        "{second} bytes shipped for a 100-byte change"
    );
    pair.assert_converged();
}

#[test]
fn an_outdated_peer_resyncs_missing_entries_on_reconnect() {
    let mut pair = Pair::new(ReplicationConfig::new(1));
    pair.connect();
    write_file(pair.tree.path(), "f", b"one");
    pair.import("img");
    pair.pump();
    pair.disconnect();
    pair.primary.handle_peer_outdated(pair.now);
    assert!(pair.primary.may_write());
    for i in 0..3u8 {
        write_file(pair.tree.path(), "f", &[i; 10]);
        let record = pair.import("img");
        pair.pump();
        assert!(pair.acked(record.seq), "degraded mode acknowledges at once");
    }
    pair.connect();
    assert!(pair.primary_events.contains(&Event::ResyncStarted {
        from_seq: 2,
        to_seq: 4,
        snapshot: false
    }));
    assert!(pair.primary_events.contains(&Event::InSync { seq: 4 }));
    pair.assert_converged();
}

#[test]
fn a_peer_behind_the_compaction_point_gets_a_snapshot() {
    let mut pair = Pair::new(ReplicationConfig::new(1));
    write_file(pair.tree.path(), "f", b"one");
    for _ in 0..3 {
        pair.import("img");
    }
    pair.primary.handle_peer_outdated(pair.now);
    pair.a.compact().unwrap();
    pair.connect();
    assert!(pair
        .primary_events
        .iter()
        .any(|e| matches!(e, Event::ResyncStarted { snapshot: true, .. })));
    pair.assert_converged();
    write_file(pair.tree.path(), "f", b"two");
    let record = pair.import("img");
    pair.pump();
    assert!(pair.acked(record.seq));
    pair.assert_converged();
}

#[test]
fn a_wire_version_mismatch_is_refused_clearly() {
    let mut pair = Pair::new(ReplicationConfig::new(1));
    pair.primary.handle_connected(pair.now, &pair.a);
    let hello = Hello {
        wire_version: 99,
        node: 2,
        last: None,
        epochs: vec![],
        journal_first_seq: None,
    };
    let bytes = encode_message(&Message::Hello(hello));
    pair.primary.handle_bytes(pair.now, &pair.a, &bytes);
    assert_eq!(
        pair.primary.poll_event(),
        Some(Event::VersionMismatch {
            local: super::wire::WIRE_VERSION,
            peer: 99
        })
    );
    let mut last = None;
    while let Some(out) = pair.primary.poll_transmit(pair.now, &pair.a) {
        last = Some(out);
    }
    assert_eq!(
        last,
        Some(encode_message(&Message::VersionRefused {
            supported: super::wire::WIRE_VERSION
        }))
    );
}

#[test]
fn a_silent_peer_times_out_and_writes_wait_for_outdating() {
    for policy in [
        DegradedPolicy::AcceptWhenOutdated,
        DegradedPolicy::RefuseWrites,
    ] {
        let mut config = ReplicationConfig::new(1);
        config.degraded = policy;
        let mut pair = Pair::new(config);
        pair.connect();
        pair.link_up = false;
        write_file(pair.tree.path(), "f", b"x");
        let record = pair.import("img");
        pair.pump();
        let deadline = pair.primary.poll_timeout().expect("waiting for the peer");
        pair.primary.handle_timeout(Instant::from_origin(
            deadline.since_origin() - Duration::from_millis(1),
        ));
        assert!(pair.primary.poll_event().is_none());
        pair.primary.handle_timeout(deadline);
        assert_eq!(pair.primary.poll_event(), Some(Event::PeerUnresponsive));
        assert!(!pair.primary.may_write(), "not before the peer is outdated");
        pair.primary.handle_peer_outdated(deadline);
        let expected = match policy {
            DegradedPolicy::AcceptWhenOutdated => Event::Acknowledged { seq: record.seq },
            DegradedPolicy::RefuseWrites => Event::WriteFailed { seq: record.seq },
        };
        assert_eq!(pair.primary.poll_event(), Some(expected));
    }
}

/// Both nodes start in sync; then node 1 writes `a_writes` entries as the
/// old primary while node 2, promoted, writes `b_writes`; each side first
/// records the other Outdated (a primary acknowledges nothing alone before).
fn split(a_writes: usize, b_writes: usize, config: &ReplicationConfig) -> (Store, Store) {
    let mut pair = Pair::new(config.clone());
    pair.connect();
    write_file(pair.tree.path(), "f", b"common");
    pair.import("img");
    pair.pump();
    pair.disconnect();
    let Pair {
        mut a, mut b, tree, ..
    } = pair;
    b.promote(2, 1);
    if a_writes > 0 {
        a.record_peer_outdated().unwrap();
    }
    if b_writes > 0 {
        b.record_peer_outdated().unwrap();
    }
    for i in 0..a_writes {
        write_file(tree.path(), "f", format!("a{i}").as_bytes());
        a.import_dir("img", tree.path(), Timestamp::default(), "a")
            .unwrap();
    }
    for i in 0..b_writes {
        write_file(tree.path(), "f", format!("b{i}").as_bytes());
        b.import_dir("img", tree.path(), Timestamp::default(), "b")
            .unwrap();
    }
    b.demote();
    (a, b)
}

#[test]
fn split_brain_disconnects_by_default() {
    let config = ReplicationConfig::new(1);
    let (a, b) = split(1, 1, &config);
    let (hash_a, hash_b) = (a.state().content_hash(), b.state().content_hash());
    let mut pair = Pair::with_stores(a, b, config);
    pair.connect();
    // Each side: its PeerOutdated entry and one generation.
    assert!(pair.primary_events.contains(&Event::SplitBrain {
        common_seq: 1,
        local_entries: 2,
        peer_entries: 2,
        winner: Winner::Undecided,
    }));
    assert_eq!(
        (pair.a.state().content_hash(), pair.b.state().content_hash()),
        (hash_a, hash_b)
    );
}

#[test]
fn split_brain_discarding_the_younger_primary_keeps_its_generations() {
    let mut config = ReplicationConfig::new(1);
    config.split_brain = SplitBrainPolicy::DiscardYoungerPrimary;
    let (a, b) = split(2, 1, &config);
    let mut pair = Pair::with_stores(a, b, config);
    pair.connect();
    assert!(pair.primary_events.iter().any(|e| matches!(
        e,
        Event::SplitBrain {
            winner: Winner::Local,
            ..
        }
    )));
    // b's PeerOutdated entry is seq 2, its generation seq 3.
    assert!(pair.secondary_events.contains(&Event::DiscardedDivergence {
        common_seq: 1,
        branches: vec![3]
    }));
    pair.assert_converged();
    let branch = &pair.b.branches()[0];
    assert_eq!(branch.message, "b");
    // The branch's content is still stored on the loser.
    let NodeKind::Dir { tree } = &branch.root.kind else {
        panic!()
    };
    let f = pair.b.objects().get_tree(tree).unwrap().entries[&b"f"[..]].clone();
    let NodeKind::File { blob, .. } = f.kind else {
        panic!()
    };
    let chunk = pair.b.objects().get_blob(&blob).unwrap().chunks[0].id;
    assert_eq!(pair.b.objects().get(&chunk).unwrap().1, b"b0");
}

#[test]
fn split_brain_discarding_least_changes_lets_the_busier_side_win() {
    let mut config = ReplicationConfig::new(1);
    config.split_brain = SplitBrainPolicy::DiscardLeastChanges;
    let (a, b) = split(1, 2, &config);
    let mut pair = Pair::with_stores(a, b, config.clone());
    pair.connect();
    assert!(pair.primary_events.iter().any(|e| matches!(
        e,
        Event::SplitBrain {
            winner: Winner::Peer,
            ..
        }
    )));
    // The owner swaps roles: node 2 becomes primary and wins.
    let Pair { mut a, mut b, .. } = pair;
    a.demote();
    b.promote(2, 2);
    let mut swapped = Pair::with_stores(b, a, config);
    swapped.connect();
    assert!(swapped.primary_events.iter().any(|e| matches!(
        e,
        Event::SplitBrain {
            winner: Winner::Local,
            ..
        }
    )));
    swapped.assert_converged();
    assert_eq!(swapped.b.branches().len(), 1);

    // Node 1 kept its generation; once primary again it publishes it and
    // both replicas hold it under a branch ref, with fresh file ids.
    let Pair {
        a: mut b, b: mut a, ..
    } = swapped;
    b.demote();
    a.promote(1, 3);
    let published = a.publish_branches().unwrap();
    assert_eq!(published.len(), 1);
    let mut back = Pair::with_stores(a, b, ReplicationConfig::new(1));
    back.connect();
    back.assert_converged();
    let (name, id) = back
        .b
        .state()
        .refs
        .iter()
        .find(|(n, _)| n.starts_with("branch/"))
        .unwrap();
    assert_eq!(name, &format!("branch/img/{id}"));
    let root = &back.b.state().generations[id].root;
    let NodeKind::Dir { tree } = &root.kind else {
        panic!()
    };
    let f = back.b.objects().get_tree(tree).unwrap().entries[&b"f"[..]].clone();
    assert_eq!(back.b.read_file(f.file_id, 0, 10).unwrap(), b"a0");
}

#[test]
fn split_brain_discarding_zero_changes_ignores_lease_only_sides() {
    let mut config = ReplicationConfig::new(1);
    config.split_brain = SplitBrainPolicy::DiscardZeroChanges;
    let (a, mut b) = split(1, 0, &config);
    b.promote(2, 1);
    b.record_peer_outdated().unwrap();
    b.record_lease(
        [1; 6],
        Lease {
            ipv4: [10, 0, 0, 5],
            expires_unix_secs: 9,
        },
    )
    .unwrap();
    b.demote();
    let mut pair = Pair::with_stores(a, b, config);
    pair.connect();
    assert!(pair.primary_events.iter().any(|e| matches!(
        e,
        Event::SplitBrain {
            winner: Winner::Local,
            ..
        }
    )));
    pair.assert_converged();
}

#[test]
fn garbage_from_the_peer_is_counted_not_panicked_on() {
    let mut pair = Pair::new(ReplicationConfig::new(1));
    pair.connect();
    pair.primary
        .handle_bytes(pair.now, &pair.a, &[0, 0, 0, 3, 0xff, 0xff, 0xff]);
    assert_eq!(pair.primary.metrics().malformed_messages, 1);
    pair.secondary
        .handle_bytes(pair.now, &mut pair.b, &[0xff, 0xff, 0xff, 0xff]);
    assert!(pair.secondary.poll_event().is_some());
}

fn branch_content(store: &Store, index: usize) -> Vec<u8> {
    let branch = &store.branches()[index];
    let NodeKind::Dir { tree } = &branch.root.kind else {
        panic!("a branch root is a directory")
    };
    let f = store.objects().get_tree(tree).unwrap().entries[&b"f"[..]].clone();
    let NodeKind::File { blob, .. } = f.kind else {
        panic!("f is a file")
    };
    let chunk = store.objects().get_blob(&blob).unwrap().chunks[0].id;
    store.objects().get(&chunk).unwrap().1
}

#[test]
fn an_operator_discards_the_losers_changes_on_the_secondary() {
    let config = ReplicationConfig::new(1);
    let (a, b) = split(1, 2, &config);
    let hash_a = a.state().content_hash();
    let mut pair = Pair::with_stores(a, b, config);
    pair.connect();
    assert!(pair.secondary_events.contains(&Event::Diverged {
        common_seq: 1,
        local_entries: 3,
        peer_entries: 2,
    }));
    assert!(pair.primary_events.contains(&Event::Refused {
        reason: RefuseReason::SplitBrainUnresolved
    }));
    assert_ne!(
        pair.b.state().content_hash(),
        hash_a,
        "nothing resolved yet"
    );

    pair.secondary.resolve_discard_local();
    assert!(pair.secondary.discard_local_pending());
    pair.disconnect();
    pair.primary_events.clear();
    pair.connect();
    assert!(!pair.secondary.discard_local_pending(), "one-shot");
    assert!(pair.secondary_events.contains(&Event::DiscardedDivergence {
        common_seq: 1,
        branches: vec![3, 4],
    }));
    assert!(pair.primary_events.contains(&Event::InSync { seq: 3 }));
    assert!(!pair
        .primary_events
        .iter()
        .any(|e| matches!(e, Event::SplitBrain { .. })));
    pair.assert_converged();
    assert_eq!(
        pair.a.state().content_hash(),
        hash_a,
        "the winner is intact"
    );
    assert_eq!(pair.b.branches().len(), 2);
    assert_eq!(branch_content(&pair.b, 0), b"b0");
    assert_eq!(branch_content(&pair.b, 1), b"b1");

    // Replication carries on: a new write is acknowledged by the peer.
    write_file(pair.tree.path(), "f", b"after");
    let record = pair.import("img");
    pair.pump();
    assert!(pair.acked(record.seq));
    pair.assert_converged();
}

#[test]
fn an_operator_keeps_the_winners_changes_on_the_primary() {
    let config = ReplicationConfig::new(1);
    let (a, b) = split(2, 1, &config);
    let hash_a = a.state().content_hash();
    let mut pair = Pair::with_stores(a, b, config);
    pair.connect();
    assert!(pair.primary_events.iter().any(|e| matches!(
        e,
        Event::SplitBrain {
            winner: Winner::Undecided,
            ..
        }
    )));
    pair.primary.resolve_keep_local();
    pair.disconnect();
    pair.primary_events.clear();
    pair.connect();
    assert!(!pair.primary.keep_local_pending(), "one-shot");
    assert!(pair.primary_events.contains(&Event::SplitBrain {
        common_seq: 1,
        local_entries: 3,
        peer_entries: 2,
        winner: Winner::Local,
    }));
    assert!(pair.secondary_events.contains(&Event::DiscardedDivergence {
        common_seq: 1,
        branches: vec![3],
    }));
    assert!(pair.primary_events.contains(&Event::InSync { seq: 4 }));
    pair.assert_converged();
    assert_eq!(pair.a.state().content_hash(), hash_a);
    assert_eq!(branch_content(&pair.b, 0), b"b0");
    assert_eq!(pair.primary.progress().peer_acked, 4);
    assert!(!pair.primary.progress().resyncing);
}

#[test]
fn keeping_local_on_a_stale_primary_discards_the_peers_entries() {
    let config = ReplicationConfig::new(1);
    let (a, b) = split(0, 1, &config);
    let mut pair = Pair::with_stores(a, b, config);
    pair.connect();
    assert!(pair
        .primary_events
        .iter()
        .any(|e| matches!(e, Event::PeerAhead { .. })));
    pair.primary.resolve_keep_local();
    pair.disconnect();
    pair.connect();
    assert!(pair.secondary_events.contains(&Event::DiscardedDivergence {
        common_seq: 1,
        branches: vec![3],
    }));
    pair.assert_converged();
}

#[test]
fn the_secondary_reports_when_it_caught_up() {
    let mut pair = Pair::new(ReplicationConfig::new(1));
    write_file(pair.tree.path(), "f", b"one");
    pair.import("img");
    pair.import("img");
    pair.primary.handle_peer_outdated(pair.now);
    pair.connect();
    assert!(pair.secondary_events.contains(&Event::InSync { seq: 2 }));
    pair.disconnect();
    pair.secondary_events.clear();
    pair.connect();
    assert!(
        pair.secondary_events.contains(&Event::InSync { seq: 2 }),
        "already in sync at hello"
    );
}

#[test]
fn a_write_on_a_stalled_link_is_settled_once_the_outdated_peer_times_out() {
    let mut pair = Pair::new(ReplicationConfig::new(1));
    pair.connect();
    // The link stalls (no close): the owner records the peer Outdated
    // before the connection is known dead.
    pair.link_up = false;
    pair.primary.handle_peer_outdated(pair.now);
    write_file(pair.tree.path(), "f", b"x");
    let record = pair.import("img");
    pair.pump();
    assert!(
        !pair.acked(record.seq),
        "still shipping on the stalled link"
    );
    let deadline = pair.primary.poll_timeout().expect("waiting for the ack");
    pair.primary.handle_timeout(deadline);
    pair.pump();
    assert!(pair.primary_events.contains(&Event::PeerUnresponsive));
    assert!(pair.acked(record.seq), "settled by the degraded policy");
}

#[test]
fn a_peer_that_reconnects_without_progress_is_given_up_in_time() {
    // A secondary whose disk is full accepts every connection and refuses
    // every entry: reconnecting must not restart the wait of a pending
    // write, or the write hangs and the peer is never outdated.
    let mut config = ReplicationConfig::new(1);
    config.response_timeout_ms = 300;
    let mut pair = Pair::new(config);
    pair.connect();
    pair.link_up = false;
    write_file(pair.tree.path(), "f", b"x");
    let record = pair.import("img");
    pair.pump();
    let first_drop = pair.now;
    let mut unresponsive_at = None;
    for _ in 0..20 {
        pair.primary.handle_disconnected(pair.now);
        for _ in 0..2 {
            pair.now += Duration::from_millis(100);
            pair.primary.handle_timeout(pair.now);
            while let Some(event) = pair.primary.poll_event() {
                if event == Event::PeerUnresponsive {
                    unresponsive_at.get_or_insert(pair.now);
                }
            }
        }
        if unresponsive_at.is_some() {
            break;
        }
        pair.primary.handle_connected(pair.now, &pair.a);
    }
    let at = unresponsive_at.expect("the peer is given up");
    assert!(
        at - first_drop <= Duration::from_millis(300),
        "{:?}",
        at - first_drop
    );
    pair.primary.handle_peer_outdated(pair.now);
    assert_eq!(
        pair.primary.poll_event(),
        Some(Event::Acknowledged { seq: record.seq })
    );
}

#[test]
fn a_dead_primary_s_unreplicated_tail_is_dropped_without_a_split_brain() {
    // Node 1 writes an entry it never replicates and dies; node 2, in sync
    // until then, is promoted and writes. Node 1 never recorded node 2
    // Outdated, so its tail was never acknowledged.
    let config = ReplicationConfig::new(1);
    let mut pair = Pair::new(config.clone());
    pair.connect();
    write_file(pair.tree.path(), "f", b"common");
    pair.import("img");
    pair.pump();
    pair.disconnect();
    let Pair {
        mut a, mut b, tree, ..
    } = pair;
    write_file(tree.path(), "f", b"never replicated");
    let tail = a
        .import_dir("img", tree.path(), Timestamp::default(), "tail")
        .unwrap();
    a.demote();
    b.promote(2, 1);
    b.record_peer_outdated().unwrap();
    write_file(tree.path(), "f", b"new primary");
    b.import_dir("img", tree.path(), Timestamp::default(), "b")
        .unwrap();
    let mut back = Pair::with_stores(b, a, config.clone());
    back.connect();
    assert!(
        !back
            .primary_events
            .iter()
            .any(|e| matches!(e, Event::SplitBrain { .. })),
        "{:?}",
        back.primary_events
    );
    assert!(back.secondary_events.contains(&Event::DiscardedDivergence {
        common_seq: 1,
        branches: vec![tail.seq],
    }));
    back.assert_converged();
    assert_eq!(back.b.branches()[0].message, "tail");

    // The same shape with a PeerOutdated entry in the tail is a split brain:
    // the old primary may have acknowledged what follows it.
    let (a, b) = split(1, 1, &config);
    let (mut b, a) = (b, a);
    b.promote(2, 3);
    let mut back = Pair::with_stores(b, a, config);
    back.connect();
    assert!(back
        .primary_events
        .iter()
        .any(|e| matches!(e, Event::SplitBrain { .. })));
}

#[test]
fn a_secondary_whose_disk_is_full_says_so() {
    let mem = Arc::new(MemStorage::new());
    let (b, _) = Store::open(mem.clone()).unwrap();
    let mut pair = Pair::with_stores(store(1, true), b, ReplicationConfig::new(1));
    pair.connect();
    mem.set_quota(Some(mem.used_bytes()));
    write_file(pair.tree.path(), "f", b"does not fit");
    let record = pair.import("img");
    pair.pump();
    let refused = Event::Refused {
        reason: super::wire::RefuseReason::StorageFailed,
    };
    assert!(
        pair.secondary_events.contains(&refused),
        "{:?}",
        pair.secondary_events
    );
    assert!(
        pair.primary_events.contains(&refused),
        "{:?}",
        pair.primary_events
    );
    assert!(!pair.acked(record.seq));
    assert_eq!(pair.secondary.metrics().corrupt_objects, 0);
}
