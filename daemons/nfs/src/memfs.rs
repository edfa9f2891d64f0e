//! An in-memory [`Filesystem`] for tests and benchmarks, optionally built
//! from a real directory on disk so results can be compared byte for byte.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::fs::{
    Attrs, ClientId, DirEntry, DirPage, FileId, Filesystem, FsError, FsStats, Node, NodeKind,
};

/// Loading a directory tree stops at these sizes.
#[derive(Clone, Copy, Debug)]
pub struct LoadLimits {
    pub files_max: usize,
    pub bytes_max: u64,
}

impl Default for LoadLimits {
    fn default() -> LoadLimits {
        LoadLimits {
            files_max: 200_000,
            bytes_max: 2 << 30,
        }
    }
}

/// Why a tree could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("tree exceeds {files_max} files or {bytes_max} bytes")]
    TooBig { files_max: usize, bytes_max: u64 },
}

#[derive(Clone, Debug)]
enum Content {
    File(Bytes),
    /// Sorted by name: the stable listing order.
    Dir(Vec<(Vec<u8>, FileId)>),
    Symlink(Vec<u8>),
    Other,
}

#[derive(Clone, Debug)]
struct MemNode {
    parent: FileId,
    version: Option<u64>,
    attrs: Attrs,
    content: Content,
}

/// One client's view.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    root: FileId,
    nodes: BTreeMap<FileId, MemNode>,
    /// Old versions of regular files still readable by handle.
    retained: BTreeMap<(FileId, u64), MemNode>,
    next_file_id: FileId,
}

impl Tree {
    /// A tree with an empty root directory (file id 1).
    pub fn empty() -> Tree {
        let mut tree = Tree {
            root: 1,
            next_file_id: 2,
            ..Tree::default()
        };
        tree.nodes.insert(
            1,
            MemNode {
                parent: 1,
                version: None,
                attrs: attrs(NodeKind::Directory, 0o755, 0, 2),
                content: Content::Dir(Vec::new()),
            },
        );
        tree
    }

    /// Load a directory from disk; ids follow a sorted walk, so the same tree
    /// gives the same ids.
    pub fn from_dir(path: &Path, limits: LoadLimits) -> Result<Tree, LoadError> {
        let mut tree = Tree::empty();
        let meta = std::fs::metadata(path).map_err(|source| io_error(path, source))?;
        if let Some(root) = tree.nodes.get_mut(&1) {
            root.attrs = attrs_of(&meta, NodeKind::Directory);
        }
        let mut total_bytes = 0u64;
        tree.load_dir(path, 1, limits, &mut total_bytes)?;
        Ok(tree)
    }

