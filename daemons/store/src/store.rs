//! One node's store: objects, journal and the state they yield, plus the
//! writes a primary makes. Every write syncs its objects, then appends its
//! entry durably, then applies it; replication ([`crate::replication`])
//! decides when the caller may be told.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::commit::{commit, unstage, CommitError, IdAllocator};
use crate::journal::{
    Client, Entry, Epoch, Generation, Journal, JournalError, Lease, PoolLease, Record,
};
use crate::model::{encode, NodeKind, ObjectId, Timestamp};
use crate::objects::{ObjectError, ObjectStore, PackRecovery};
use crate::stage::{import_dir, ImportError, Staged};
use crate::state::{ApplyError, StoreState};
use crate::storage::Storage;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("this node is not the primary")]
    NotPrimary,
    #[error("unknown image {image:?}")]
    UnknownImage { image: String },
    #[error("unknown generation {id}")]
    UnknownGeneration { id: u64 },
    #[error("unknown client {mac:02x?}")]
    UnknownClient { mac: [u8; 6] },
    #[error("no client has address {ipv4:?}")]
    UnknownAddress { ipv4: [u8; 4] },
    #[error("entry {seq} references object {id} this node lacks")]
    MissingObject { seq: u64, id: ObjectId },
    #[error("file id {file_id} is not (or no longer) stored")]
    StaleFile { file_id: u64 },
    #[error("snapshot does not decode: {0}")]
    Snapshot(postcard::Error),
}

/// Past this many entries in the journal, a write compacts it (a peer
/// further behind then gets a snapshot).
pub const JOURNAL_ENTRIES_MAX: u64 = 65_536;

/// What [`Store::open`] recovered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub pack: PackRecovery,
    pub journal_truncated_bytes: u64,
    pub entries_replayed: usize,
}

/// Counts changes of the client registry (`StoreState::clients`). Readable
/// without the store's lock, so a reader that answers from a copy of the
/// registry (the DHCP server, for every datagram) takes the lock only when
/// the registry changed, never while a journal write holds it.
#[derive(Clone, Debug, Default)]
pub struct RegistryVersion(Arc<AtomicU64>);

impl RegistryVersion {
    /// The current version; a copy made under the store's lock after
    /// reading this value is at least this fresh.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// One node's store.
pub struct Store {
    storage: Arc<dyn Storage>,
    objects: ObjectStore,
    journal: Journal,
    state: StoreState,
    /// Set while this node is the primary.
    epoch: Option<Epoch>,
    /// File id -> blob of every regular file of every generation and
    /// exception tree, for reads by file id.
    file_blobs: BTreeMap<u64, ObjectId>,
    indexed_trees: BTreeSet<ObjectId>,
    /// Generations this node wrote and then gave up in a split brain,
    /// kept (file `branches`) so that resolution destroys nothing.
    branches: Vec<Generation>,
    unreadable_trees: u64,
    registry_version: RegistryVersion,
}

const BRANCHES: &str = "branches";

impl Store {
    /// Open, recovering from whatever a crash left.
    pub fn open(storage: Arc<dyn Storage>) -> Result<(Store, OpenReport), StoreError> {
        let (objects, pack) = ObjectStore::open(storage.clone())?;
        let (journal, recovery) = Journal::open(storage.clone())?;
        let mut state = match &recovery.snapshot {
            Some(bytes) => StoreState::decode_snapshot(bytes).map_err(StoreError::Snapshot)?,
            None => StoreState::default(),
        };
        let branches = match storage.len(BRANCHES).map_err(ObjectError::from)? {
            Some(_) => {
                let bytes = storage.read_all(BRANCHES).map_err(ObjectError::from)?;
                postcard::from_bytes(&bytes).map_err(StoreError::Snapshot)?
            }
            None => Vec::new(),
        };
        let mut replayed = 0;
        for record in &recovery.records {
            if record.seq <= state.last_seq() {
                continue;
            }
            state.apply(record)?;
            replayed += 1;
        }
        let mut journal = journal;
        if journal.last_seq() < state.last_seq() {
            // A compaction crashed between its snapshot and removing the
            // segments it covers.
            journal.drop_entries(state.last_seq())?;
        }
        let mut store = Store {
            storage,
            objects,
            journal,
            state,
            epoch: None,
            file_blobs: BTreeMap::new(),
            indexed_trees: BTreeSet::new(),
            branches,
            unreadable_trees: 0,
            registry_version: RegistryVersion::default(),
        };
        store.reindex()?;
        let report = OpenReport {
            pack,
            journal_truncated_bytes: recovery.truncated_bytes,
            entries_replayed: replayed,
        };
        Ok((store, report))
    }

