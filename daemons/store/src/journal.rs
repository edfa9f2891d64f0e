//! The journal: every change as an entry `(epoch, seq)`, appended to
//! segment files `journal-<first seq, 16 digits>` in the framing of
//! [`crate::record`], synced before anyone is told it exists. On open the
//! snapshot (`snapshot`, written by atomic rename) is loaded and the entries
//! after it replayed; a torn tail of the newest segment is truncated.
//! Compaction writes a snapshot at the last entry and removes the segments
//! it covers.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{encode, Node, Timestamp};
use crate::record;
use crate::storage::{Storage, StorageError};

/// Largest encoded entry.
pub const ENTRY_LEN_MAX: usize = 4 << 20;
/// Largest snapshot accepted on open or from a peer.
pub const SNAPSHOT_LEN_MAX: usize = 256 << 20;
/// A new segment starts past this size.
pub const SEGMENT_BYTES_MAX: u64 = 16 << 20;

const PREFIX: &str = "journal-";
const SNAPSHOT: &str = "snapshot";
const RECORD_KIND: u8 = 1;
const SNAPSHOT_KIND: u8 = 2;

/// A promotion's epoch. `term` grows at every promotion; `node` tells two
/// nodes promoted to the same term apart (split brain).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch {
    pub term: u64,
    pub node: u32,
}

/// Identity of one entry: two logs holding the same id hold the same entry
/// and the same history before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryId {
    pub epoch: Epoch,
    pub seq: u64,
}

/// One image version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// The seq of the entry that created it.
    pub id: u64,
    pub image: String,
    pub parent: Option<u64>,
    /// Wall time given by the caller.
    pub time: Timestamp,
    pub message: String,
    /// The root directory, file ids included.
    pub root: Node,
}

/// A registered client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub name: String,
    pub ipv4: [u8; 4],
    pub image: String,
    /// Files of this client alone, layered over its image.
    pub exceptions: Option<Node>,
}

/// A dynamic DHCP lease, version 1 of the lease record (keyed by MAC,
/// always bound). Still decoded and applied, as a bound [`PoolLease`] of
/// client key `01 ++ mac` (htype Ethernet + chaddr, the DHCP server's key
/// for a client without a client identifier); new leases are written as
/// [`Entry::PoolLeases`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub ipv4: [u8; 4],
    /// Unix seconds; a lease with an expiry in the past is free.
    pub expires_unix_secs: u64,
}

/// Longest DHCP client key in a lease: a client identifier (option 61,
/// at most 255 bytes) or htype + chaddr (at most 17 bytes).
pub const LEASE_CLIENT_LEN_MAX: usize = 255;
/// Most leases in one [`Entry::PoolLeases`] (one group commit).
pub const LEASES_PER_ENTRY_MAX: usize = 4096;

/// What a pool lease record says about its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolLeaseState {
    /// Held by `client` until `until_unix_secs`.
    Bound,
    /// Given back: free, remembered so the client gets it again.
    Released,
    /// Declined (someone unknown uses it): nobody gets it until
    /// `until_unix_secs`.
    Declined,
}

/// A dynamic DHCP lease, version 2 of the lease record: what the DHCP
/// server needs to rebuild its pool on the other node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolLease {
    pub ipv4: [u8; 4],
    /// The DHCP server's key for the client: its client identifier
    /// (option 61), or htype followed by chaddr.
    pub client: Vec<u8>,
    pub state: PoolLeaseState,
    /// Unix seconds: end of the lease (Bound) or of the quarantine
    /// (Declined); 0 for Released.
    pub until_unix_secs: u64,
}

/// A change.
///
/// Variants are only ever appended: the encoding names a variant by its
/// index, so a new record kind is a new variant (a new version), and old
/// journals and snapshots keep decoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// A new generation; also points the image's ref at it.
    NewGeneration {
        generation: Generation,
        /// The primary's id allocator after the commit.
        file_id_next: u64,
    },
    /// Point a ref (`image/<name>` or `branch/...`) at a generation.
    RefMove {
        name: String,
        generation: u64,
    },
    ClientUpsert {
        mac: [u8; 6],
        client: Client,
        file_id_next: u64,
    },
    ClientRemove {
        mac: [u8; 6],
    },
    Lease {
        mac: [u8; 6],
        lease: Lease,
    },
    /// A generation given up in a split brain, re-committed with fresh file
    /// ids by the node that kept it, under the ref `name`
    /// (`branch/<image>/<seq>`); it does not touch the image's ref.
    BranchKept {
        name: String,
        generation: Generation,
        file_id_next: u64,
    },
    /// Retention dropped these generations (see [`crate::gc`]).
    GenerationsDropped {
        ids: Vec<u64>,
    },
    /// Pool lease changes, in the order the DHCP server made them (one
    /// group commit); version 2 of [`Entry::Lease`].
    PoolLeases {
        leases: Vec<PoolLease>,
    },
    /// The primary recorded its peer Outdated: from here it may acknowledge
    /// entries the peer does not hold. Written (durably, in a fresh epoch)
    /// before the first such acknowledgement, so a tail of entries after the
    /// last one both nodes share that holds no such entry was never
    /// acknowledged to anyone. Changes no state.
    PeerOutdated,
}

