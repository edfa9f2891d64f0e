//! Content-addressed object packs: append-only segment files `pack-NNNNNNNN`
//! of records (see [`crate::record`]) whose payload is `id[32] | bytes`. The
//! index lives in memory and is rebuilt by scanning on open; a torn tail of
//! the newest segment is truncated. Every read re-hashes the bytes: an object
//! that fails its hash is an error, never served.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::model::{Blob, ObjectId, ObjectKind, Tree};
use crate::record;
use crate::storage::{Storage, StorageError};

/// Largest object payload accepted (a maximal chunk plus slack; blob
/// manifests and trees of huge directories are the big ones).
pub const OBJECT_LEN_MAX: usize = 16 << 20;
/// A segment is sealed and a new one started past this size.
pub const SEGMENT_BYTES_MAX: u64 = 64 << 20;

const PREFIX: &str = "pack-";

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("object {id} not found")]
    NotFound { id: ObjectId },
    #[error("object {id} fails its hash (stored bytes are corrupt)")]
    Corrupt { id: ObjectId },
    #[error("object {id} is a {actual:?}, expected {expected:?}")]
    WrongKind {
        id: ObjectId,
        expected: ObjectKind,
        actual: ObjectKind,
    },
    #[error("object {id} does not decode: {source}")]
    Decode {
        id: ObjectId,
        #[source]
        source: postcard::Error,
    },
    #[error("object of {len} bytes exceeds the limit {max}")]
    TooLarge { len: usize, max: usize },
    #[error("object claimed id {claimed} but hashes to {actual}")]
    HashMismatch { claimed: ObjectId, actual: ObjectId },
}

#[derive(Clone, Copy, Debug)]
struct Location {
    segment: u32,
    /// Offset of the record (header included).
    offset: u64,
    record_len: u32,
    kind: ObjectKind,
}

/// What [`ObjectStore::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackRecovery {
    pub segments: usize,
    pub objects: usize,
    /// Bytes cut from torn tails.
    pub truncated_bytes: u64,
    /// Bytes of damaged records skipped in the middle of segments (their
    /// objects are missing until a resync brings them back).
    pub corrupt_bytes: u64,
}

/// The object store.
pub struct ObjectStore {
    storage: Arc<dyn Storage>,
    index: BTreeMap<ObjectId, Location>,
    active: u32,
    active_len: u64,
    unsynced: bool,
}

fn segment_name(segment: u32) -> String {
    format!("{PREFIX}{segment:08}")
}

impl ObjectStore {
    /// Scan every segment, rebuild the index, truncate torn tails.
    pub fn open(storage: Arc<dyn Storage>) -> Result<(ObjectStore, PackRecovery), ObjectError> {
        let mut index = BTreeMap::new();
        let mut recovery = PackRecovery::default();
        let mut active = 0u32;
        let mut active_len = 0u64;
        for name in storage.list()? {
            let Some(segment) = name
                .strip_prefix(PREFIX)
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let bytes = storage.read_all(&name)?;
            let record::Scan {
                found,
                valid_end: valid,
                skipped_bytes,
            } = record::scan(&bytes, OBJECT_LEN_MAX + 32);
            recovery.corrupt_bytes += skipped_bytes as u64;
            if valid < bytes.len() {
                storage.truncate(&name, valid as u64)?;
                recovery.truncated_bytes += (bytes.len() - valid) as u64;
            }
            for rec in found {
                let (Some(kind), Some(id)) = (
                    ObjectKind::from_u8(rec.kind),
                    bytes.get(rec.payload_offset..rec.payload_offset + 32),
                ) else {
                    continue;
                };
                let id = ObjectId(id.try_into().expect("32 bytes"));
                let offset = (rec.payload_offset - record::HEADER_LEN) as u64;
                let record_len = (record::HEADER_LEN + rec.payload_len) as u32;
                index.entry(id).or_insert(Location {
                    segment,
                    offset,
                    record_len,
                    kind,
                });
            }
            recovery.segments += 1;
            active = segment;
            active_len = valid as u64;
        }
        recovery.objects = index.len();
        let store = ObjectStore {
            storage,
            index,
            active: active.max(1),
            active_len,
            unsynced: false,
        };
        Ok((store, recovery))
    }

    pub fn contains(&self, id: &ObjectId) -> bool {
        self.index.contains_key(id)
    }

    /// The kind of a stored object, from the index alone.
    pub fn kind(&self, id: &ObjectId) -> Option<ObjectKind> {
        self.index.get(id).map(|loc| loc.kind)
    }

