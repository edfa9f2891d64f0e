//! The replicated state: what applying every journal entry in order yields.
//! Applying is deterministic, so two replicas with the same entries have the
//! same [`StoreState::content_hash`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::journal::{
    Client, Entry, EntryId, Epoch, Generation, Lease, PoolLease, PoolLeaseState, Record,
    LEASES_PER_ENTRY_MAX, LEASE_CLIENT_LEN_MAX,
};
use crate::model::encode;

/// Most registered clients.
pub const CLIENTS_MAX: usize = 65_536;
/// Most generations kept (over all images).
pub const GENERATIONS_MAX: usize = 100_000;
/// Most DHCP lease addresses recorded.
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
    #[error("lease entry of {count} leases exceeds {max}")]
    LeaseEntryTooLong { count: usize, max: usize },
    #[error("lease client key of {len} bytes exceeds {max}")]
    LeaseClientTooLong { len: usize, max: usize },
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
    /// DHCP pool leases: the latest record of each address.
    pub leases: BTreeMap<[u8; 4], RecordedLease>,
    /// The file id allocator's high-water mark, as the primary recorded it.
    pub file_id_next: u64,
}

/// The latest lease record of one address, and where it was written: the
/// DHCP server replays leases in that order (a client that moved to another
/// address must end on the newer one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedLease {
    pub seq: u64,
    /// Position within its entry (a group commit holds many).
    pub index: u32,
    pub lease: PoolLease,
}

/// The state as snapshots before lease records had version 2 held it
/// (leases by MAC); decoded only to convert.
#[derive(Serialize, Deserialize)]
struct StoreStateV1 {
    last: Option<EntryId>,
    epochs: Vec<(Epoch, u64)>,
    generations: BTreeMap<u64, Generation>,
    refs: BTreeMap<String, u64>,
    clients: BTreeMap<[u8; 6], Client>,
    leases: BTreeMap<[u8; 6], Lease>,
    file_id_next: u64,
}

/// First bytes of a snapshot in the current encoding. A version-1 snapshot
/// starts with the encoding of `Option<EntryId>`: 0 or 1.
const SNAPSHOT_V2_MAGIC: [u8; 4] = *b"IRs2";

/// The client key the DHCP server uses for an Ethernet client without a
/// client identifier: htype 1, then the MAC.
pub fn ethernet_client_key(mac: &[u8; 6]) -> Vec<u8> {
    let mut key = Vec::with_capacity(7);
    key.push(1);
    key.extend_from_slice(mac);
    key
}

fn lease_v1_as_v2(mac: &[u8; 6], lease: &Lease) -> PoolLease {
    PoolLease {
        ipv4: lease.ipv4,
        client: ethernet_client_key(mac),
        state: PoolLeaseState::Bound,
        until_unix_secs: lease.expires_unix_secs,
    }
}

/// Name of the ref holding an image's active generation.
pub fn image_ref(image: &str) -> String {
    format!("image/{image}")
}

