//! The store's checkers, judged from what the replicas hold at the end of a
//! run (read back object by object, every hash verified) against the
//! ledger of acknowledged writes and the replication events.
//!
//! - No acknowledged write lost: each is in the final state of the node
//!   that wrote it, or, if that node lost a split brain, among its
//!   preserved branches (generations) or discarded by the policy (leases
//!   and client changes, which are not kept as branches).
//! - Replicas converge: after healing both have the same replica digest
//!   (state hash, which covers journal-derived generations, refs, clients,
//!   leases and epochs; the journal's entries as stored; every reachable
//!   object id).
//! - No object fails its hash: every object reachable from a replica's
//!   state and branches is read back and verified.
//! - Split brain detected and resolved as the policy says.

use std::collections::{BTreeMap, BTreeSet};

use ironroot_net::Instant;
use ironroot_store::journal::{Lease, PoolLease};
use ironroot_store::model::{NodeKind, ObjectId, ObjectKind};
use ironroot_store::replication::wire::RefuseReason;
use ironroot_store::replication::{Event, ReplicationMetrics, Winner};
use ironroot_store::store::Store;

use super::config::StoreFile;

/// What an acknowledged write put in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    /// A generation of the image whose files hash to `digest`.
    Generation {
        digest: [u8; 32],
    },
    Client {
        mac: [u8; 6],
        name: String,
        ipv4: [u8; 4],
    },
    Lease {
        mac: [u8; 6],
        lease: Lease,
    },
}

/// One acknowledged write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acked {
    /// Unique id, the generation's message.
    pub id: String,
    pub node: String,
    pub seq: u64,
    pub at: Instant,
    pub written: Written,
}

/// One replica as read back at the end of a run.
#[derive(Clone, Debug, Default)]
pub struct Replica {
    pub node: String,
    pub digest: [u8; 32],
    pub last_seq: u64,
    /// Generation message -> digest of its files.
    pub generations: BTreeMap<String, [u8; 32]>,
    /// Preserved branches (split-brain losses): message -> digest.
    pub branches: BTreeMap<String, [u8; 32]>,
    pub clients: BTreeMap<[u8; 6], (String, [u8; 4])>,
    /// Address -> its latest lease (a version-1 record reads back as a
    /// bound lease keyed by the client's MAC).
    pub leases: BTreeMap<[u8; 4], PoolLease>,
    pub objects_verified: u64,
    /// Reachable objects that are missing or fail their hash.
    pub bad_objects: Vec<String>,
    /// The store did not open from the disk.
    pub open_error: Option<String>,
}

/// At the first heal: what the behind node lacks, and the primary's
/// counters then and at the end.
#[derive(Clone, Debug, Default)]
pub struct ResyncMeasure {
    pub primary: String,
    pub missing_entries: u64,
    pub missing_objects: u64,
    pub at_heal: ReplicationMetrics,
    /// `None` if the primary's driver is gone at the end.
    pub at_end: Option<ReplicationMetrics>,
}

/// Bounded list of write errors kept for the report.
pub const WRITE_ERRORS_KEPT: usize = 16;

/// Everything the store part of a run produced.
#[derive(Clone, Debug, Default)]
pub struct StoreTrace {
    pub ledger: Vec<Acked>,
    pub writes: u64,
    pub write_errors: u64,
    pub write_error_samples: Vec<String>,
    pub events: Vec<(Instant, String, Event)>,
    pub replicas: Vec<Replica>,
    pub resync: Option<ResyncMeasure>,
    pub crashes: u64,
    pub torn_bytes_cut: u64,
    pub opens: u64,
    /// Opens that found damaged records before a file's tail: (node,
    /// bytes). No scenario rots bits, so crashes and full disks must
    /// never leave any.
    pub corrupt_on_open: Vec<(String, u64)>,
    /// The longest wait of one write for its answer: (write id, wait).
    pub longest_write_wait: Option<(String, std::time::Duration)>,
}

/// BLAKE3 over (name, bytes) pairs in order: what a generation holds.
pub fn content_digest<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for (name, bytes) in files {
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    }
    *hasher.finalize().as_bytes()
}

/// Most journal entries read into a replica digest (far above a run's).
const JOURNAL_ENTRIES_READ_MAX: usize = 1_000_000;

