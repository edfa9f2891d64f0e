//! The NFS server's view of the replicated store: each client's image
//! generation with its exception tree on top, indexed by file id.
//!
//! Indexes are built per (generation, exception tree) — clients that share
//! an image and have no exceptions share one index — and cached, bounded.
//! A file id names one content, so a handle to a file whose content was
//! replaced keeps reading the old bytes for as long as the store retains
//! them (then NFS3ERR_STALE).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ironroot_nfs::fs::{
    Attrs, ClientId, DirEntry, DirPage, FileId, Filesystem, FsError, FsStats, Node, NodeKind,
};
use ironroot_store::model::{self, NodeKind as StoreKind, ObjectId, Timestamp};
use ironroot_store::store::Store;
use ironroot_store::view::{View, ViewNode};

/// Cached view indexes at most.
pub const INDEXES_MAX: usize = 64;

/// The store shared by the services, replication and the admin API.
pub type SharedStore = ironroot_store::replication::driver::SharedStore;

/// Client id in file handles: the first four bytes of BLAKE3(MAC), the same
/// on both nodes and across restarts.
pub fn client_id(mac: &[u8; 6]) -> ClientId {
    let hash = blake3::hash(mac);
    let bytes = hash.as_bytes();
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

struct Index {
    nodes: BTreeMap<FileId, (ViewNode, FileId)>,
    children: BTreeMap<FileId, Vec<(Vec<u8>, FileId)>>,
    root: FileId,
    total_bytes: u64,
}

type IndexKey = (u64, Vec<ObjectId>);

/// [`Filesystem`] over the store.
pub struct StoreFs {
    store: SharedStore,
    indexes: Mutex<BTreeMap<IndexKey, Arc<Index>>>,
}

impl StoreFs {
    pub fn new(store: SharedStore) -> StoreFs {
        StoreFs {
            store,
            indexes: Mutex::new(BTreeMap::new()),
        }
    }

    fn read_store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mac_of(&self, client: ClientId) -> Option<[u8; 6]> {
        let store = self.read_store();
        store
            .state()
            .clients
            .keys()
            .find(|mac| client_id(mac) == client)
            .copied()
    }

    fn index(&self, client: ClientId) -> Result<Arc<Index>, FsError> {
        let mac = self.mac_of(client).ok_or(FsError::NoView(client))?;
        let store = self.read_store();
        let view = store.view(&mac).map_err(|_| FsError::NoView(client))?;
        let key = (view.generation, view.root.layers.clone());
        let mut indexes = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = indexes.get(&key) {
            return Ok(Arc::clone(index));
        }
        let index =
            Arc::new(build_index(&store, &view).map_err(|_| FsError::Io(view.root.node.file_id))?);
        if indexes.len() >= INDEXES_MAX {
            indexes.pop_first();
        }
        indexes.insert(key, Arc::clone(&index));
        Ok(index)
    }
}

fn build_index(store: &Store, view: &View) -> Result<Index, ironroot_store::store::StoreError> {
    let root = view.root.node.file_id;
    let mut nodes = BTreeMap::new();
    let mut children = BTreeMap::new();
    let mut total_bytes = 0u64;
    nodes.insert(root, (view.root.clone(), root));
    let mut stack = vec![view.root.clone()];
    while let Some(dir) = stack.pop() {
        let mut listing = Vec::new();
        for (name, child) in view.readdir(store.objects(), &dir)? {
            let id = child.node.file_id;
            total_bytes = total_bytes.saturating_add(child.node.kind.size());
            listing.push((name, id));
            if matches!(child.node.kind, StoreKind::Dir { .. }) && !nodes.contains_key(&id) {
                stack.push(child.clone());
            }
            nodes.entry(id).or_insert((child, dir.node.file_id));
        }
        children.insert(dir.node.file_id, listing);
        if nodes.len() >= ironroot_store::view::VIEW_NODES_MAX {
            break;
        }
    }
    Ok(Index {
        nodes,
        children,
        root,
        total_bytes,
    })
}

fn nanos(t: Timestamp) -> u64 {
    u64::try_from(t.secs)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(t.nanos))
}

fn to_node(node: &model::Node) -> Node {
    let (kind, rdev) = match &node.kind {
        StoreKind::File { .. } => (NodeKind::Regular, (0, 0)),
        StoreKind::Dir { .. } => (NodeKind::Directory, (0, 0)),
        StoreKind::Symlink { .. } => (NodeKind::Symlink, (0, 0)),
        StoreKind::CharDevice { major, minor } => (NodeKind::CharDevice, (*major, *minor)),
        StoreKind::BlockDevice { major, minor } => (NodeKind::BlockDevice, (*major, *minor)),
        StoreKind::Fifo => (NodeKind::Fifo, (0, 0)),
        StoreKind::Socket => (NodeKind::Socket, (0, 0)),
    };
    let size = node.kind.size();
    Node {
        file_id: node.file_id,
        version: (kind == NodeKind::Regular).then_some(node.file_id),
        attrs: Attrs {
            kind,
            mode: node.meta.mode & 0o7777,
            nlink: node.meta.nlink.max(1),
            uid: node.meta.uid,
            gid: node.meta.gid,
            size_bytes: size,
            used_bytes: size.div_ceil(4096) * 4096,
            rdev,
            atime_ns: nanos(node.meta.atime),
            mtime_ns: nanos(node.meta.mtime),
            ctime_ns: nanos(node.meta.ctime),
        },
    }
}