impl Entry {
    /// Whether the entry only records DHCP leases (split-brain policies
    /// weigh such entries as no change).
    pub fn is_lease(&self) -> bool {
        matches!(self, Entry::Lease { .. } | Entry::PoolLeases { .. })
    }

    /// Roots of the objects the entry references.
    pub fn object_roots(&self) -> Vec<crate::model::ObjectId> {
        match self {
            Entry::NewGeneration { generation, .. } | Entry::BranchKept { generation, .. } => {
                generation.root.kind.object().into_iter().collect()
            }
            Entry::ClientUpsert { client, .. } => client
                .exceptions
                .as_ref()
                .and_then(|n| n.kind.object())
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// An entry with its identity, as stored and shipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub epoch: Epoch,
    pub seq: u64,
    pub entry: Entry,
}

impl Record {
    pub fn id(&self) -> EntryId {
        EntryId {
            epoch: self.epoch,
            seq: self.seq,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("journal entry of {len} bytes exceeds {max}")]
    TooLarge { len: usize, max: usize },
    #[error("journal segment {name} is corrupt before its tail at byte {offset}")]
    CorruptSegment { name: String, offset: u64 },
    #[error("the snapshot does not decode: {0}")]
    Snapshot(postcard::Error),
    #[error("entry {seq} cannot follow {last}")]
    OutOfOrder { seq: u64, last: u64 },
}

/// What [`Journal::open`] recovered.
#[derive(Debug, Default)]
pub struct JournalRecovery {
    /// The snapshot's bytes (a [`crate::state::StoreState`]), if any.
    pub snapshot: Option<Vec<u8>>,
    /// Entries after the snapshot, in order.
    pub records: Vec<Record>,
    pub truncated_bytes: u64,
}

/// The journal's files.
pub struct Journal {
    storage: Arc<dyn Storage>,
    segment: Option<String>,
    segment_len: u64,
    last_seq: u64,
    /// seq -> (segment, byte offset just past the entry), for truncation.
    ends: BTreeMap<u64, (String, u64)>,
}

fn segment_name(first_seq: u64) -> String {
    format!("{PREFIX}{first_seq:016}")
}

impl Journal {
    pub fn open(storage: Arc<dyn Storage>) -> Result<(Journal, JournalRecovery), JournalError> {
        let mut recovery = JournalRecovery::default();
        if storage.len(SNAPSHOT)?.is_some() {
            let bytes = storage.read_all(SNAPSHOT)?;
            let (kind, payload) = record::decode_one(&bytes, SNAPSHOT_LEN_MAX).ok_or(
                JournalError::CorruptSegment {
                    name: SNAPSHOT.into(),
                    offset: 0,
                },
            )?;
            if kind == SNAPSHOT_KIND {
                recovery.snapshot = Some(payload.to_vec());
            }
        }
        let segments: Vec<String> = storage
            .list()?
            .into_iter()
            .filter(|n| n.starts_with(PREFIX))
            .collect();
        let mut journal = Journal {
            storage: storage.clone(),
            segment: None,
            segment_len: 0,
            last_seq: 0,
            ends: BTreeMap::new(),
        };
        for (i, name) in segments.iter().enumerate() {
            let bytes = storage.read_all(name)?;
            let scan = record::scan(&bytes, ENTRY_LEN_MAX);
            if scan.skipped_bytes > 0 {
                // Damage before the tail is not a crash's doing: refuse to
                // guess which entries were lost.
                return Err(JournalError::CorruptSegment {
                    name: name.clone(),
                    offset: scan.found_gap_offset(),
                });
            }
            let (found, valid) = (scan.found, scan.valid_end);
            if valid < bytes.len() {
                // Only the newest segment can hold a torn tail; damage
                // elsewhere is not a crash's doing.
                if i + 1 != segments.len() {
                    return Err(JournalError::CorruptSegment {
                        name: name.clone(),
                        offset: valid as u64,
                    });
                }
                storage.truncate(name, valid as u64)?;
                recovery.truncated_bytes += (bytes.len() - valid) as u64;
            }
            for rec in found {
                let payload = &bytes[rec.payload_offset..rec.payload_offset + rec.payload_len];
                let Ok(record) = postcard::from_bytes::<Record>(payload) else {
                    return Err(JournalError::CorruptSegment {
                        name: name.clone(),
                        offset: rec.payload_offset as u64,
                    });
                };
                journal.last_seq = record.seq;
                let end = (rec.payload_offset + rec.payload_len) as u64;
                journal.ends.insert(record.seq, (name.clone(), end));
                recovery.records.push(record);
            }
            journal.segment = Some(name.clone());
            journal.segment_len = valid as u64;
        }
        Ok((journal, recovery))
    }

    /// Append `record` and make it durable.
    pub fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        if self.last_seq != 0 && record.seq != self.last_seq + 1 {
            return Err(JournalError::OutOfOrder {
                seq: record.seq,
                last: self.last_seq,
            });
        }
        let payload = encode(record);
        if payload.len() > ENTRY_LEN_MAX {
            return Err(JournalError::TooLarge {
                len: payload.len(),
                max: ENTRY_LEN_MAX,
            });
        }
        if self.segment.is_none() || self.segment_len >= SEGMENT_BYTES_MAX {
            self.segment = Some(segment_name(record.seq));
            self.segment_len = 0;
        }
        let name = self.segment.clone().expect("set above");
        let framed = record::encode(RECORD_KIND, &payload);
        let offset = match self.storage.append(&name, &framed) {
            Ok(offset) => offset,
            Err(error) => {
                // A full disk may have taken part of the record: cut it, or
                // the next append would bury it mid-segment and the journal
                // would refuse to open. Best effort, as in the object packs.
                if self.storage.len(&name)?.is_some() {
                    let _ = self.storage.truncate(&name, self.segment_len);
                }
                return Err(error.into());
            }
        };
        if let Err(error) = self.storage.sync(&name) {
            // The entry is not durable and its caller hears so: it must not
            // stay either, or the next entry would take the same seq.
            let _ = self.storage.truncate(&name, self.segment_len);
            return Err(error.into());
        }
        self.segment_len = offset + framed.len() as u64;
        self.last_seq = record.seq;
        self.ends.insert(record.seq, (name, self.segment_len));
        Ok(())
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Write `snapshot` (the state at `seq`, which must be the last entry)
    /// atomically, then drop every segment.
    pub fn compact(&mut self, seq: u64, snapshot: &[u8]) -> Result<(), JournalError> {
        self.install_snapshot(seq, snapshot)
    }

    /// Replace everything with `snapshot` at `seq` (compaction, or a
    /// snapshot received from the peer).
    pub fn install_snapshot(&mut self, seq: u64, snapshot: &[u8]) -> Result<(), JournalError> {
        self.storage
            .write_atomic(SNAPSHOT, &record::encode(SNAPSHOT_KIND, snapshot))?;
        let segments: Vec<String> = self.ends.values().map(|(name, _)| name.clone()).collect();
        for name in segments.iter().chain(self.segment.iter()) {
            self.storage.remove(name)?;
        }
        self.ends.clear();
        self.segment = None;
        self.segment_len = 0;
        self.last_seq = seq;
        Ok(())
    }

    /// Drop every entry after `seq` (a split-brain loser going back to the
    /// last common entry). `seq` must be in the journal, not the snapshot.
    pub fn truncate_after(&mut self, seq: u64) -> Result<bool, JournalError> {
        let Some((name, end)) = self.ends.get(&seq).cloned() else {
            return Ok(false);
        };
        let later: Vec<(u64, String)> = self
            .ends
            .range(seq + 1..)
            .map(|(s, (n, _))| (*s, n.clone()))
            .collect();
        for (later_seq, segment) in later {
            if segment != name {
                self.storage.remove(&segment)?;
            }
            self.ends.remove(&later_seq);
        }
        self.storage.truncate(&name, end)?;
        self.segment = Some(name);
        self.segment_len = end;
        self.last_seq = seq;
        Ok(true)
    }

    /// Drop every entry, keeping the snapshot at `snapshot_seq` (going back
    /// to it, or removing segments a compaction left behind when it crashed
    /// after writing the snapshot).
    pub fn drop_entries(&mut self, snapshot_seq: u64) -> Result<(), JournalError> {
        let segments: Vec<String> = self.ends.values().map(|(name, _)| name.clone()).collect();
        for name in segments.iter().chain(self.segment.iter()) {
            self.storage.remove(name)?;
        }
        self.last_seq = snapshot_seq;
        self.ends.clear();
        self.segment = None;
        self.segment_len = 0;
        Ok(())
    }

    /// Entries `from..` as stored (for shipping to a peer), at most `max`.
    pub fn read_from(&self, from: u64, max: usize) -> Result<Vec<Record>, JournalError> {
        let mut out = Vec::new();
        let mut segments: Vec<&String> = self.ends.range(from..).map(|(_, (n, _))| n).collect();
        segments.dedup();
        for name in segments {
            let bytes = self.storage.read_all(name)?;
            let found = record::scan(&bytes, ENTRY_LEN_MAX).found;
            for rec in found {
                let payload = &bytes[rec.payload_offset..rec.payload_offset + rec.payload_len];
                let record: Record =
                    postcard::from_bytes(payload).map_err(|_| JournalError::CorruptSegment {
                        name: name.clone(),
                        offset: rec.payload_offset as u64,
                    })?;
                if record.seq >= from && out.len() < max {
                    out.push(record);
                }
            }
        }
        Ok(out)
    }

    /// The lowest seq still held as an entry (entries below are only in
    /// the snapshot).
    pub fn first_seq(&self) -> Option<u64> {
        self.ends.keys().next().copied()
    }
}