    fn load_dir(
        &mut self,
        path: &Path,
        dir: FileId,
        limits: LoadLimits,
        total_bytes: &mut u64,
    ) -> Result<(), LoadError> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|source| io_error(path, source))? {
            let entry = entry.map_err(|source| io_error(path, source))?;
            names.push(entry.file_name());
        }
        names.sort();
        for name in names {
            if self.nodes.len() >= limits.files_max || *total_bytes > limits.bytes_max {
                return Err(LoadError::TooBig {
                    files_max: limits.files_max,
                    bytes_max: limits.bytes_max,
                });
            }
            let child_path = path.join(&name);
            let meta =
                std::fs::symlink_metadata(&child_path).map_err(|s| io_error(&child_path, s))?;
            let file_type = meta.file_type();
            let (kind, content) = if file_type.is_dir() {
                (NodeKind::Directory, Content::Dir(Vec::new()))
            } else if file_type.is_symlink() {
                let target =
                    std::fs::read_link(&child_path).map_err(|s| io_error(&child_path, s))?;
                (
                    NodeKind::Symlink,
                    Content::Symlink(target.into_os_string().into_encoded_bytes()),
                )
            } else if file_type.is_file() {
                let bytes = std::fs::read(&child_path).map_err(|s| io_error(&child_path, s))?;
                *total_bytes += bytes.len() as u64;
                (NodeKind::Regular, Content::File(Bytes::from(bytes)))
            } else if file_type.is_block_device() {
                (NodeKind::BlockDevice, Content::Other)
            } else if file_type.is_char_device() {
                (NodeKind::CharDevice, Content::Other)
            } else if file_type.is_socket() {
                (NodeKind::Socket, Content::Other)
            } else {
                (NodeKind::Fifo, Content::Other)
            };
            let mut node_attrs = attrs_of(&meta, kind);
            if let Content::Symlink(target) = &content {
                node_attrs.size_bytes = target.len() as u64;
            }
            let id = self.insert(dir, name.into_encoded_bytes(), node_attrs, content);
            if kind == NodeKind::Directory {
                self.load_dir(&child_path, id, limits, total_bytes)?;
            }
        }
        Ok(())
    }

    fn insert(&mut self, dir: FileId, name: Vec<u8>, attrs: Attrs, content: Content) -> FileId {
        let id = self.next_file_id;
        self.next_file_id += 1;
        let version = (attrs.kind == NodeKind::Regular).then_some(1);
        self.nodes.insert(
            id,
            MemNode {
                parent: dir,
                version,
                attrs,
                content,
            },
        );
        if let Some(MemNode {
            content: Content::Dir(entries),
            ..
        }) = self.nodes.get_mut(&dir)
        {
            let at = entries.partition_point(|(existing, _)| existing < &name);
            entries.insert(at, (name, id));
        }
        id
    }

    /// Add a regular file to the root directory (tests).
    pub fn add_file(&mut self, name: &str, mode: u32, uid: u32, gid: u32, data: &[u8]) -> FileId {
        let mut file_attrs = attrs(NodeKind::Regular, mode, uid, gid);
        file_attrs.size_bytes = data.len() as u64;
        self.insert(
            self.root,
            name.as_bytes().to_vec(),
            file_attrs,
            Content::File(data.to_vec().into()),
        )
    }

    /// Add a directory under the root (tests).
    pub fn add_dir(&mut self, name: &str, mode: u32) -> FileId {
        self.insert(
            self.root,
            name.as_bytes().to_vec(),
            attrs(NodeKind::Directory, mode, 0, 0),
            Content::Dir(Vec::new()),
        )
    }

    /// Add an empty file to a directory (tests of large listings).
    pub fn add_empty_file_in(&mut self, dir: FileId, name: &str) -> FileId {
        self.insert(
            dir,
            name.as_bytes().to_vec(),
            attrs(NodeKind::Regular, 0o644, 0, 0),
            Content::File(Bytes::new()),
        )
    }

    /// Add a symbolic link to the root (tests).
    pub fn add_symlink(&mut self, name: &str, target: &str) -> FileId {
        let mut link_attrs = attrs(NodeKind::Symlink, 0o777, 0, 0);
        link_attrs.size_bytes = target.len() as u64;
        self.insert(
            self.root,
            name.as_bytes().to_vec(),
            link_attrs,
            Content::Symlink(target.as_bytes().to_vec()),
        )
    }

    /// Give a file new content the way the store does: a new version whose
    /// old one stays retained, and a newer ctime/mtime on its directory.
    pub fn update_file(&mut self, file_id: FileId, data: &[u8], ctime_ns: u64) {
        let Some(node) = self.nodes.get_mut(&file_id) else {
            return;
        };
        let old = node.clone();
        let version = old.version.unwrap_or(0) + 1;
        node.version = Some(version);
        node.content = Content::File(data.to_vec().into());
        node.attrs.size_bytes = data.len() as u64;
        node.attrs.mtime_ns = ctime_ns;
        node.attrs.ctime_ns = ctime_ns;
        let parent = node.parent;
        self.retained
            .insert((file_id, old.version.unwrap_or(0)), old);
        if let Some(dir) = self.nodes.get_mut(&parent) {
            dir.attrs.mtime_ns = ctime_ns;
            dir.attrs.ctime_ns = ctime_ns;
        }
    }

    /// Drop every retained old version (the store's garbage collection).
    pub fn collect_retained(&mut self) {
        self.retained.clear();
    }

    pub fn root_id(&self) -> FileId {
        self.root
    }

    fn resolve(&self, file_id: FileId, version: Option<u64>) -> Result<&MemNode, FsError> {
        let stale = FsError::Stale { file_id, version };
        let node = self.nodes.get(&file_id).ok_or(stale.clone())?;
        if node.version == version {
            return Ok(node);
        }
        match version {
            Some(version) => self.retained.get(&(file_id, version)).ok_or(stale),
            None => Err(stale),
        }
    }

    fn to_node(&self, file_id: FileId, node: &MemNode) -> Node {
        Node {
            file_id,
            version: node.version,
            attrs: node.attrs.clone(),
        }
    }
}

fn attrs(kind: NodeKind, mode: u32, uid: u32, gid: u32) -> Attrs {
    Attrs {
        kind,
        mode,
        nlink: if kind == NodeKind::Directory { 2 } else { 1 },
        uid,
        gid,
        size_bytes: 0,
        used_bytes: 0,
        rdev: (0, 0),
        atime_ns: 1_700_000_000_000_000_000,
        mtime_ns: 1_700_000_000_000_000_000,
        ctime_ns: 1_700_000_000_000_000_000,
    }
}

fn attrs_of(meta: &std::fs::Metadata, kind: NodeKind) -> Attrs {
    let ns = |secs: i64, nanos: i64| {
        u64::try_from(secs).unwrap_or(0) * 1_000_000_000 + u64::try_from(nanos).unwrap_or(0)
    };
    let rdev = meta.rdev();
    Attrs {
        kind,
        mode: meta.mode() & 0o7777,
        nlink: u32::try_from(meta.nlink()).unwrap_or(u32::MAX).max(1),
        uid: meta.uid(),
        gid: meta.gid(),
        size_bytes: meta.size(),
        used_bytes: meta.blocks() * 512,
        rdev: (
            ((rdev >> 8) & 0xfff) as u32,
            ((rdev & 0xff) | ((rdev >> 12) & 0xfff00)) as u32,
        ),
        atime_ns: ns(meta.atime(), meta.atime_nsec()),
        mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
    }
}

