//! What the server needs from the image store: a per-client view of a
//! read-only tree. The store implements [`Filesystem`]; [`crate::MemFs`]
//! implements it in memory for tests and benchmarks.

use std::net::Ipv4Addr;

use bytes::Bytes;

/// A client of the registry; part of every file handle.
pub type ClientId = u32;
/// A node's id, assigned by the primary and identical on both nodes.
pub type FileId = u64;

/// Node types NFSv3 can describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Regular,
    Directory,
    Symlink,
    BlockDevice,
    CharDevice,
    Socket,
    Fifo,
}

/// Attributes as recorded in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attrs {
    pub kind: NodeKind,
    /// Permission bits including setuid/setgid/sticky (`0o7777`).
    pub mode: u32,
    /// At least 1: newer Linux clients treat 0 as a deleted file.
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size_bytes: u64,
    pub used_bytes: u64,
    /// Device numbers (major, minor) for block and character devices.
    pub rdev: (u32, u32),
    pub atime_ns: u64,
    pub mtime_ns: u64,
    pub ctime_ns: u64,
}

/// A node as one client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub file_id: FileId,
    /// Content version for regular files (pinned by their handles); `None`
    /// for everything else, which resolves against the current generation.
    pub version: Option<u64>,
    pub attrs: Attrs,
}

/// One name in a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub node: Node,
}

/// A page of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirPage {
    pub entries: Vec<DirEntry>,
    /// No entries follow the last one returned.
    pub eof: bool,
}

/// Space figures for FSSTAT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsStats {
    pub total_bytes: u64,
    pub total_files: u64,
}

/// Failures of the store, mapped to NFS3ERR_* by the server.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    #[error("no such name")]
    NotFound,
    #[error("file {0} is not a directory")]
    NotDirectory(FileId),
    #[error("file {0} is a directory")]
    IsDirectory(FileId),
    #[error("file {0} is not a symbolic link")]
    NotSymlink(FileId),
    /// The node or this version of it is no longer retained.
    #[error("file {file_id} version {version:?} is no longer retained")]
    Stale {
        file_id: FileId,
        version: Option<u64>,
    },
    #[error("client {0} has no view")]
    NoView(ClientId),
    #[error("store read failed for file {0}")]
    Io(FileId),
}

/// A per-client, read-only view of the images.
///
/// Directory listings must come in a stable order (the same for the same
/// directory generation on both nodes): READDIR cookies are positions in it.
/// Listings exclude `.` and `..`; `lookup` must resolve both.
pub trait Filesystem: Send + Sync + 'static {
    /// The client registry: which client uses this source address.
    fn client_by_addr(&self, addr: Ipv4Addr) -> Option<ClientId>;
    /// The root directory of the client's view.
    fn root(&self, client: ClientId) -> Result<Node, FsError>;
    /// A node by id (and version, for regular files).
    fn node(
        &self,
        client: ClientId,
        file_id: FileId,
        version: Option<u64>,
    ) -> Result<Node, FsError>;
    /// A name in a directory, including `.` and `..`.
    fn lookup(&self, client: ClientId, dir: FileId, name: &[u8]) -> Result<Node, FsError>;
    /// Entries `start..start + count_max` of a directory listing.
    fn dir_page(
        &self,
        client: ClientId,
        dir: FileId,
        start: usize,
        count_max: usize,
    ) -> Result<DirPage, FsError>;
    /// Up to `len` bytes from `offset` of a regular file's pinned version.
    fn read(
        &self,
        client: ClientId,
        file_id: FileId,
        version: Option<u64>,
        offset: u64,
        len: usize,
    ) -> Result<Bytes, FsError>;
    /// A symbolic link's target.
    fn readlink(&self, client: ClientId, file_id: FileId) -> Result<Vec<u8>, FsError>;
    /// Totals for FSSTAT.
    fn stats(&self, client: ClientId) -> FsStats;
}
