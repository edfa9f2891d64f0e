//! The replicated state: what applying every journal entry in order yields.
//! Applying is deterministic, so two replicas with the same entries have the
//! same [`StoreState::content_hash`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::journal::{Client, Entry, EntryId, Epoch, Generation, Lease, Record};
use crate::model::encode;

/// Most registered clients.
pub const CLIENTS_MAX: usize = 65_536;
/// Most generations kept (over all images).
pub const GENERATIONS_MAX: usize = 100_000;
/// Most DHCP leases recorded.
pub const LEASES_MAX: usize = 65_536;
/// Most refs (image refs and branches).
pub const REFS_MAX: usize = 65_536;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("entry {seq} does not follow {last}")]
    Gap { seq: u64, last: u64 },
    #[error("entry {seq} has epoch {epoch:?}, older than {last:?}")]
    EpochRegressed { seq: u64, epoch: Epoch, last: Epoch },
    #[error("generation {id} is not the entry's seq {seq}")]
    GenerationId { id: u64, seq: u64 },
    #[error("unknown generation {id}")]
    UnknownGeneration { id: u64 },
    #[error("more than {max} clients")]
    TooManyClients { max: usize },
    #[error("more than {max} generations")]
    TooManyGenerations { max: usize },
    #[error("more than {max} leases")]
    TooManyLeases { max: usize },
    #[error("more than {max} refs")]
    TooManyRefs { max: usize },
}

/// The state every replica derives from the journal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreState {
    /// The last entry applied.
    pub last: Option<EntryId>,
    /// Epoch history: each epoch and the first seq written in it.
    pub epochs: Vec<(Epoch, u64)>,
    pub generations: BTreeMap<u64, Generation>,
    /// `image/<name>` -> active generation; `branch/...` refs keep the
    /// generations a split-brain loser wrote.
    pub refs: BTreeMap<String, u64>,
    pub clients: BTreeMap<[u8; 6], Client>,
    pub leases: BTreeMap<[u8; 6], Lease>,
    /// The file id allocator's high-water mark, as the primary recorded it.
    pub file_id_next: u64,
}

/// Name of the ref holding an image's active generation.
pub fn image_ref(image: &str) -> String {
    format!("image/{image}")
}

impl StoreState {
    pub fn last_seq(&self) -> u64 {
        self.last.map_or(0, |l| l.seq)
    }

    /// The epoch the entry `seq` was written in, if this state's history
    /// covers it.
    pub fn epoch_of(&self, seq: u64) -> Option<Epoch> {
        if seq == 0 || seq > self.last_seq() {
            return None;
        }
        self.epochs
            .iter()
            .rev()
            .find(|(_, first)| *first <= seq)
            .map(|(epoch, _)| *epoch)
    }

    /// Apply one entry. Errors leave the state unchanged.
    pub fn apply(&mut self, record: &Record) -> Result<(), ApplyError> {
        self.check(record)?;
        self.apply_entry(record);
        if self.epochs.last().map(|(e, _)| *e) != Some(record.epoch) {
            self.epochs.push((record.epoch, record.seq));
        }
        self.last = Some(record.id());
        Ok(())
    }

    /// Whether `record` can follow: [`StoreState::apply`] succeeds exactly
    /// when this does, so a writer checks, makes the entry durable, then
    /// applies without a way to fail in between.
    pub fn check(&self, record: &Record) -> Result<(), ApplyError> {
        let last = self.last_seq();
        if record.seq != last + 1 {
            return Err(ApplyError::Gap {
                seq: record.seq,
                last,
            });
        }
        if let Some(prev) = self.last {
            if record.epoch < prev.epoch {
                return Err(ApplyError::EpochRegressed {
                    seq: record.seq,
                    epoch: record.epoch,
                    last: prev.epoch,
                });
            }
        }
        match &record.entry {
            Entry::NewGeneration { generation, .. } | Entry::BranchKept { generation, .. } => {
                if generation.id != record.seq {
                    return Err(ApplyError::GenerationId {
                        id: generation.id,
                        seq: record.seq,
                    });
                }
                if self.generations.len() >= GENERATIONS_MAX {
                    return Err(ApplyError::TooManyGenerations {
                        max: GENERATIONS_MAX,
                    });
                }
                if self.refs.len() >= REFS_MAX {
                    return Err(ApplyError::TooManyRefs { max: REFS_MAX });
                }
            }
            Entry::RefMove { name, generation } => {
                if !self.generations.contains_key(generation) {
                    return Err(ApplyError::UnknownGeneration { id: *generation });
                }
                if !self.refs.contains_key(name) && self.refs.len() >= REFS_MAX {
                    return Err(ApplyError::TooManyRefs { max: REFS_MAX });
                }
            }
            Entry::ClientUpsert { mac, .. } => {
                if !self.clients.contains_key(mac) && self.clients.len() >= CLIENTS_MAX {
                    return Err(ApplyError::TooManyClients { max: CLIENTS_MAX });
                }
            }
            Entry::Lease { mac, .. } => {
                if !self.leases.contains_key(mac) && self.leases.len() >= LEASES_MAX {
                    return Err(ApplyError::TooManyLeases { max: LEASES_MAX });
                }
            }
            Entry::ClientRemove { .. } | Entry::GenerationsDropped { .. } | Entry::PeerOutdated => {
            }
        }
        Ok(())
    }