/// Most tree nodes one walk visits (a bound, far above what a run writes).
const WALK_NODES_MAX: usize = 1_000_000;

/// Read every object under `root`, verifying each, and return the files
/// as path -> bytes; damage goes to `bad`.
fn read_tree(
    store: &Store,
    root: &NodeKind,
    seen: &mut BTreeSet<ObjectId>,
    bad: &mut Vec<String>,
) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let NodeKind::Dir { tree } = root else {
        return files;
    };
    let mut stack = vec![(String::new(), *tree)];
    let mut visited = 0usize;
    while let Some((prefix, id)) = stack.pop() {
        visited += 1;
        if visited > WALK_NODES_MAX {
            bad.push(format!("tree walk stopped after {WALK_NODES_MAX} nodes"));
            break;
        }
        seen.insert(id);
        let tree = match store.objects().get_tree(&id) {
            Ok(tree) => tree,
            Err(error) => {
                bad.push(format!("tree {}: {error}", id.to_hex()));
                continue;
            }
        };
        for (name, node) in tree.entries {
            let path = format!("{prefix}{}", String::from_utf8_lossy(&name));
            match node.kind {
                NodeKind::Dir { tree } => stack.push((format!("{path}/"), tree)),
                NodeKind::File { blob, .. } => {
                    if let Some(bytes) = read_blob(store, blob, seen, bad) {
                        files.insert(path, bytes);
                    }
                }
                _ => {}
            }
        }
    }
    files
}

fn read_blob(
    store: &Store,
    id: ObjectId,
    seen: &mut BTreeSet<ObjectId>,
    bad: &mut Vec<String>,
) -> Option<Vec<u8>> {
    seen.insert(id);
    let blob = match store.objects().get_blob(&id) {
        Ok(blob) => blob,
        Err(error) => {
            bad.push(format!("blob {}: {error}", id.to_hex()));
            return None;
        }
    };
    let mut bytes = Vec::new();
    for chunk in &blob.chunks {
        seen.insert(chunk.id);
        match store.objects().get_kind(&chunk.id, ObjectKind::Chunk) {
            Ok(part) => bytes.extend_from_slice(&part),
            Err(error) => {
                bad.push(format!("chunk {}: {error}", chunk.id.to_hex()));
                return None;
            }
        }
    }
    Some(bytes)
}

