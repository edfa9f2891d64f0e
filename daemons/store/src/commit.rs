//! Turning a [`Staged`] tree into stored tree objects with file ids. Runs on
//! the primary only: the ids it assigns travel in the tree objects a journal
//! entry references (and the allocator's high-water mark in the entry), so a
//! secondary never allocates an id and both nodes serve identical ones.
//!
//! Rules, matched by path against the previous tree of the same image:
//! a directory keeps its id; a regular file keeps its id only if its content
//! is unchanged; any other node keeps its id if it is unchanged; hard links
//! share one id. A directory whose listing (names or child ids) changed gets
//! `mtime`/`ctime` of at least the previous value + 1 ns, so the times only
//! move forward, on rollback too (a rollback commits the old tree anew).

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{encode, Node, NodeKind, ObjectKind, Tree};
use crate::objects::{ObjectError, ObjectStore};
use crate::stage::{Staged, StagedKind};

/// File ids are handed out from here; the value after a commit is recorded
/// in the journal entry so a promoted secondary continues from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdAllocator {
    pub next: u64,
}

impl IdAllocator {
    /// File id 0 is never used (NFS clients treat it specially).
    pub const FIRST: u64 = 1;

    fn take(&mut self) -> u64 {
        let id = self.next;
        self.next = self.next.checked_add(1).expect("file ids exhausted");
        id
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("the root of a commit must be a directory")]
    RootNotDir,
}

struct Committer<'a> {
    objects: &'a mut ObjectStore,
    ids: &'a mut IdAllocator,
    /// Link group -> file id given to its first member.
    groups: BTreeMap<u64, u64>,
    /// Ids of non-directories given out in this commit: two separate
    /// inodes that inherit one previous id must not share it.
    used: BTreeSet<u64>,
}

/// Store `staged` as tree objects against `prev` (the image's previous
/// root node, if any) and return the new root node.
pub fn commit(
    objects: &mut ObjectStore,
    ids: &mut IdAllocator,
    staged: &Staged,
    prev: Option<&Node>,
) -> Result<Node, CommitError> {
    if !matches!(staged.kind, StagedKind::Dir(_)) {
        return Err(CommitError::RootNotDir);
    }
    let mut committer = Committer {
        objects,
        ids,
        groups: BTreeMap::new(),
        used: BTreeSet::new(),
    };
    committer.node(staged, prev)
}

impl Committer<'_> {
    fn node(&mut self, staged: &Staged, prev: Option<&Node>) -> Result<Node, CommitError> {
        if let StagedKind::Dir(entries) = &staged.kind {
            return self.dir(staged, entries, prev);
        }
        let kind = match &staged.kind {
            StagedKind::File { blob, size } => NodeKind::File {
                blob: *blob,
                size: *size,
            },
            StagedKind::Dir(_) => unreachable!("handled above"),
            StagedKind::Symlink(target) => NodeKind::Symlink {
                target: target.clone(),
            },
            StagedKind::CharDevice { major, minor } => NodeKind::CharDevice {
                major: *major,
                minor: *minor,
            },
            StagedKind::BlockDevice { major, minor } => NodeKind::BlockDevice {
                major: *major,
                minor: *minor,
            },
            StagedKind::Fifo => NodeKind::Fifo,
            StagedKind::Socket => NodeKind::Socket,
        };
        let grouped = staged.link_group.and_then(|g| self.groups.get(&g).copied());
        let file_id = match (grouped, prev) {
            (Some(id), _) => id,
            (None, Some(prev)) if prev.kind == kind && !self.used.contains(&prev.file_id) => {
                prev.file_id
            }
            _ => self.ids.take(),
        };
        self.used.insert(file_id);
        if let Some(group) = staged.link_group {
            self.groups.entry(group).or_insert(file_id);
        }
        Ok(Node {
            file_id,
            kind,
            meta: staged.meta.clone(),
        })
    }

    fn dir(
        &mut self,
        staged: &Staged,
        entries: &BTreeMap<Vec<u8>, Staged>,
        prev: Option<&Node>,
    ) -> Result<Node, CommitError> {
        let prev_tree = match prev.map(|p| &p.kind) {
            Some(NodeKind::Dir { tree }) => Some(self.objects.get_tree(tree)?),
            _ => None,
        };
        let prev_dir = prev.filter(|p| matches!(p.kind, NodeKind::Dir { .. }));
        let file_id = match prev_dir {
            Some(p) => p.file_id,
            None => self.ids.take(),
        };
        let mut tree = Tree::default();
        for (name, child) in entries {
            let prev_child = prev_tree.as_ref().and_then(|t| t.entries.get(name));
            let node = self.node(child, prev_child)?;
            tree.entries.insert(name.clone(), node);
        }
        let mut meta = staged.meta.clone();
        if let (Some(prev_node), Some(prev_tree)) = (prev_dir, &prev_tree) {
            if listing(prev_tree) != listing(&tree) {
                meta.mtime = meta.mtime.max(prev_node.meta.mtime.next_ns());
                meta.ctime = meta.ctime.max(prev_node.meta.ctime.next_ns());
            }
        }
        let (id, _) = self.objects.put(ObjectKind::Tree, &encode(&tree))?;
        Ok(Node {
            file_id,
            kind: NodeKind::Dir { tree: id },
            meta,
        })
    }
}

fn listing(tree: &Tree) -> Vec<(&[u8], u64)> {
    tree.entries
        .iter()
        .map(|(name, node)| (name.as_slice(), node.file_id))
        .collect()
}

/// Turn a stored tree back into a staged one (for re-committing an old
/// generation on rollback, or layering trees).
pub fn unstage(objects: &ObjectStore, node: &Node) -> Result<Staged, ObjectError> {
    let kind = match &node.kind {
        NodeKind::Dir { tree } => {
            let tree = objects.get_tree(tree)?;
            let mut entries = BTreeMap::new();
            for (name, child) in &tree.entries {
                entries.insert(name.clone(), unstage(objects, child)?);
            }
            StagedKind::Dir(entries)
        }
        NodeKind::File { blob, size } => StagedKind::File {
            blob: *blob,
            size: *size,
        },
        NodeKind::Symlink { target } => StagedKind::Symlink(target.clone()),
        NodeKind::CharDevice { major, minor } => StagedKind::CharDevice {
            major: *major,
            minor: *minor,
        },
        NodeKind::BlockDevice { major, minor } => StagedKind::BlockDevice {
            major: *major,
            minor: *minor,
        },
        NodeKind::Fifo => StagedKind::Fifo,
        NodeKind::Socket => StagedKind::Socket,
    };
    // Hard links of a stored tree are exactly the non-directory nodes that
    // share a file id, so the id doubles as the link group.
    let link_group =
        (node.meta.nlink > 1 && !matches!(node.kind, NodeKind::Dir { .. })).then_some(node.file_id);
    Ok(Staged {
        kind,
        meta: node.meta.clone(),
        link_group,
    })
}
