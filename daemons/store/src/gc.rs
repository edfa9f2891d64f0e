//! Retention and garbage collection. Expiring generations is a journal
//! entry the primary writes (so both replicas drop the same ones);
//! collecting the objects nothing retained refers to is local to each node
//! and deterministic given the state.
//!
//! A generation is retained if it is among the newest
//! [`Retention::generations_per_image_min`] of its image, younger than
//! [`Retention::age_min_secs`], or named by any ref. Clients' exception
//! trees and preserved split-brain branches are always retained.

use std::collections::BTreeSet;

use crate::journal::{Entry, Record};
use crate::model::{NodeKind, ObjectId, ObjectKind, Timestamp};
use crate::store::{Store, StoreError};

/// What to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub generations_per_image_min: usize,
    /// A client still running an old binary keeps reading it this long.
    pub age_min_secs: u64,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            generations_per_image_min: 5,
            age_min_secs: 24 * 3600,
        }
    }
}

/// What [`Store::collect_garbage`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub live_objects: usize,
    pub objects_before: usize,
    pub objects_after: usize,
    pub bytes_freed: u64,
}

impl Store {
    /// Generations the retention policy lets go at wall time `now`.
    pub fn expired_generations(&self, retention: Retention, now: Timestamp) -> Vec<u64> {
        let state = self.state();
        let referenced: BTreeSet<u64> = state.refs.values().copied().collect();
        let cutoff = now.secs.saturating_sub(retention.age_min_secs as i64);
        let images: BTreeSet<&str> = state
            .generations
            .values()
            .map(|g| g.image.as_str())
            .collect();
        let mut expired = Vec::new();
        for image in images {
            let newest_first = state
                .generations
                .values()
                .rev()
                .filter(|g| g.image == image);
            for (rank, generation) in newest_first.enumerate() {
                let keep = rank < retention.generations_per_image_min
                    || generation.time.secs >= cutoff
                    || referenced.contains(&generation.id);
                if !keep {
                    expired.push(generation.id);
                }
            }
        }
        expired.sort_unstable();
        expired
    }

    /// Primary: record the expiry of what retention lets go, if anything.
    pub fn expire_generations(
        &mut self,
        retention: Retention,
        now: Timestamp,
    ) -> Result<Option<Record>, StoreError> {
        let ids = self.expired_generations(retention, now);
        if ids.is_empty() {
            return Ok(None);
        }
        self.write_entry(Entry::GenerationsDropped { ids })
            .map(Some)
    }

    /// Primary, through replication: the expiry entry for what retention
    /// lets go at `now`, decided when the write runs (a caller checks
    /// [`Store::expired_generations`] first; the list may have emptied
    /// since, and an empty entry changes nothing).
    pub fn expiry_entry(
        &mut self,
        retention: Retention,
        now: Timestamp,
    ) -> Result<Record, StoreError> {
        let ids = self.expired_generations(retention, now);
        self.write_entry(Entry::GenerationsDropped { ids })
    }

    /// Every object a retained root reaches.
    pub fn live_objects(&self) -> Result<BTreeSet<ObjectId>, StoreError> {
        let state = self.state();
        let roots = state
            .generations
            .values()
            .map(|g| &g.root)
            .chain(state.clients.values().filter_map(|c| c.exceptions.as_ref()))
            .chain(self.branches().iter().map(|g| &g.root));
        let mut live = BTreeSet::new();
        let mut stack: Vec<ObjectId> = roots.filter_map(|n| n.kind.object()).collect();
        while let Some(id) = stack.pop() {
            if !live.insert(id) {
                continue;
            }
            match self.objects().kind(&id) {
                Some(ObjectKind::Tree) => {
                    let tree = self.objects().get_tree(&id)?;
                    stack.extend(tree.entries.values().filter_map(|n| match &n.kind {
                        NodeKind::File { blob, .. } => Some(*blob),
                        NodeKind::Dir { tree } => Some(*tree),
                        _ => None,
                    }));
                }
                Some(ObjectKind::Blob) => {
                    let blob = self.objects().get_blob(&id)?;
                    stack.extend(blob.chunks.iter().map(|c| c.id));
                }
                Some(ObjectKind::Chunk) | None => {}
            }
        }
        Ok(live)
    }

    /// Remove the objects nothing retained reaches (sealed segments only).
    pub fn collect_garbage(&mut self) -> Result<GcReport, StoreError> {
        let live = self.live_objects()?;
        let objects_before = self.objects().len();
        let bytes_freed = self.objects_mut().retain(&live)?;
        Ok(GcReport {
            live_objects: live.len(),
            objects_before,
            objects_after: self.objects().len(),
            bytes_freed,
        })
    }
}