fn io_error(path: &Path, source: std::io::Error) -> LoadError {
    LoadError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[derive(Debug, Default)]
struct Registry {
    clients: BTreeMap<Ipv4Addr, ClientId>,
    views: BTreeMap<ClientId, Arc<Tree>>,
}

/// The in-memory store: a client registry and one tree per client. Clones
/// share state, so a test (or the simulator) can publish an image update
/// while a server holding another clone is serving; every call works on a
/// snapshot of the view it started with.
#[derive(Clone, Debug, Default)]
pub struct MemFs {
    registry: Arc<RwLock<Registry>>,
}

impl MemFs {
    pub fn new() -> MemFs {
        MemFs::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a client address with its view.
    pub fn add_client(&mut self, addr: Ipv4Addr, client: ClientId, tree: Arc<Tree>) {
        let mut registry = self.registry.write().unwrap_or_else(|e| e.into_inner());
        registry.clients.insert(addr, client);
        registry.views.insert(client, tree);
    }

    /// Change a client's tree (an image update); false if it has none.
    pub fn update_tree(&self, client: ClientId, update: impl FnOnce(&mut Tree)) -> bool {
        let mut registry = self.registry.write().unwrap_or_else(|e| e.into_inner());
        match registry.views.get_mut(&client) {
            Some(tree) => {
                update(Arc::make_mut(tree));
                true
            }
            None => false,
        }
    }

    fn view(&self, client: ClientId) -> Result<Arc<Tree>, FsError> {
        self.read()
            .views
            .get(&client)
            .cloned()
            .ok_or(FsError::NoView(client))
    }
}

impl Filesystem for MemFs {
    fn client_by_addr(&self, addr: Ipv4Addr) -> Option<ClientId> {
        self.read().clients.get(&addr).copied()
    }

    fn root(&self, client: ClientId) -> Result<Node, FsError> {
        let tree = self.view(client)?;
        let node = tree.resolve(tree.root, None)?;
        Ok(tree.to_node(tree.root, node))
    }

    fn node(
        &self,
        client: ClientId,
        file_id: FileId,
        version: Option<u64>,
    ) -> Result<Node, FsError> {
        let tree = self.view(client)?;
        Ok(tree.to_node(file_id, tree.resolve(file_id, version)?))
    }

    fn lookup(&self, client: ClientId, dir: FileId, name: &[u8]) -> Result<Node, FsError> {
        let tree = self.view(client)?;
        let dir_node = tree.resolve(dir, None)?;
        let Content::Dir(entries) = &dir_node.content else {
            return Err(FsError::NotDirectory(dir));
        };
        let id = match name {
            b"." => dir,
            b".." => dir_node.parent,
            _ => {
                let at = entries
                    .binary_search_by(|(entry, _)| entry.as_slice().cmp(name))
                    .map_err(|_| FsError::NotFound)?;
                entries
                    .get(at)
                    .map(|(_, id)| *id)
                    .ok_or(FsError::NotFound)?
            }
        };
        let node = tree.nodes.get(&id).ok_or(FsError::NotFound)?;
        Ok(tree.to_node(id, node))
    }

    fn dir_page(
        &self,
        client: ClientId,
        dir: FileId,
        start: usize,
        count_max: usize,
    ) -> Result<DirPage, FsError> {
        let tree = self.view(client)?;
        let Content::Dir(entries) = &tree.resolve(dir, None)?.content else {
            return Err(FsError::NotDirectory(dir));
        };
        let slice = entries.get(start..).unwrap_or(&[]);
        let page: Vec<DirEntry> = slice
            .iter()
            .take(count_max)
            .filter_map(|(name, id)| {
                let node = tree.nodes.get(id)?;
                Some(DirEntry {
                    name: name.clone(),
                    node: tree.to_node(*id, node),
                })
            })
            .collect();
        Ok(DirPage {
            eof: slice.len() <= count_max,
            entries: page,
        })
    }

    fn read(
        &self,
        client: ClientId,
        file_id: FileId,
        version: Option<u64>,
        offset: u64,
        len: usize,
    ) -> Result<Bytes, FsError> {
        let tree = self.view(client)?;
        match &tree.resolve(file_id, version)?.content {
            Content::File(data) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let end = start.saturating_add(len).min(data.len());
                Ok(data.slice(start..end))
            }
            Content::Dir(_) => Err(FsError::IsDirectory(file_id)),
            _ => Err(FsError::Io(file_id)),
        }
    }

    fn readlink(&self, client: ClientId, file_id: FileId) -> Result<Vec<u8>, FsError> {
        let tree = self.view(client)?;
        match &tree.resolve(file_id, None)?.content {
            Content::Symlink(target) => Ok(target.clone()),
            _ => Err(FsError::NotSymlink(file_id)),
        }
    }

    fn stats(&self, client: ClientId) -> FsStats {
        let Ok(tree) = self.view(client) else {
            return FsStats::default();
        };
        let total_bytes = tree.nodes.values().map(|node| node.attrs.size_bytes).sum();
        FsStats {
            total_bytes,
            total_files: tree.nodes.len() as u64,
        }
    }
}