impl Filesystem for StoreFs {
    fn client_by_addr(&self, addr: Ipv4Addr) -> Option<ClientId> {
        self.read_store()
            .client_by_ipv4(addr.octets())
            .map(|(mac, _)| client_id(&mac))
    }

    fn root(&self, client: ClientId) -> Result<Node, FsError> {
        let index = self.index(client)?;
        let (root, _) = index
            .nodes
            .get(&index.root)
            .ok_or(FsError::NoView(client))?;
        Ok(to_node(&root.node))
    }

    fn node(
        &self,
        client: ClientId,
        file_id: FileId,
        version: Option<u64>,
    ) -> Result<Node, FsError> {
        let index = self.index(client)?;
        if let Some((node, _)) = index.nodes.get(&file_id) {
            return Ok(to_node(&node.node));
        }
        // A replaced file is no longer in the current view; its handle still
        // reads the retained content (see the module docs).
        let store = self.read_store();
        match (version, store.file_blob(file_id)) {
            (Some(_), Some(blob)) => {
                let size = store
                    .objects()
                    .get_blob(&blob)
                    .map(|b| b.size)
                    .map_err(|_| FsError::Io(file_id))?;
                let node = model::Node {
                    file_id,
                    kind: StoreKind::File { blob, size },
                    meta: model::Meta {
                        mode: 0o555,
                        nlink: 1,
                        ..model::Meta::default()
                    },
                };
                Ok(to_node(&node))
            }
            _ => Err(FsError::Stale { file_id, version }),
        }
    }

    fn lookup(&self, client: ClientId, dir: FileId, name: &[u8]) -> Result<Node, FsError> {
        let index = self.index(client)?;
        let (dir_node, parent) = index.nodes.get(&dir).ok_or(FsError::Stale {
            file_id: dir,
            version: None,
        })?;
        if !matches!(dir_node.node.kind, StoreKind::Dir { .. }) {
            return Err(FsError::NotDirectory(dir));
        }
        let target = match name {
            b"." => dir,
            b".." => *parent,
            _ => {
                let listing = index.children.get(&dir).ok_or(FsError::NotFound)?;
                let at = listing
                    .binary_search_by(|(n, _)| n.as_slice().cmp(name))
                    .map_err(|_| FsError::NotFound)?;
                listing[at].1
            }
        };
        let (node, _) = index.nodes.get(&target).ok_or(FsError::NotFound)?;
        Ok(to_node(&node.node))
    }

    fn dir_page(
        &self,
        client: ClientId,
        dir: FileId,
        start: usize,
        count_max: usize,
    ) -> Result<DirPage, FsError> {
        let index = self.index(client)?;
        let (dir_node, _) = index.nodes.get(&dir).ok_or(FsError::Stale {
            file_id: dir,
            version: None,
        })?;
        if !matches!(dir_node.node.kind, StoreKind::Dir { .. }) {
            return Err(FsError::NotDirectory(dir));
        }
        let listing = index
            .children
            .get(&dir)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let page = listing.iter().skip(start).take(count_max);
        let entries = page
            .filter_map(|(name, id)| {
                index.nodes.get(id).map(|(n, _)| DirEntry {
                    name: name.clone(),
                    node: to_node(&n.node),
                })
            })
            .collect::<Vec<_>>();
        Ok(DirPage {
            eof: start.saturating_add(count_max) >= listing.len(),
            entries,
        })
    }

    fn read(
        &self,
        client: ClientId,
        file_id: FileId,
        _version: Option<u64>,
        offset: u64,
        len: usize,
    ) -> Result<Bytes, FsError> {
        let _ = self.mac_of(client).ok_or(FsError::NoView(client))?;
        let store = self.read_store();
        match store.read_file(file_id, offset, len) {
            Ok(bytes) => Ok(Bytes::from(bytes)),
            Err(ironroot_store::store::StoreError::StaleFile { .. }) => Err(FsError::Stale {
                file_id,
                version: Some(file_id),
            }),
            Err(_) => Err(FsError::Io(file_id)),
        }
    }

