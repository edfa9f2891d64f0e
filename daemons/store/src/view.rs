//! The read API the NFS, DHCP and TFTP servers use: the client registry,
//! each client's view (its image's current generation with its exception
//! tree layered on top) and file bytes by file id.

use std::collections::BTreeMap;

use crate::journal::Client;
use crate::model::{Node, NodeKind, ObjectId, ObjectKind};
use crate::objects::ObjectStore;
use crate::store::{Store, StoreError};

/// Most nodes [`View::index`] walks (bounds the cost of one view).
pub const VIEW_NODES_MAX: usize = 4_000_000;
/// Largest single read.
pub const READ_LEN_MAX: usize = 1 << 20;

/// A node as one client sees it. A directory present in both the image and
/// the exception tree is merged: it keeps the image's id and metadata and
/// lists both (the exception side wins on a name clash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewNode {
    pub node: Node,
    /// Directory listings to merge, image first.
    pub layers: Vec<ObjectId>,
}

/// One client's view of the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub mac: [u8; 6],
    pub generation: u64,
    pub root: ViewNode,
}

impl View {
    /// The entries of a directory node, merged over its layers.
    pub fn readdir(
        &self,
        objects: &ObjectStore,
        dir: &ViewNode,
    ) -> Result<BTreeMap<Vec<u8>, ViewNode>, StoreError> {
        let mut out: BTreeMap<Vec<u8>, ViewNode> = BTreeMap::new();
        for layer in &dir.layers {
            let tree = objects.get_tree(layer)?;
            for (name, node) in tree.entries {
                let child_layer = match &node.kind {
                    NodeKind::Dir { tree } => Some(*tree),
                    _ => None,
                };
                match (out.get_mut(&name), child_layer) {
                    (Some(existing), Some(layer))
                        if matches!(existing.node.kind, NodeKind::Dir { .. }) =>
                    {
                        existing.layers.push(layer);
                    }
                    _ => {
                        out.insert(
                            name,
                            ViewNode {
                                node,
                                layers: child_layer.into_iter().collect(),
                            },
                        );
                    }
                }
            }
        }
        Ok(out)
    }

    /// One name in a directory.
    pub fn lookup(
        &self,
        objects: &ObjectStore,
        dir: &ViewNode,
        name: &[u8],
    ) -> Result<Option<ViewNode>, StoreError> {
        Ok(self.readdir(objects, dir)?.remove(name))
    }

    /// Every node of the view by file id (for resolving file handles; the
    /// caller caches it per generation).
    pub fn index(&self, objects: &ObjectStore) -> Result<BTreeMap<u64, ViewNode>, StoreError> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            for child in self.readdir(objects, &dir)?.into_values() {
                if out.len() >= VIEW_NODES_MAX {
                    return Ok(out);
                }
                if matches!(child.node.kind, NodeKind::Dir { .. }) {
                    stack.push(child.clone());
                }
                out.entry(child.node.file_id).or_insert(child);
            }
            out.entry(dir.node.file_id).or_insert(dir);
        }
        Ok(out)
    }
}

impl Store {
    pub fn client_by_mac(&self, mac: &[u8; 6]) -> Option<&Client> {
        self.state().client_by_mac(mac)
    }

    pub fn client_by_ipv4(&self, ipv4: [u8; 4]) -> Option<([u8; 6], &Client)> {
        self.state().client_by_ipv4(ipv4)
    }

    /// The view of the client `mac`.
    pub fn view(&self, mac: &[u8; 6]) -> Result<View, StoreError> {
        let client = self
            .client_by_mac(mac)
            .ok_or(StoreError::UnknownClient { mac: *mac })?;
        let generation =
            self.state()
                .current(&client.image)
                .ok_or_else(|| StoreError::UnknownImage {
                    image: client.image.clone(),
                })?;
        let mut layers: Vec<ObjectId> = generation.root.kind.object().into_iter().collect();
        if let Some(NodeKind::Dir { tree }) = client.exceptions.as_ref().map(|n| &n.kind) {
            layers.push(*tree);
        }
        Ok(View {
            mac: *mac,
            generation: generation.id,
            root: ViewNode {
                node: generation.root.clone(),
                layers,
            },
        })
    }

    /// The view of the client that has address `ipv4`.
    pub fn view_by_ipv4(&self, ipv4: [u8; 4]) -> Result<View, StoreError> {
        let (mac, _) = self
            .client_by_ipv4(ipv4)
            .ok_or(StoreError::UnknownAddress { ipv4 })?;
        self.view(&mac)
    }

    /// Up to `len` bytes of the regular file `file_id` from `offset`. A file
    /// id names one content, so this serves every version still retained;
    /// a collected one is [`StoreError::StaleFile`]. Bytes that fail their
    /// hash are an error, never returned.
    pub fn read_file(&self, file_id: u64, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let blob_id = self
            .file_blob(file_id)
            .ok_or(StoreError::StaleFile { file_id })?;
        let blob = self.objects().get_blob(&blob_id)?;
        let len = len.min(READ_LEN_MAX);
        let end = offset.saturating_add(len as u64).min(blob.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut chunk_start = 0u64;
        for chunk in &blob.chunks {
            let chunk_end = chunk_start + u64::from(chunk.len);
            if chunk_end > offset && chunk_start < end {
                let bytes = self.objects().get_kind(&chunk.id, ObjectKind::Chunk)?;
                let from = offset.saturating_sub(chunk_start) as usize;
                let to = (end - chunk_start).min(u64::from(chunk.len)) as usize;
                out.extend_from_slice(bytes.get(from..to).unwrap_or(&[]));
            }
            if chunk_end >= end {
                break;
            }
            chunk_start = chunk_end;
        }
        Ok(out)
    }
}
