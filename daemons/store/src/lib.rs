//! ironroot's replicated image store: content-addressed file contents,
//! trees with complete POSIX metadata and primary-assigned file ids,
//! generations and refs per image, the client registry and DHCP leases, all
//! changed only through a checksummed journal that is replicated
//! synchronously (protocol C) to the peer node.
//!
//! It must never: allocate a file id outside the primary's commit (a
//! secondary takes ids from the entries it receives); acknowledge an entry
//! before it is durable here and, when replicating, on the peer; serve bytes
//! that fail their hash; read a clock or draw a random number (times are
//! the caller's arguments, randomness the simulator's seed).
//!
//! # Layers
//! - [`storage`]: the [`storage::Storage`] trait (append, sync, atomic
//!   replace, list, remove) on a real directory or in memory with crash
//!   semantics (unsynced bytes are lost, optionally torn at a seeded byte).
//! - [`objects`]: packs of content-addressed objects; [`chunk`]: the
//!   content-defined chunker (gear hash, 16/64/256 KiB min/avg/max).
//! - [`model`], [`stage`], [`tarball`], [`commit`], [`export`]: trees,
//!   import from a directory or tar archive, file id assignment, export.
//! - [`journal`], [`state`], [`store`], [`view`], [`gc`]: entries, the state
//!   they yield, a node's store, the read API, retention.
//! - [`replication`]: the sans-IO primary/secondary machines and their TCP
//!   drivers.
//!
//! # On-disk format
//! One flat directory per node (names `[A-Za-z0-9._-]`):
//!
//! - `pack-NNNNNNNN` (8 decimal digits): object segments, append-only,
//!   sealed at 64 MiB. Each record is `"IRr1" | kind u8 | len u32 LE |
//!   checksum[16] | payload`, checksum = BLAKE3(kind | len | payload)[..16];
//!   kind 1 = chunk, 2 = blob manifest, 3 = tree; payload = `id[32] |
//!   bytes`, id = BLAKE3(kind | bytes). Blob manifests and trees are
//!   postcard-encoded [`model::Blob`] and [`model::Tree`].
//! - `journal-NNNNNNNNNNNNNNNN` (16 digits: the first seq it holds): journal
//!   segments in the same framing, kind 1, payload a postcard
//!   [`journal::Record`] `{epoch {term, node}, seq, entry}`; a segment is
//!   synced after every append, before anyone is told.
//! - `snapshot`: one record of kind 2 holding a postcard
//!   [`state::StoreState`] (the state at its `last` entry), replaced by
//!   write-temp, fsync, rename, fsync dir. Compaction writes it and removes
//!   the journal segments it covers.
//! - `branches`: postcard list of generations this node gave up in a split
//!   brain, replaced atomically; their objects are retained until
//!   [`store::Store::publish_branches`] (run once this node is primary again)
//!   re-commits them into the replicated state under `branch/<image>/<seq>`
//!   refs, so resolution never destroys data on either node.
//!
//! Refs live in the state (journal and snapshot); the snapshot's atomic
//! rename is what makes them durable without a separate file.
//!
//! Opening scans every pack and journal segment, truncates the torn tail
//! after the last valid record (the only damage a crash can leave, since
//! nothing is acknowledged before its sync), rebuilds the object index,
//! loads the snapshot and replays the entries after it. Damage in the middle
//! of a file (bit rot) is different: a pack skips the damaged record and
//! keeps the ones after it (the object is missing, reads of it fail, and a
//! resync from the peer brings it back); a journal refuses to open rather
//! than guess which entries were lost. Every object read re-hashes its
//! bytes, so a damaged object is an error, never served.
//!
//! # Metadata limits
//! Extended attributes are recorded and exported, `security.capability`
//! included, but NFSv3 cannot carry xattrs: file capabilities are lost on a
//! client's NFS root (images must use setuid instead, e.g. for `ping`).
//! Directory sizes are not recorded (each filesystem picks its own).

pub mod chunk;
pub mod commit;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod gc;
pub mod journal;
pub mod model;
pub mod objects;
pub mod record;
pub mod replication;
pub mod stage;
pub mod state;
pub mod storage;
pub mod store;
pub mod tarball;
pub mod view;
