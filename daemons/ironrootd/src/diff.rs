//! `ironroot image diff NAME A B`: what changed between two generations,
//! path by path.

use std::collections::BTreeMap;

use ironroot_store::model::{Node, NodeKind};
use ironroot_store::store::Store;

/// Paths listed at most; the count says how many more there were.
pub const DIFF_PATHS_MAX: usize = 10_000;
/// Nodes walked per tree at most.
const WALK_NODES_MAX: usize = 4_000_000;

/// One difference.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// `added`, `removed`, `content` (a file's bytes or a link's target) or
    /// `metadata` (mode, owner, type).
    pub change: &'static str,
    pub path: String,
}

/// Why a diff could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("generation {0} of image {1} does not exist")]
    NoGeneration(u64, String),
    #[error("reading the trees: {0}")]
    Store(String),
}

fn walk(store: &Store, root: &Node) -> Result<BTreeMap<String, Node>, DiffError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), root.clone())];
    while let Some((path, node)) = stack.pop() {
        if let NodeKind::Dir { tree } = &node.kind {
            let tree = store
                .objects()
                .get_tree(tree)
                .map_err(|e| DiffError::Store(e.to_string()))?;
            for (name, child) in tree.entries {
                let child_path = format!("{path}/{}", String::from_utf8_lossy(&name));
                stack.push((child_path, child));
            }
        }
        out.insert(
            if path.is_empty() {
                "/".to_owned()
            } else {
                path
            },
            node,
        );
        if out.len() >= WALK_NODES_MAX {
            break;
        }
    }
    Ok(out)
}

fn content_changed(a: &Node, b: &Node) -> bool {
    match (&a.kind, &b.kind) {
        (NodeKind::File { blob: x, .. }, NodeKind::File { blob: y, .. }) => x != y,
        (NodeKind::Symlink { target: x }, NodeKind::Symlink { target: y }) => x != y,
        (NodeKind::Dir { .. }, NodeKind::Dir { .. }) => false,
        (x, y) => std::mem::discriminant(x) != std::mem::discriminant(y),
    }
}

/// Differences from generation `from` to `to` of `image`, and how many were
/// left out past [`DIFF_PATHS_MAX`].
pub fn diff(
    store: &Store,
    image: &str,
    from: u64,
    to: u64,
) -> Result<(Vec<Change>, usize), DiffError> {
    let root = |id: u64| {
        store
            .state()
            .generations
            .get(&id)
            .filter(|g| g.image == image)
            .map(|g| g.root.clone())
            .ok_or_else(|| DiffError::NoGeneration(id, image.to_owned()))
    };
    let (old, new) = (walk(store, &root(from)?)?, walk(store, &root(to)?)?);
    let mut changes = Vec::new();
    let mut left_out = 0;
    let mut push = |change: &'static str, path: &str| {
        if changes.len() < DIFF_PATHS_MAX {
            changes.push(Change {
                change,
                path: path.to_owned(),
            });
        } else {
            left_out += 1;
        }
    };
    for (path, node) in &new {
        match old.get(path) {
            None => push("added", path),
            Some(before) if content_changed(before, node) => push("content", path),
            Some(before)
                if (before.meta.mode, before.meta.uid, before.meta.gid)
                    != (node.meta.mode, node.meta.uid, node.meta.gid) =>
            {
                push("metadata", path)
            }
            Some(_) => {}
        }
    }
    for path in old.keys().filter(|p| !new.contains_key(*p)) {
        push("removed", path);
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((changes, left_out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironroot_store::model::Timestamp;
    use ironroot_store::storage::MemStorage;

    #[test]
    fn lists_added_removed_and_changed_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::write(root.join("etc/motd"), "one").expect("write");
        std::fs::write(root.join("etc/gone"), "x").expect("write");
        let (mut store, _) = Store::open(std::sync::Arc::new(MemStorage::new())).expect("open");
        store.promote(1, 0);
        let first = store
            .import_dir("img", root, Timestamp::default(), "1")
            .expect("import")
            .seq;
        std::fs::write(root.join("etc/motd"), "two").expect("write");
        std::fs::remove_file(root.join("etc/gone")).expect("rm");
        std::fs::write(root.join("etc/new"), "n").expect("write");
        let second = store
            .import_dir("img", root, Timestamp::default(), "2")
            .expect("import")
            .seq;
        let (changes, left_out) = diff(&store, "img", first, second).expect("diff");
        let listed: Vec<(&str, &str)> = changes
            .iter()
            .map(|c| (c.change, c.path.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                ("removed", "/etc/gone"),
                ("content", "/etc/motd"),
                ("added", "/etc/new")
            ]
        );
        assert_eq!(left_out, 0);
        assert!(diff(&store, "img", first, 999).is_err());
    }
}