fn digest_of_files(files: &BTreeMap<String, Vec<u8>>) -> [u8; 32] {
    content_digest(files.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
}

/// Read a replica back completely.
pub fn inspect(node: &str, store: &Store) -> Replica {
    let state = store.state();
    let mut replica = Replica {
        node: node.to_owned(),
        last_seq: state.last_seq(),
        ..Replica::default()
    };
    let mut reachable = BTreeSet::new();
    let mut bad = Vec::new();
    for generation in state.generations.values() {
        let files = read_tree(store, &generation.root.kind, &mut reachable, &mut bad);
        replica
            .generations
            .insert(generation.message.clone(), digest_of_files(&files));
    }
    for client in state.clients.values() {
        if let Some(exceptions) = &client.exceptions {
            read_tree(store, &exceptions.kind, &mut reachable, &mut bad);
        }
    }
    let replicated: Vec<ObjectId> = reachable.iter().copied().collect();
    let mut branch_objects = BTreeSet::new();
    for branch in store.branches() {
        let files = read_tree(store, &branch.root.kind, &mut branch_objects, &mut bad);
        replica
            .branches
            .insert(branch.message.clone(), digest_of_files(&files));
    }
    replica.objects_verified = reachable.union(&branch_objects).count() as u64;
    replica.clients = state
        .clients
        .iter()
        .map(|(mac, c)| (*mac, (c.name.clone(), c.ipv4)))
        .collect();
    replica.leases = state
        .leases
        .iter()
        .map(|(ip, recorded)| (*ip, recorded.lease.clone()))
        .collect();
    let mut hasher = blake3::Hasher::new();
    hasher.update(&state.content_hash());
    // The entries themselves, as each node holds them (same epochs, same
    // bytes): a replica that applied the same state from other entries
    // differs here.
    let journal = store.journal();
    if let Some(first) = journal.first_seq() {
        match journal.read_from(first, JOURNAL_ENTRIES_READ_MAX) {
            Ok(records) => {
                for record in &records {
                    hasher.update(&ironroot_store::model::encode(record));
                }
            }
            Err(error) => bad.push(format!("journal: {error}")),
        }
    }
    for id in &replicated {
        hasher.update(&id.0);
    }
    replica.digest = *hasher.finalize().as_bytes();
    replica.bad_objects = bad;
    replica
}

fn hex8(bytes: &[u8; 32]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Every store violation of a run.
pub fn check(config: &StoreFile, trace: &StoreTrace) -> Vec<String> {
    let mut violations = Vec::new();
    for replica in &trace.replicas {
        if let Some(error) = &replica.open_error {
            violations.push(format!(
                "{}: the store does not open: {error}",
                replica.node
            ));
        }
        for bad in replica.bad_objects.iter().take(8) {
            violations.push(format!(
                "{}: reachable object unreadable: {bad}",
                replica.node
            ));
        }
    }
    for (node, bytes) in &trace.corrupt_on_open {
        violations.push(format!(
            "{node}: the store reopened with {bytes} damaged bytes inside its packs (only a torn tail is allowed)"
        ));
    }
    violations.extend(honest_peers(trace));
    violations.extend(lost_writes(trace));
    violations.extend(split_brain(config, trace));
    violations.extend(convergence(config, trace));
    if let Some(resync) = &trace.resync {
        violations.extend(resync_exact(resync));
    } else if config.expect.resync_exact {
        violations.push("resync_exact: no heal was measured".to_owned());
    }
    if let (Some(max_ms), Some((id, waited))) =
        (config.expect.write_wait_ms_max, &trace.longest_write_wait)
    {
        if waited.as_millis() > u128::from(max_ms) {
            violations.push(format!(
                "write {id} waited {waited:?} for its answer, at most {max_ms} ms allowed"
            ));
        }
    }
    if config.expect.write_errors && trace.write_errors == 0 {
        violations.push("the scenario expects failed writes, none failed".to_owned());
    }
    if trace.ledger.is_empty() {
        violations.push("no write was acknowledged: the workload never ran".to_owned());
    }
    violations
}

/// Both nodes run the same code: neither may ever see the other break the
/// protocol or ship a corrupt object (a local disk failure must be reported
/// as such, not blamed on the peer).
fn honest_peers(trace: &StoreTrace) -> Vec<String> {
    let blamed = |event: &Event| {
        matches!(
            event,
            Event::ProtocolViolation
                | Event::Refused {
                    reason: RefuseReason::ProtocolViolation | RefuseReason::CorruptObject,
                }
        )
    };
    trace
        .events
        .iter()
        .filter(|(_, _, event)| blamed(event))
        .take(4)
        .map(|(at, node, event)| format!("{node} blamed its honest peer at {at}: {event:?}"))
        .collect()
}

/// Nodes that gave up divergent entries after a split brain was reported:
/// node -> (time, common seq). A discard with no split brain before it is
/// a dead primary's unreplicated tail, which held nothing acknowledged.
fn discards(trace: &StoreTrace) -> BTreeMap<&str, Vec<(Instant, u64)>> {
    let mut out: BTreeMap<&str, Vec<(Instant, u64)>> = BTreeMap::new();
    let mut split = false;
    for (at, node, event) in &trace.events {
        match event {
            Event::SplitBrain { .. } => split = true,
            Event::DiscardedDivergence { common_seq, .. } if split => {
                out.entry(node.as_str())
                    .or_default()
                    .push((*at, *common_seq));
            }
            _ => {}
        }
    }
    out
}

fn lost_writes(trace: &StoreTrace) -> Vec<String> {
    let discards = discards(trace);
    let mut violations = Vec::new();
    for acked in &trace.ledger {
        let Some(replica) = trace.replicas.iter().find(|r| r.node == acked.node) else {
            violations.push(format!(
                "no replica of {} to check {}",
                acked.node, acked.id
            ));
            continue;
        };
        let discarded = discards.get(acked.node.as_str()).is_some_and(|d| {
            d.iter()
                .any(|(at, common)| *at >= acked.at && acked.seq > *common)
        });
        let kept = match &acked.written {
            Written::Generation { digest } => {
                replica.generations.get(&acked.id) == Some(digest)
                    || (discarded && replica.branches.get(&acked.id) == Some(digest))
            }
            Written::Client { mac, name, ipv4 } => {
                replica.clients.get(mac) == Some(&(name.clone(), *ipv4)) || discarded
            }
            Written::Lease { mac, lease } => {
                replica.leases.get(&lease.ipv4).is_some_and(|held| {
                    held.until_unix_secs == lease.expires_unix_secs && held.client.ends_with(mac)
                }) || discarded
            }
        };
        if !kept {
            violations.push(format!(
                "acknowledged write {} (seq {} by {} at {}) is lost: {:?}",
                acked.id, acked.seq, acked.node, acked.at, acked.written
            ));
        }
    }
    violations
}

fn split_brain(config: &StoreFile, trace: &StoreTrace) -> Vec<String> {
    let mut violations = Vec::new();
    let detected: Vec<&Winner> = trace
        .events
        .iter()
        .filter_map(|(_, _, e)| match e {
            Event::SplitBrain { winner, .. } => Some(winner),
            _ => None,
        })
        .collect();
    let discards = discards(trace);
    match (config.expect.split_brain, &config.expect.loser) {
        (false, _) => {
            if !detected.is_empty() {
                violations.push(format!(
                    "split brain reported {} times where none was expected",
                    detected.len()
                ));
            }
        }
        (true, None) => {
            if detected.is_empty() {
                violations.push("the split brain was never detected".to_owned());
            }
            if detected.iter().any(|w| **w != Winner::Undecided) {
                violations
                    .push("the disconnect policy must leave the split brain undecided".to_owned());
            }
            if !discards.is_empty() {
                violations.push("the disconnect policy discarded entries".to_owned());
            }
        }
        (true, Some(loser)) => {
            if detected.is_empty() {
                violations.push("the split brain was never detected".to_owned());
            }
            if !discards.contains_key(loser.as_str()) {
                violations.push(format!(
                    "{loser} was expected to lose the split brain, it never gave up its entries"
                ));
            }
            if let Some(other) = discards.keys().find(|n| **n != loser.as_str()) {
                violations.push(format!(
                    "{other} gave up its entries, the policy makes {loser} lose"
                ));
            }
        }
    }
    violations
}

fn convergence(config: &StoreFile, trace: &StoreTrace) -> Vec<String> {
    let [a, b] = trace.replicas.as_slice() else {
        return vec![format!(
            "{} replicas read back, expected 2",
            trace.replicas.len()
        )];
    };
    let same = a.digest == b.digest;
    let unresolved = config.expect.split_brain && config.expect.loser.is_none();
    match (same, unresolved) {
        (false, false) => vec![format!(
            "replicas differ after healing: {} {} (seq {}) vs {} {} (seq {})",
            a.node,
            hex8(&a.digest),
            a.last_seq,
            b.node,
            hex8(&b.digest),
            b.last_seq
        )],
        (true, true) => {
            vec!["replicas converged although the split brain must stay unresolved".to_owned()]
        }
        _ => Vec::new(),
    }
}

fn resync_exact(resync: &ResyncMeasure) -> Vec<String> {
    let Some(end) = resync.at_end else {
        return vec![format!(
            "resync: the primary {} is no longer primary at the end",
            resync.primary
        )];
    };
    let entries = end.entries_sent - resync.at_heal.entries_sent;
    let objects = end.objects_sent - resync.at_heal.objects_sent;
    let mut violations = Vec::new();
    if entries != resync.missing_entries {
        violations.push(format!(
            "resync shipped {entries} entries, the behind node lacked {}",
            resync.missing_entries
        ));
    }
    if objects != resync.missing_objects {
        violations.push(format!(
            "resync shipped {objects} objects, the behind node lacked {}",
            resync.missing_objects
        ));
    }
    violations
}

/// Summary lines for the run's report.
pub fn summary(trace: &StoreTrace) -> Vec<String> {
    let mut lines = vec![format!(
        "store writes: {} attempted, {} acknowledged, {} failed; crashes {}, store opens {}, torn bytes cut {}",
        trace.writes,
        trace.ledger.len(),
        trace.write_errors,
        trace.crashes,
        trace.opens,
        trace.torn_bytes_cut
    )];
    for replica in &trace.replicas {
        lines.push(format!(
            "replica {}: digest {} last seq {} generations {} branches {} clients {} leases {} objects verified {}",
            replica.node,
            hex8(&replica.digest),
            replica.last_seq,
            replica.generations.len(),
            replica.branches.len(),
            replica.clients.len(),
            replica.leases.len(),
            replica.objects_verified
        ));
    }
    if let Some((id, waited)) = &trace.longest_write_wait {
        lines.push(format!("longest write wait: {waited:?} ({id})"));
    }
    for sample in &trace.write_error_samples {
        lines.push(format!("write error: {sample}"));
    }
    if let Some(resync) = &trace.resync {
        let shipped = resync.at_end.map(|end| {
            (
                end.entries_sent - resync.at_heal.entries_sent,
                end.objects_sent - resync.at_heal.objects_sent,
            )
        });
        lines.push(format!(
            "resync after heal: lacked {} entries / {} objects, shipped {}",
            resync.missing_entries,
            resync.missing_objects,
            shipped.map_or("-".to_owned(), |(e, o)| format!(
                "{e} entries / {o} objects"
            ))
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use ironroot_store::model::{Meta, Timestamp};
    use ironroot_store::stage::{store_content, Staged, StagedKind};
    use ironroot_store::storage::MemStorage;

    use super::*;

    fn config(expect: &str) -> StoreFile {
        toml::from_str(&format!(
            "primary = \"a\"\nwrites_until_ms = 1000\nsplit_brain = \"discard-younger-primary\"\n[expect]\n{expect}"
        ))
        .expect("parses")
    }

    fn replica(node: &str, digest: u8) -> Replica {
        Replica {
            node: node.to_owned(),
            digest: [digest; 32],
            ..Replica::default()
        }
    }

    fn generation(id: &str, node: &str, seq: u64, digest: u8) -> Acked {
        Acked {
            id: id.to_owned(),
            node: node.to_owned(),
            seq,
            at: Instant::from_millis(seq),
            written: Written::Generation {
                digest: [digest; 32],
            },
        }
    }

    /// A passing trace: one write, kept, replicas equal.
    fn good() -> StoreTrace {
        let mut a = replica("a", 1);
        a.generations.insert("w1".to_owned(), [7; 32]);
        StoreTrace {
            ledger: vec![generation("w1", "a", 1, 7)],
            replicas: vec![a, replica("b", 1)],
            ..StoreTrace::default()
        }
    }

    #[test]
    fn a_good_trace_passes() {
        assert_eq!(check(&config(""), &good()), Vec::<String>::new());
    }

    #[test]
    fn a_lost_or_changed_write_is_reported() {
        let mut lost = good();
        lost.replicas[0].generations.clear();
        assert!(check(&config(""), &lost)[0].contains("acknowledged write w1"));
        let mut changed = good();
        changed.replicas[0]
            .generations
            .insert("w1".to_owned(), [8; 32]);
        assert!(check(&config(""), &changed)[0].contains("is lost"));
        let mut lease = good();
        lease.ledger.push(Acked {
            id: "w2".to_owned(),
            node: "a".to_owned(),
            seq: 2,
            at: Instant::from_millis(2),
            written: Written::Lease {
                mac: [2; 6],
                lease: Lease {
                    ipv4: [10, 0, 0, 2],
                    expires_unix_secs: 2,
                },
            },
        });
        assert!(check(&config(""), &lease)[0].contains("w2"));
    }

    #[test]
    fn a_split_brain_loser_keeps_generations_as_branches_only() {
        let expect = "split_brain = true\nloser = \"a\"";
        let mut trace = good();
        trace.replicas[0].generations.clear();
        trace.events = vec![
            (
                Instant::from_millis(5),
                "b".to_owned(),
                Event::SplitBrain {
                    common_seq: 0,
                    local_entries: 2,
                    peer_entries: 1,
                    winner: Winner::Local,
                },
            ),
            (
                Instant::from_millis(5),
                "a".to_owned(),
                Event::DiscardedDivergence {
                    common_seq: 0,
                    branches: vec![1],
                },
            ),
        ];
        let violations = check(&config(expect), &trace);
        assert!(violations[0].contains("w1"), "{violations:?}");
        trace.replicas[0].branches.insert("w1".to_owned(), [7; 32]);
        assert_eq!(check(&config(expect), &trace), Vec::<String>::new());
        // The wrong side losing is reported.
        let other = check(&config("split_brain = true\nloser = \"b\""), &trace);
        assert!(other.iter().any(|v| v.contains("b was expected to lose")));
    }

    #[test]
    fn split_brain_expectations_fire() {
        let missing = check(&config("split_brain = true"), &good());
        assert!(missing.iter().any(|v| v.contains("never detected")));
        assert!(missing.iter().any(|v| v.contains("converged although")));
        let mut unexpected = good();
        unexpected.events.push((
            Instant::ZERO,
            "a".to_owned(),
            Event::SplitBrain {
                common_seq: 0,
                local_entries: 1,
                peer_entries: 1,
                winner: Winner::Undecided,
            },
        ));
        assert!(check(&config(""), &unexpected)[0].contains("none was expected"));
    }

    #[test]
    fn blaming_an_honest_peer_is_reported() {
        let mut trace = good();
        trace.events.push((
            Instant::ZERO,
            "a".to_owned(),
            Event::Refused {
                reason: RefuseReason::CorruptObject,
            },
        ));
        let violations = check(&config(""), &trace);
        assert!(
            violations[0].contains("blamed its honest peer"),
            "{violations:?}"
        );
    }

    #[test]
    fn a_write_that_waited_too_long_is_reported() {
        let mut slow = good();
        slow.longest_write_wait = Some(("w1".to_owned(), std::time::Duration::from_millis(1_200)));
        assert!(
            check(&config(""), &slow).is_empty(),
            "no bound, no violation"
        );
        let violations = check(&config("write_wait_ms_max = 1000"), &slow);
        assert!(
            violations[0].contains("write w1 waited 1.2s"),
            "{violations:?}"
        );
    }

    #[test]
    fn diverged_replicas_and_inexact_resyncs_are_reported() {
        let mut diverged = good();
        diverged.replicas[1].digest = [2; 32];
        assert!(check(&config(""), &diverged)[0].contains("replicas differ"));
        let mut resync = good();
        resync.resync = Some(ResyncMeasure {
            primary: "a".to_owned(),
            missing_entries: 3,
            missing_objects: 5,
            at_heal: ReplicationMetrics::default(),
            at_end: Some(ReplicationMetrics {
                entries_sent: 3,
                objects_sent: 6,
                ..ReplicationMetrics::default()
            }),
        });
        let violations = check(&config("resync_exact = true"), &resync);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].contains("shipped 6 objects"));
    }

    #[test]
    fn a_corrupt_object_is_found_by_reading_the_replica_back() {
        let mem = Arc::new(MemStorage::new());
        let (mut store, _) = Store::open(mem.clone()).expect("opens");
        store.promote(1, 0);
        let (blob, size) =
            store_content(store.objects_mut(), &b"precious file contents"[..]).expect("stored");
        let file = Staged {
            kind: StagedKind::File { blob, size },
            meta: Meta::default(),
            link_group: None,
        };
        let root = Staged {
            kind: StagedKind::Dir(BTreeMap::from([(b"f0".to_vec(), file)])),
            meta: Meta::default(),
            link_group: None,
        };
        store
            .commit_staged("img", &root, Timestamp::default(), "w1")
            .expect("committed");
        let clean = inspect("a", &store);
        assert!(clean.bad_objects.is_empty(), "{:?}", clean.bad_objects);
        assert_eq!(
            clean.generations["w1"],
            content_digest([("f0", &b"precious file contents"[..])])
        );
        // Flip a bit in the first object's payload (the chunk).
        assert!(mem.corrupt("pack-00000001", 25 + 32 + 3));
        let damaged = inspect("a", &store);
        assert!(!damaged.bad_objects.is_empty());
        let trace = StoreTrace {
            ledger: vec![Acked {
                written: Written::Generation {
                    digest: clean.generations["w1"],
                },
                ..generation("w1", "a", 1, 0)
            }],
            replicas: vec![damaged, clean.clone()],
            ..StoreTrace::default()
        };
        let violations = check(&config(""), &trace);
        assert!(
            violations.iter().any(|v| v.contains("fails its hash")),
            "{violations:?}"
        );
    }
}
