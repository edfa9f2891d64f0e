//! The stored data model: object ids, blob manifests, trees and nodes with
//! complete POSIX metadata. Everything here is encoded with postcard, which
//! is deterministic (maps are `BTreeMap`), so equal values hash equally.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// BLAKE3 of an object's kind byte followed by its bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectId(pub [u8; 32]);

impl ObjectId {
    /// The id of `bytes` stored as `kind`.
    pub fn of(kind: ObjectKind, bytes: &[u8]) -> ObjectId {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&[kind as u8]);
        hasher.update(bytes);
        ObjectId(*hasher.finalize().as_bytes())
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// What an object holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum ObjectKind {
    /// A slice of file content.
    Chunk = 1,
    /// A [`Blob`]: the chunk list of one file's content.
    Blob = 2,
    /// A [`Tree`]: one directory listing.
    Tree = 3,
}

impl ObjectKind {
    pub fn from_u8(value: u8) -> Option<ObjectKind> {
        match value {
            1 => Some(ObjectKind::Chunk),
            2 => Some(ObjectKind::Blob),
            3 => Some(ObjectKind::Tree),
            _ => None,
        }
    }
}

/// Seconds and nanoseconds since the Unix epoch (may be negative).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    /// One nanosecond later (saturating at the end of time: imported
    /// metadata can say anything).
    pub fn next_ns(self) -> Timestamp {
        if self.nanos.saturating_add(1) >= 1_000_000_000 {
            match self.secs.checked_add(1) {
                Some(secs) => Timestamp { secs, nanos: 0 },
                None => self,
            }
        } else {
            Timestamp {
                secs: self.secs,
                nanos: self.nanos + 1,
            }
        }
    }
}

/// The content of a regular file: its chunks in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ObjectId,
    pub len: u32,
}

/// Metadata every node carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Permission bits including setuid (0o4000), setgid (0o2000) and
    /// sticky (0o1000); the file type lives in [`NodeKind`].
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    /// Links to this node within its tree (hard links share a file id).
    pub nlink: u32,
    /// Extended attributes, `security.capability` included: recorded and
    /// exported, though NFSv3 cannot carry them to clients (file
    /// capabilities are lost on an NFSv3 root; use setuid instead).
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Type-specific part of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    File { blob: ObjectId, size: u64 },
    Dir { tree: ObjectId },
    Symlink { target: Vec<u8> },
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
    Fifo,
    Socket,
}

impl NodeKind {
    /// `S_IFMT` bits of this kind.
    pub fn format_bits(&self) -> u32 {
        match self {
            NodeKind::File { .. } => libc::S_IFREG,
            NodeKind::Dir { .. } => libc::S_IFDIR,
            NodeKind::Symlink { .. } => libc::S_IFLNK,
            NodeKind::CharDevice { .. } => libc::S_IFCHR,
            NodeKind::BlockDevice { .. } => libc::S_IFBLK,
            NodeKind::Fifo => libc::S_IFIFO,
            NodeKind::Socket => libc::S_IFSOCK,
        }
    }

    /// Size as `stat` reports it (directories: number of entries is not
    /// recorded, so 0; clients see the NFS server's own choice).
    pub fn size(&self) -> u64 {
        match self {
            NodeKind::File { size, .. } => *size,
            NodeKind::Symlink { target } => target.len() as u64,
            _ => 0,
        }
    }
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Assigned by the primary at commit (see [`crate::commit`]); stable for
    /// directories, new whenever a regular file's content changes.
    pub file_id: u64,
    pub kind: NodeKind,
    pub meta: Meta,
}

/// One directory listing, by name bytes (Linux names need not be UTF-8).
/// The directory's own id and metadata live in its parent's [`Node`] (the
/// root's in its generation).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub entries: BTreeMap<Vec<u8>, Node>,
}

/// Postcard encoding of a model value.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("model values always encode")
}

impl NodeKind {
    /// The object this node refers to, if any.
    pub fn object(&self) -> Option<ObjectId> {
        match self {
            NodeKind::File { blob, .. } => Some(*blob),
            NodeKind::Dir { tree } => Some(*tree),
            _ => None,
        }
    }
}