    pub fn state(&self) -> &StoreState {
        &self.state
    }

    pub fn objects(&self) -> &ObjectStore {
        &self.objects
    }

    pub fn objects_mut(&mut self) -> &mut ObjectStore {
        &mut self.objects
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn epoch(&self) -> Option<Epoch> {
        self.epoch
    }

    /// A handle on the client registry's version (see [`RegistryVersion`]),
    /// valid for this store's lifetime.
    pub fn registry_version(&self) -> RegistryVersion {
        self.registry_version.clone()
    }

    /// Called after applying `record`: tell registry readers.
    fn note_applied(&self, record: &Record) {
        if matches!(
            record.entry,
            Entry::ClientUpsert { .. } | Entry::ClientRemove { .. }
        ) {
            self.registry_version.bump();
        }
    }

    /// Become primary in a new epoch, above every term this node has seen
    /// (including `term_seen`, e.g. the peer's).
    pub fn promote(&mut self, node: u32, term_seen: u64) -> Epoch {
        let term = self
            .state
            .epochs
            .iter()
            .map(|(e, _)| e.term)
            .chain([term_seen])
            .max()
            .unwrap_or(0)
            + 1;
        let epoch = Epoch { term, node };
        self.epoch = Some(epoch);
        epoch
    }

    pub fn demote(&mut self) {
        self.epoch = None;
    }

    /// Write one entry as the primary: objects synced, entry durable, then
    /// applied.
    pub(crate) fn write_entry(&mut self, entry: Entry) -> Result<Record, StoreError> {
        let epoch = self.epoch.ok_or(StoreError::NotPrimary)?;
        let record = Record {
            epoch,
            seq: self.state.last_seq() + 1,
            entry,
        };
        self.objects.sync()?;
        self.state.check(&record)?;
        self.journal.append(&record)?;
        self.state
            .apply(&record)
            .expect("checked before the append");
        self.note_applied(&record);
        self.index_record(&record)?;
        self.compact_if_long()?;
        Ok(record)
    }

    fn ids(&self) -> IdAllocator {
        IdAllocator {
            next: self.state.file_id_next.max(IdAllocator::FIRST),
        }
    }

    /// Import the directory `path` as a new generation of `image`.
    pub fn import_dir(
        &mut self,
        image: &str,
        path: &Path,
        time: Timestamp,
        message: &str,
    ) -> Result<Record, StoreError> {
        if self.epoch.is_none() {
            return Err(StoreError::NotPrimary);
        }
        let staged = import_dir(&mut self.objects, path)?;
        self.commit_staged(image, &staged, time, message)
    }

    /// Import a tar archive as a new generation of `image`.
    pub fn import_tar<R: std::io::Read>(
        &mut self,
        image: &str,
        reader: R,
        time: Timestamp,
        message: &str,
    ) -> Result<Record, StoreError> {
        if self.epoch.is_none() {
            return Err(StoreError::NotPrimary);
        }
        let staged = crate::tarball::import_tar(&mut self.objects, reader)?;
        self.commit_staged(image, &staged, time, message)
    }

    /// Commit a staged tree as the next generation of `image`.
    pub fn commit_staged(
        &mut self,
        image: &str,
        staged: &Staged,
        time: Timestamp,
        message: &str,
    ) -> Result<Record, StoreError> {
        if self.epoch.is_none() {
            return Err(StoreError::NotPrimary);
        }
        let parent = self.state.current(image).cloned();
        let mut ids = self.ids();
        let root = commit(
            &mut self.objects,
            &mut ids,
            staged,
            parent.as_ref().map(|g| &g.root),
        )?;
        let generation = Generation {
            id: self.state.last_seq() + 1,
            image: image.to_owned(),
            parent: parent.map(|g| g.id),
            time,
            message: message.to_owned(),
            root,
        };
        self.write_entry(Entry::NewGeneration {
            generation,
            file_id_next: ids.next,
        })
    }

    /// Make an old generation's tree current again. It is committed anew
    /// against the current one so directory times only move forward.
    pub fn rollback(
        &mut self,
        image: &str,
        to: u64,
        time: Timestamp,
        message: &str,
    ) -> Result<Record, StoreError> {
        let target = self
            .state
            .generations
            .get(&to)
            .filter(|g| g.image == image)
            .ok_or(StoreError::UnknownGeneration { id: to })?;
        let staged = unstage(&self.objects, &target.root)?;
        self.commit_staged(image, &staged, time, message)
    }

    /// Point a ref at an existing generation.
    pub fn move_ref(&mut self, name: &str, generation: u64) -> Result<Record, StoreError> {
        self.write_entry(Entry::RefMove {
            name: name.to_owned(),
            generation,
        })
    }

    /// Register or change a client; `exceptions` are its own files.
    pub fn upsert_client(
        &mut self,
        mac: [u8; 6],
        name: &str,
        ipv4: [u8; 4],
        image: &str,
        exceptions: Option<&Staged>,
    ) -> Result<Record, StoreError> {
        if self.epoch.is_none() {
            return Err(StoreError::NotPrimary);
        }
        let prev = self
            .state
            .clients
            .get(&mac)
            .and_then(|c| c.exceptions.clone());
        let mut ids = self.ids();
        let exceptions = match exceptions {
            Some(staged) => Some(commit(&mut self.objects, &mut ids, staged, prev.as_ref())?),
            None => None,
        };
        let client = Client {
            name: name.to_owned(),
            ipv4,
            image: image.to_owned(),
            exceptions,
        };
        self.write_entry(Entry::ClientUpsert {
            mac,
            client,
            file_id_next: ids.next,
        })
    }

    pub fn remove_client(&mut self, mac: [u8; 6]) -> Result<Record, StoreError> {
        self.write_entry(Entry::ClientRemove { mac })
    }

    /// Write a version-1 lease record (kept so that old journals can be
    /// produced and replayed; the DHCP server writes [`Store::record_pool_leases`]).
    pub fn record_lease(&mut self, mac: [u8; 6], lease: Lease) -> Result<Record, StoreError> {
        self.write_entry(Entry::Lease { mac, lease })
    }

    /// Write pool lease changes as one entry (a DHCP group commit).
    pub fn record_pool_leases(&mut self, leases: Vec<PoolLease>) -> Result<Record, StoreError> {
        self.write_entry(Entry::PoolLeases { leases })
    }

    /// The peer is recorded Outdated: start a fresh epoch with an
    /// [`Entry::PeerOutdated`], durable before anything is acknowledged
    /// without the peer. A peer promoted later can then tell this node's
    /// unreplicated tail (no such entry: never acknowledged, dropped on
    /// reconnect) from writes acknowledged alone (a split brain).
    pub fn record_peer_outdated(&mut self) -> Result<Record, StoreError> {
        let epoch = self.epoch.ok_or(StoreError::NotPrimary)?;
        self.promote(epoch.node, epoch.term);
        self.write_entry(Entry::PeerOutdated)
    }

    /// Append an entry of the primary's journal (secondary side). The
    /// objects it references must already be stored durably.
    pub fn apply_replicated(&mut self, record: &Record) -> Result<(), StoreError> {
        for id in record.entry.object_roots() {
            if !self.objects.contains(&id) {
                return Err(StoreError::MissingObject {
                    seq: record.seq,
                    id,
                });
            }
        }
        self.objects.sync()?;
        self.state.check(record)?;
        self.journal.append(record)?;
        self.state.apply(record).expect("checked before the append");
        self.note_applied(record);
        self.index_record(record)?;
        self.compact_if_long()?;
        Ok(())
    }

    /// Snapshot the state at the last entry and drop the journal before it.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        let bytes = self.state.encode_snapshot();
        self.journal.compact(self.state.last_seq(), &bytes)?;
        Ok(())
    }