    fn apply_entry(&mut self, record: &Record) {
        match &record.entry {
            Entry::NewGeneration {
                generation,
                file_id_next,
            } => {
                self.generations.insert(generation.id, generation.clone());
                self.refs
                    .insert(image_ref(&generation.image), generation.id);
                self.file_id_next = self.file_id_next.max(*file_id_next);
            }
            Entry::RefMove { name, generation } => {
                self.refs.insert(name.clone(), *generation);
            }
            Entry::BranchKept {
                name,
                generation,
                file_id_next,
            } => {
                self.generations.insert(generation.id, generation.clone());
                self.refs.insert(name.clone(), generation.id);
                self.file_id_next = self.file_id_next.max(*file_id_next);
            }
            Entry::ClientUpsert {
                mac,
                client,
                file_id_next,
            } => {
                self.clients.insert(*mac, client.clone());
                self.file_id_next = self.file_id_next.max(*file_id_next);
            }
            Entry::ClientRemove { mac } => {
                self.clients.remove(mac);
            }
            Entry::Lease { mac, lease } => {
                self.leases.insert(*mac, lease.clone());
            }
            Entry::GenerationsDropped { ids } => {
                let ids: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
                self.generations.retain(|id, _| !ids.contains(id));
                self.refs.retain(|_, g| !ids.contains(g));
            }
            Entry::PeerOutdated => {}
        }
    }

    /// BLAKE3 of the whole state's canonical encoding.
    pub fn content_hash(&self) -> [u8; 32] {
        *blake3::hash(&encode(self)).as_bytes()
    }

    /// The active generation of `image`.
    pub fn current(&self, image: &str) -> Option<&Generation> {
        let id = self.refs.get(&image_ref(image))?;
        self.generations.get(id)
    }

    pub fn client_by_mac(&self, mac: &[u8; 6]) -> Option<&Client> {
        self.clients.get(mac)
    }

    pub fn client_by_ipv4(&self, ipv4: [u8; 4]) -> Option<([u8; 6], &Client)> {
        self.clients
            .iter()
            .find(|(_, c)| c.ipv4 == ipv4)
            .map(|(mac, c)| (*mac, c))
    }

    /// Entries written after the common point `seq`, by this state's count.
    pub fn entries_after(&self, seq: u64) -> u64 {
        self.last_seq().saturating_sub(seq)
    }
}

/// The last entry two histories share: the highest seq both cover whose
/// epoch is the same on both sides. One epoch has one primary, so a shared
/// `(epoch, seq)` implies a shared prefix: agreement is monotone in seq and a
/// binary search finds its end. 0 if none.
pub fn last_common_seq(a: &[(Epoch, u64)], a_last: u64, b: &[(Epoch, u64)], b_last: u64) -> u64 {
    let epoch_at = |history: &[(Epoch, u64)], seq: u64| {
        history
            .iter()
            .rev()
            .find(|(_, first)| *first <= seq)
            .map(|(e, _)| *e)
    };
    let agree = |seq: u64| {
        let epoch = epoch_at(a, seq);
        epoch.is_some() && epoch == epoch_at(b, seq)
    };
    let (mut low, mut high) = (0u64, a_last.min(b_last));
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        if agree(mid) {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    low
}