    fn readlink(&self, client: ClientId, file_id: FileId) -> Result<Vec<u8>, FsError> {
        let index = self.index(client)?;
        match index.nodes.get(&file_id).map(|(n, _)| &n.node.kind) {
            Some(StoreKind::Symlink { target }) => Ok(target.clone()),
            Some(_) => Err(FsError::NotSymlink(file_id)),
            None => Err(FsError::Stale {
                file_id,
                version: None,
            }),
        }
    }

    fn stats(&self, client: ClientId) -> FsStats {
        self.index(client)
            .map(|index| FsStats {
                total_bytes: index.total_bytes,
                total_files: index.nodes.len() as u64,
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironroot_store::storage::MemStorage;

    fn write(root: &std::path::Path, path: &str, text: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(&full, text).expect("write");
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// An image with two clients, one of which overrides /etc/hostname.
    fn fixture() -> (StoreFs, ClientId, ClientId) {
        let image = tempfile::tempdir().expect("tempdir");
        write(image.path(), "etc/hostname", "image\n", 0o644);
        write(image.path(), "bin/tool", "#!/bin/sh\necho tool\n", 0o755);
        for i in 0..300 {
            write(image.path(), &format!("many/f{i:03}"), "x", 0o644);
        }
        std::os::unix::fs::symlink("../bin/tool", image.path().join("etc/link")).expect("symlink");
        let exceptions = tempfile::tempdir().expect("tempdir");
        write(exceptions.path(), "etc/hostname", "web1\n", 0o644);

        let (mut store, _) = Store::open(Arc::new(MemStorage::new())).expect("open");
        store.promote(1, 0);
        store
            .import_dir("debian", image.path(), Timestamp::default(), "first")
            .expect("import");
        let staged = ironroot_store::stage::import_dir(store.objects_mut(), exceptions.path())
            .expect("stage");
        let (mac1, mac2) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        store
            .upsert_client(mac1, "web1", [10, 0, 0, 21], "debian", Some(&staged))
            .expect("client");
        store
            .upsert_client(mac2, "web2", [10, 0, 0, 22], "debian", None)
            .expect("client");
        (
            StoreFs::new(Arc::new(Mutex::new(store))),
            client_id(&mac1),
            client_id(&mac2),
        )
    }

    fn read_path(fs: &StoreFs, client: ClientId, path: &[&str]) -> Vec<u8> {
        let mut node = fs.root(client).expect("root");
        for name in path {
            node = fs
                .lookup(client, node.file_id, name.as_bytes())
                .expect("lookup");
        }
        fs.read(client, node.file_id, node.version, 0, 4096)
            .expect("read")
            .to_vec()
    }

    #[test]
    fn each_client_sees_its_own_exceptions_over_the_image() {
        let (fs, web1, web2) = fixture();
        assert_eq!(fs.client_by_addr(Ipv4Addr::new(10, 0, 0, 21)), Some(web1));
        assert_eq!(fs.client_by_addr(Ipv4Addr::new(10, 0, 0, 23)), None);
        assert_eq!(read_path(&fs, web1, &["etc", "hostname"]), b"web1\n");
        assert_eq!(read_path(&fs, web2, &["etc", "hostname"]), b"image\n");
        assert_eq!(
            read_path(&fs, web2, &["bin", "tool"]),
            b"#!/bin/sh\necho tool\n"
        );
        let root = fs.root(web1).expect("root");
        let bin = fs.lookup(web1, root.file_id, b"bin").expect("bin");
        assert_eq!(
            fs.lookup(web1, bin.file_id, b"..").expect("..").file_id,
            root.file_id
        );
        let tool = fs.lookup(web1, bin.file_id, b"tool").expect("tool");
        assert_eq!(tool.attrs.mode, 0o755);
        assert!(tool.attrs.nlink >= 1);
        let etc = fs.lookup(web1, root.file_id, b"etc").expect("etc");
        let link = fs.lookup(web1, etc.file_id, b"link").expect("link");
        assert_eq!(
            fs.readlink(web1, link.file_id).expect("readlink"),
            b"../bin/tool"
        );
    }

    #[test]
    fn listings_paginate_without_gaps_or_repeats() {
        let (fs, web1, _) = fixture();
        let root = fs.root(web1).expect("root");
        let many = fs.lookup(web1, root.file_id, b"many").expect("many");
        let mut names = Vec::new();
        let mut start = 0;
        loop {
            let page = fs.dir_page(web1, many.file_id, start, 64).expect("page");
            start += page.entries.len();
            names.extend(page.entries.into_iter().map(|e| e.name));
            if page.eof {
                break;
            }
        }
        let expected: Vec<Vec<u8>> = (0..300).map(|i| format!("f{i:03}").into_bytes()).collect();
        assert_eq!(names, expected);
        assert!(matches!(
            fs.lookup(web1, root.file_id, b"nope"),
            Err(FsError::NotFound)
        ));
    }
}