    fn compact_if_long(&mut self) -> Result<(), StoreError> {
        let first = self.journal.first_seq().unwrap_or(self.state.last_seq());
        if self.state.last_seq().saturating_sub(first) >= JOURNAL_ENTRIES_MAX {
            self.compact()?;
        }
        Ok(())
    }

    /// The state as a snapshot (for a peer behind the compaction point).
    pub fn snapshot(&self) -> Vec<u8> {
        self.state.encode_snapshot()
    }

    /// Replace the state with a peer's snapshot; its objects must be here.
    pub fn install_snapshot(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let state = StoreState::decode_snapshot(bytes).map_err(StoreError::Snapshot)?;
        self.objects.sync()?;
        self.journal.install_snapshot(state.last_seq(), bytes)?;
        self.state = state;
        self.registry_version.bump();
        self.reindex()
    }

    /// Drop every entry after `seq` and rebuild the state from disk.
    /// Returns false if `seq` is below the compaction point (the caller
    /// then needs a snapshot from the peer).
    pub fn truncate_after(&mut self, seq: u64) -> Result<bool, StoreError> {
        if seq == self.state.last_seq() {
            return Ok(true);
        }
        let at_snapshot = self.journal.first_seq() == Some(seq + 1);
        let truncated = if at_snapshot {
            self.journal.drop_entries(seq)?;
            true
        } else {
            self.journal.truncate_after(seq)?
        };
        if !truncated {
            return Ok(false);
        }
        let epoch = self.epoch;
        let (reopened, _) = Store::open(self.storage.clone())?;
        let registry_version = self.registry_version.clone();
        *self = reopened;
        self.epoch = epoch;
        self.registry_version = registry_version;
        self.registry_version.bump();
        Ok(true)
    }