impl StoreState {
    /// The state as a snapshot (versioned, see [`StoreState::decode_snapshot`]).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut bytes = SNAPSHOT_V2_MAGIC.to_vec();
        bytes.extend(encode(self));
        bytes
    }

    /// Decode a snapshot of this version or of version 1 (leases by MAC).
    pub fn decode_snapshot(bytes: &[u8]) -> Result<StoreState, postcard::Error> {
        if let Some(body) = bytes.strip_prefix(&SNAPSHOT_V2_MAGIC[..]) {
            return postcard::from_bytes(body);
        }
        let old: StoreStateV1 = postcard::from_bytes(bytes)?;
        let mut leases = BTreeMap::new();
        for (index, (mac, lease)) in old.leases.iter().enumerate() {
            let recorded = RecordedLease {
                seq: 0,
                index: u32::try_from(index).unwrap_or(u32::MAX),
                lease: lease_v1_as_v2(mac, lease),
            };
            leases.insert(lease.ipv4, recorded);
        }
        Ok(StoreState {
            last: old.last,
            epochs: old.epochs,
            generations: old.generations,
            refs: old.refs,
            clients: old.clients,
            leases,
            file_id_next: old.file_id_next,
        })
    }

    /// Every pool lease, oldest record first.
    pub fn pool_leases(&self) -> Vec<&PoolLease> {
        let mut recorded: Vec<&RecordedLease> = self.leases.values().collect();
        recorded.sort_by_key(|r| (r.seq, r.index));
        recorded.into_iter().map(|r| &r.lease).collect()
    }

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
            Entry::Lease { lease, .. } => {
                if !self.leases.contains_key(&lease.ipv4) && self.leases.len() >= LEASES_MAX {
                    return Err(ApplyError::TooManyLeases { max: LEASES_MAX });
                }
            }
            Entry::PoolLeases { leases } => self.check_pool_leases(leases)?,
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
                // Version 1 kept one lease per MAC.
                let lease = lease_v1_as_v2(mac, lease);
                self.leases
                    .retain(|ip, r| *ip == lease.ipv4 || r.lease.client != lease.client);
                let recorded = RecordedLease {
                    seq: record.seq,
                    index: 0,
                    lease,
                };
                self.leases.insert(recorded.lease.ipv4, recorded);
            }
            Entry::PoolLeases { leases } => {
                for (index, lease) in leases.iter().enumerate() {
                    let recorded = RecordedLease {
                        seq: record.seq,
                        index: u32::try_from(index).expect("checked: entry length bounded"),
                        lease: lease.clone(),
                    };
                    self.leases.insert(lease.ipv4, recorded);
                }
            }
            Entry::GenerationsDropped { ids } => {
                let ids: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
                self.generations.retain(|id, _| !ids.contains(id));
                self.refs.retain(|_, g| !ids.contains(g));
            }
            Entry::PeerOutdated => {}
        }
    }

    fn check_pool_leases(&self, leases: &[PoolLease]) -> Result<(), ApplyError> {
        if leases.len() > LEASES_PER_ENTRY_MAX {
            return Err(ApplyError::LeaseEntryTooLong {
                count: leases.len(),
                max: LEASES_PER_ENTRY_MAX,
            });
        }
        let mut new_addresses = std::collections::BTreeSet::new();
        for lease in leases {
            if lease.client.len() > LEASE_CLIENT_LEN_MAX {
                return Err(ApplyError::LeaseClientTooLong {
                    len: lease.client.len(),
                    max: LEASE_CLIENT_LEN_MAX,
                });
            }
            if !self.leases.contains_key(&lease.ipv4) {
                new_addresses.insert(lease.ipv4);
            }
        }
        if self.leases.len() + new_addresses.len() > LEASES_MAX {
            return Err(ApplyError::TooManyLeases { max: LEASES_MAX });
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_snapshot_decodes_with_leases_by_address() {
        let mut old = StoreStateV1 {
            last: Some(EntryId {
                epoch: Epoch { term: 3, node: 1 },
                seq: 9,
            }),
            epochs: vec![(Epoch { term: 3, node: 1 }, 1)],
            generations: BTreeMap::new(),
            refs: BTreeMap::new(),
            clients: BTreeMap::new(),
            leases: BTreeMap::new(),
            file_id_next: 77,
        };
        for (last, ip) in [(1u8, 20u8), (2, 10)] {
            let lease = Lease {
                ipv4: [10, 0, 0, ip],
                expires_unix_secs: 1_000 + u64::from(ip),
            };
            old.leases.insert([2, 0, 0, 0, 0, last], lease);
        }
        let state = StoreState::decode_snapshot(&encode(&old)).expect("v1 decodes");
        assert_eq!((state.last_seq(), state.file_id_next), (9, 77));
        let leases = state.pool_leases();
        assert_eq!(leases.len(), 2);
        assert_eq!(leases[0].ipv4, [10, 0, 0, 20], "MAC order kept");
        assert_eq!(leases[0].client, vec![1, 2, 0, 0, 0, 0, 1]);
        assert_eq!(leases[0].state, PoolLeaseState::Bound);
        assert_eq!(leases[1].until_unix_secs, 1_010);
        // And the current encoding round-trips, marked as version 2.
        let bytes = state.encode_snapshot();
        assert!(bytes.starts_with(b"IRs2"));
        assert_eq!(StoreState::decode_snapshot(&bytes).expect("v2"), state);
        assert!(StoreState::decode_snapshot(b"IRs2\xff").is_err());
        assert!(StoreState::decode_snapshot(&[7, 7, 7]).is_err());
    }
}