    /// Bytes of a stored object's content, from the index alone.
    pub fn stored_len(&self, id: &ObjectId) -> Option<u64> {
        self.index
            .get(id)
            .map(|loc| (loc.record_len as usize).saturating_sub(record::HEADER_LEN + 32) as u64)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Every object id, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &ObjectId> {
        self.index.keys()
    }

    /// Store `bytes` as `kind`; returns its id and whether it was new.
    /// Not durable until [`ObjectStore::sync`].
    pub fn put(&mut self, kind: ObjectKind, bytes: &[u8]) -> Result<(ObjectId, bool), ObjectError> {
        let id = ObjectId::of(kind, bytes);
        let new = self.put_unchecked(id, kind, bytes)?;
        Ok((id, new))
    }

    /// Store an object received from a peer, checking its claimed id.
    pub fn put_verified(
        &mut self,
        claimed: ObjectId,
        kind: ObjectKind,
        bytes: &[u8],
    ) -> Result<bool, ObjectError> {
        let actual = ObjectId::of(kind, bytes);
        if actual != claimed {
            return Err(ObjectError::HashMismatch { claimed, actual });
        }
        self.put_unchecked(actual, kind, bytes)
    }

    fn put_unchecked(
        &mut self,
        id: ObjectId,
        kind: ObjectKind,
        bytes: &[u8],
    ) -> Result<bool, ObjectError> {
        if bytes.len() > OBJECT_LEN_MAX {
            return Err(ObjectError::TooLarge {
                len: bytes.len(),
                max: OBJECT_LEN_MAX,
            });
        }
        if self.index.contains_key(&id) {
            return Ok(false);
        }
        if self.active_len >= SEGMENT_BYTES_MAX {
            self.sync()?;
            self.active += 1;
            self.active_len = 0;
        }
        let mut payload = Vec::with_capacity(32 + bytes.len());
        payload.extend_from_slice(&id.0);
        payload.extend_from_slice(bytes);
        let framed = record::encode(kind as u8, &payload);
        let name = segment_name(self.active);
        let offset = match self.storage.append(&name, &framed) {
            Ok(offset) => offset,
            Err(error) => {
                // A full disk may have taken part of the record: cut it, or
                // the next append would bury it mid-segment, where a scan
                // counts it as damage. Best effort: if even this fails,
                // the part stays a torn tail until the next append.
                let _ = self.storage.truncate(&name, self.active_len);
                return Err(error.into());
            }
        };
        self.active_len = offset + framed.len() as u64;
        self.unsynced = true;
        self.index.insert(
            id,
            Location {
                segment: self.active,
                offset,
                record_len: framed.len() as u32,
                kind,
            },
        );
        Ok(true)
    }

    /// Start a new segment so the current one can be collected.
    pub fn seal(&mut self) -> Result<(), ObjectError> {
        self.sync()?;
        if self.active_len > 0 {
            self.active += 1;
            self.active_len = 0;
        }
        Ok(())
    }

    /// Make every object put so far durable.
    pub fn sync(&mut self) -> Result<(), ObjectError> {
        if self.unsynced {
            self.storage.sync(&segment_name(self.active))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// The kind and bytes of `id`, verified against the id.
    pub fn get(&self, id: &ObjectId) -> Result<(ObjectKind, Vec<u8>), ObjectError> {
        let loc = self
            .index
            .get(id)
            .ok_or(ObjectError::NotFound { id: *id })?;
        let framed = self.storage.read_at(
            &segment_name(loc.segment),
            loc.offset,
            loc.record_len as usize,
        )?;
        let corrupt = ObjectError::Corrupt { id: *id };
        let (kind, payload) = record::decode_one(&framed, OBJECT_LEN_MAX + 32)
            .ok_or(ObjectError::Corrupt { id: *id })?;
        let kind = ObjectKind::from_u8(kind).ok_or(ObjectError::Corrupt { id: *id })?;
        let bytes = payload.get(32..).ok_or(ObjectError::Corrupt { id: *id })?;
        if kind != loc.kind || ObjectId::of(kind, bytes) != *id {
            return Err(corrupt);
        }
        Ok((kind, bytes.to_vec()))
    }

    /// The bytes of `id`, which must be a `kind`.
    pub fn get_kind(&self, id: &ObjectId, expected: ObjectKind) -> Result<Vec<u8>, ObjectError> {
        let (actual, bytes) = self.get(id)?;
        if actual != expected {
            return Err(ObjectError::WrongKind {
                id: *id,
                expected,
                actual,
            });
        }
        Ok(bytes)
    }

    pub fn get_tree(&self, id: &ObjectId) -> Result<Tree, ObjectError> {
        let bytes = self.get_kind(id, ObjectKind::Tree)?;
        postcard::from_bytes(&bytes).map_err(|source| ObjectError::Decode { id: *id, source })
    }

    pub fn get_blob(&self, id: &ObjectId) -> Result<Blob, ObjectError> {
        let bytes = self.get_kind(id, ObjectKind::Blob)?;
        postcard::from_bytes(&bytes).map_err(|source| ObjectError::Decode { id: *id, source })
    }

    /// Ids an object refers to directly (chunks of a blob, blobs and
    /// subtrees of a tree).
    pub fn children(&self, id: &ObjectId) -> Result<Vec<ObjectId>, ObjectError> {
        let (kind, bytes) = self.get(id)?;
        children_of(*id, kind, &bytes)
    }

    /// Copy live objects out of sealed segments holding dead ones, then
    /// remove those segments. Returns the bytes freed.
    pub fn retain(&mut self, live: &BTreeSet<ObjectId>) -> Result<u64, ObjectError> {
        let mut per_segment: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for (id, loc) in &self.index {
            let entry = per_segment.entry(loc.segment).or_default();
            if live.contains(id) {
                entry.0 += 1;
            } else {
                entry.1 += u64::from(loc.record_len);
            }
        }
        let victims: Vec<u32> = per_segment
            .iter()
            .filter(|(seg, (_, dead))| **seg != self.active && *dead > 0)
            .map(|(seg, _)| *seg)
            .collect();
        let mut freed = 0u64;
        for segment in victims {
            let moved: Vec<ObjectId> = self
                .index
                .iter()
                .filter(|(id, loc)| loc.segment == segment && live.contains(id))
                .map(|(id, _)| *id)
                .collect();
            let mut copies = Vec::with_capacity(moved.len());
            for id in &moved {
                copies.push((*id, self.get(id)?));
            }
            let name = segment_name(segment);
            freed += self.storage.len(&name)?.unwrap_or(0);
            self.index.retain(|_, loc| loc.segment != segment);
            for (id, (kind, bytes)) in copies {
                self.put_unchecked(id, kind, &bytes)?;
            }
            // Copies are durable before the old segment goes.
            self.sync()?;
            self.storage.remove(&name)?;
        }
        Ok(freed)
    }
}

/// Direct references inside an object's bytes.
pub fn children_of(
    id: ObjectId,
    kind: ObjectKind,
    bytes: &[u8],
) -> Result<Vec<ObjectId>, ObjectError> {
    let decode = |source| ObjectError::Decode { id, source };
    match kind {
        ObjectKind::Chunk => Ok(Vec::new()),
        ObjectKind::Blob => {
            let blob: Blob = postcard::from_bytes(bytes).map_err(decode)?;
            Ok(blob.chunks.iter().map(|c| c.id).collect())
        }
        ObjectKind::Tree => {
            let tree: Tree = postcard::from_bytes(bytes).map_err(decode)?;
            Ok(tree
                .entries
                .values()
                .filter_map(|n| n.kind.object())
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    #[test]
    fn put_get_reopen_and_torn_tail() {
        let mem = Arc::new(MemStorage::new());
        let (mut store, _) = ObjectStore::open(mem.clone()).unwrap();
        let (a, new) = store.put(ObjectKind::Chunk, b"alpha").unwrap();
        assert!(new);
        assert!(!store.put(ObjectKind::Chunk, b"alpha").unwrap().1);
        store.sync().unwrap();
        let (b, _) = store.put(ObjectKind::Chunk, b"beta, never synced").unwrap();
        assert_eq!(store.get(&a).unwrap().1, b"alpha");
        drop(store);
        mem.crash(Some(3));
        let (store, recovery) = ObjectStore::open(mem.clone()).unwrap();
        assert_eq!(store.get(&a).unwrap().1, b"alpha");
        assert!(matches!(store.get(&b), Err(ObjectError::NotFound { .. })));
        assert_eq!(recovery.objects, 1);
    }

    #[test]
    fn corrupt_object_is_never_served() {
        let mem = Arc::new(MemStorage::new());
        let (mut store, _) = ObjectStore::open(mem.clone()).unwrap();
        let (id, _) = store.put(ObjectKind::Chunk, b"precious bytes").unwrap();
        store.sync().unwrap();
        assert!(mem.corrupt("pack-00000001", record::HEADER_LEN + 32 + 3));
        assert!(matches!(store.get(&id), Err(ObjectError::Corrupt { .. })));
    }

    #[test]
    fn retain_drops_dead_objects_from_sealed_segments() {
        let mem = Arc::new(MemStorage::new());
        let (mut store, _) = ObjectStore::open(mem.clone()).unwrap();
        let (keep, _) = store.put(ObjectKind::Chunk, b"keep").unwrap();
        let (drop_id, _) = store.put(ObjectKind::Chunk, b"drop").unwrap();
        store.sync().unwrap();
        store.active += 1;
        store.active_len = 0;
        let live = BTreeSet::from([keep]);
        assert!(store.retain(&live).unwrap() > 0);
        assert!(store.get(&keep).is_ok() && !store.contains(&drop_id));
        let (reopened, _) = ObjectStore::open(mem).unwrap();
        assert!(reopened.get(&keep).is_ok() && !reopened.contains(&drop_id));
    }
}