    /// Keep the generations written after `seq` as branches before the
    /// entries that made them are dropped. Returns their ids.
    pub fn preserve_branches_after(&mut self, seq: u64) -> Result<Vec<u64>, StoreError> {
        let mut kept = Vec::new();
        for generation in self.state.generations.range(seq + 1..).map(|(_, g)| g) {
            if !self.branches.iter().any(|b| b == generation) {
                self.branches.push(generation.clone());
                kept.push(generation.id);
            }
        }
        self.storage
            .write_atomic(BRANCHES, &encode(&self.branches))
            .map_err(ObjectError::from)?;
        Ok(kept)
    }

    /// Primary: publish every preserved branch into the replicated state,
    /// re-committed with fresh file ids under `branch/<image>/<seq>`, so
    /// both nodes hold what the split brain's loser wrote.
    pub fn publish_branches(&mut self) -> Result<Vec<Record>, StoreError> {
        if self.epoch.is_none() {
            return Err(StoreError::NotPrimary);
        }
        let mut published = Vec::new();
        while let Some(branch) = self.branches.first().cloned() {
            let staged = unstage(&self.objects, &branch.root)?;
            let mut ids = self.ids();
            let root = commit(&mut self.objects, &mut ids, &staged, None)?;
            let seq = self.state.last_seq() + 1;
            let generation = Generation {
                id: seq,
                image: branch.image.clone(),
                parent: None,
                time: branch.time,
                message: format!(
                    "kept from split brain (was {}): {}",
                    branch.id, branch.message
                ),
                root,
            };
            let name = format!("branch/{}/{seq}", branch.image);
            published.push(self.write_entry(Entry::BranchKept {
                name,
                generation,
                file_id_next: ids.next,
            })?);
            self.branches.remove(0);
            self.storage
                .write_atomic(BRANCHES, &encode(&self.branches))
                .map_err(ObjectError::from)?;
        }
        Ok(published)
    }

    /// Generations preserved from a lost split brain. Their file ids were
    /// allocated during the split and may collide with the winner's, so
    /// they are not served by file id: an operator re-imports one (which
    /// assigns fresh ids) to bring it back.
    pub fn branches(&self) -> &[Generation] {
        &self.branches
    }

    fn reindex(&mut self) -> Result<(), StoreError> {
        self.file_blobs.clear();
        self.indexed_trees.clear();
        let roots: Vec<crate::model::Node> = self
            .state
            .generations
            .values()
            .map(|g| g.root.clone())
            .chain(
                self.state
                    .clients
                    .values()
                    .filter_map(|c| c.exceptions.clone()),
            )
            .collect();
        for root in roots {
            self.index_tree(&root.kind)?;
        }
        Ok(())
    }

    fn index_record(&mut self, record: &Record) -> Result<(), StoreError> {
        match &record.entry {
            Entry::NewGeneration { generation, .. } | Entry::BranchKept { generation, .. } => {
                self.index_tree(&generation.root.kind)
            }
            Entry::ClientUpsert { client, .. } => match &client.exceptions {
                Some(node) => self.index_tree(&node.kind),
                None => Ok(()),
            },
            Entry::GenerationsDropped { .. } => self.reindex(),
            _ => Ok(()),
        }
    }

    fn index_tree(&mut self, kind: &NodeKind) -> Result<(), StoreError> {
        let NodeKind::Dir { tree } = kind else {
            return Ok(());
        };
        let mut stack = vec![*tree];
        while let Some(id) = stack.pop() {
            if !self.indexed_trees.insert(id) {
                continue;
            }
            // A tree that fails its hash must not keep the node from
            // opening: its files are simply not readable by id (counted),
            // and a resync restores it.
            let tree = match self.objects.get_tree(&id) {
                Ok(tree) => tree,
                Err(_) => {
                    self.unreadable_trees += 1;
                    self.indexed_trees.remove(&id);
                    continue;
                }
            };
            for node in tree.entries.values() {
                match &node.kind {
                    NodeKind::File { blob, .. } => {
                        self.file_blobs.insert(node.file_id, *blob);
                    }
                    NodeKind::Dir { tree } => stack.push(*tree),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Trees that failed their hash while indexing (bit rot): a metric.
    pub fn unreadable_trees(&self) -> u64 {
        self.unreadable_trees
    }

    /// The blob of a regular file by its id, if still stored.
    pub fn file_blob(&self, file_id: u64) -> Option<ObjectId> {
        self.file_blobs.get(&file_id).copied()
    }
}
