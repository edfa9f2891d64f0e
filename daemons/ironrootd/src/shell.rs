//! `ironroot image shell`: a writable working copy of an image's active
//! generation, changed by the operator in a chroot, committed as a new
//! generation when the shell ends.
//!
//! The daemon does the store's part and the CLI the terminal's: `begin`
//! exports the generation into a working directory (under `store.dir/work`
//! or one the operator names) on the active node; the CLI, which runs on
//! that node because the admin socket is local, runs the shell chrooted
//! there with the operator's terminal; `end` imports the directory again
//! and commits it through the replication primary (so the peer holds it
//! before the operator is told), or discards it. A working copy whose
//! content did not change is discarded, not committed.
//!
//! Exporting cannot keep change times (the kernel sets them), and a shell
//! touches access times: both are carried over from the base generation
//! for every node whose content, mode, owner and mtime did not change, so
//! an untouched file is recorded exactly as before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ironroot_store::commit::unstage;
use ironroot_store::export::export_tree;
use ironroot_store::stage::{import_dir, Staged, StagedKind};
use ironroot_store::store::Store;
use serde_json::json;

use crate::admin::Response;

/// Working copies checked out at once on a node.
pub const CHECKOUTS_MAX: usize = 8;
/// Where working copies go by default, under the store directory.
pub const WORK_DIR: &str = "work";

/// One working copy handed to the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkout {
    pub image: String,
    pub generation: u64,
}

/// Working copies by directory; bounded by [`CHECKOUTS_MAX`].
#[derive(Default)]
pub struct Checkouts {
    inner: Mutex<BTreeMap<PathBuf, Checkout>>,
}

impl Checkouts {
    /// Reserve a slot; an error line if every slot is taken.
    pub fn insert(&self, dir: PathBuf, checkout: Checkout) -> Result<(), String> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CHECKOUTS_MAX && !map.contains_key(&dir) {
            return Err(format!(
                "{} working copies are open already (at most {CHECKOUTS_MAX}): end one first",
                map.len()
            ));
        }
        map.insert(dir, checkout);
        Ok(())
    }

    pub fn take(&self, dir: &Path) -> Option<Checkout> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(dir)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The directory a new working copy goes to: `requested` if given (absolute,
/// absent or empty), else a fresh one under `store_dir/work`.
pub fn work_dir(
    store_dir: &Path,
    image: &str,
    generation: u64,
    requested: Option<&str>,
) -> Result<PathBuf, String> {
    if let Some(requested) = requested {
        let path = PathBuf::from(requested);
        if !path.is_absolute() {
            return Err(format!("--workdir {requested}: give an absolute path"));
        }
        if path.exists() {
            let mut entries =
                std::fs::read_dir(&path).map_err(|e| format!("--workdir {requested}: {e}"))?;
            if entries.next().is_some() {
                return Err(format!("--workdir {requested}: not empty"));
            }
        }
        return Ok(path);
    }
    let parent = store_dir.join(WORK_DIR);
    std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let name: String = image
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{name}.{generation}."))
        .tempdir_in(&parent)
        .map_err(|e| format!("{}: {e}", parent.display()))?;
    Ok(dir.keep())
}

/// Give `staged` the access and change times of `base` wherever a node is
/// otherwise unchanged (see the module docs).
pub fn carry_times(staged: &mut Staged, base: &Staged) {
    if !same_node(staged, base) {
        return;
    }
    staged.meta.atime = base.meta.atime;
    staged.meta.ctime = base.meta.ctime;
    if let (StagedKind::Dir(entries), StagedKind::Dir(base_entries)) =
        (&mut staged.kind, &base.kind)
    {
        for (name, child) in entries.iter_mut() {
            if let Some(base_child) = base_entries.get(name) {
                carry_times(child, base_child);
            }
        }
    }
}

/// Same node, children aside: kind and content, mode, owner, mtime, link
/// count, xattrs.
fn same_node(a: &Staged, b: &Staged) -> bool {
    let (ma, mb) = (&a.meta, &b.meta);
    let kind = match (&a.kind, &b.kind) {
        (StagedKind::Dir(_), StagedKind::Dir(_)) => true,
        (x, y) => x == y,
    };
    kind && ma.mode == mb.mode
        && ma.uid == mb.uid
        && ma.gid == mb.gid
        && ma.mtime == mb.mtime
        && ma.nlink == mb.nlink
        && ma.xattrs == mb.xattrs
}

/// Whether two trees hold the same content and metadata (times included,
/// hard-link group numbers aside: they are local to each staging).
pub fn unchanged(a: &Staged, b: &Staged) -> bool {
    if !same_node(a, b) || a.meta.atime != b.meta.atime || a.meta.ctime != b.meta.ctime {
        return false;
    }
    match (&a.kind, &b.kind) {
        (StagedKind::Dir(x), StagedKind::Dir(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((nx, cx), (ny, cy))| nx == ny && unchanged(cx, cy))
        }
        _ => true,
    }
}

/// `begin`: export the active generation of `image` into a working
/// directory; answers `{workdir, generation}`.
pub async fn begin(
    node: &crate::node::NodeState,
    checkouts: &Checkouts,
    image: String,
    requested: Option<String>,
) -> Response {
    let store = std::sync::Arc::clone(&node.store);
    let store_dir = node.settings.store.dir.clone();
    let exported = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let store = store.lock().unwrap_or_else(|p| p.into_inner());
        let current = store
            .state()
            .current(&image)
            .cloned()
            .ok_or_else(|| format!("no image named {image}; import it first"))?;
        let dir = work_dir(&store_dir, &image, current.id, requested.as_deref())?;
        if let Err(error) = export_tree(store.objects(), &current.root, &dir) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(error.to_string());
        }
        Ok((dir, image, current.id))
    })
    .await;
    let (dir, image, generation) = match exported {
        Ok(Ok(done)) => done,
        Ok(Err(message)) => return Response::error(message),
        Err(error) => return Response::error(error.to_string()),
    };
    let checkout = Checkout {
        image: image.clone(),
        generation,
    };
    if let Err(message) = checkouts.insert(dir.clone(), checkout) {
        let _ = std::fs::remove_dir_all(&dir);
        return Response::error(message);
    }
    tracing::info!(image, generation, workdir = %dir.display(), "image shell: working copy");
    Response::ok(
        json!({ "image": image, "generation": generation, "workdir": dir.display().to_string() }),
    )
}

/// `end`: commit the working copy as a new generation (unless unchanged),
/// or discard it; the directory is removed either way, except when the
/// image moved on meanwhile (then it is left for the operator).
pub async fn end(
    node: &crate::node::NodeState,
    checkouts: &Checkouts,
    workdir: String,
    commit: bool,
    message: String,
) -> Response {
    let dir = PathBuf::from(&workdir);
    // Importing or removing a tree with /proc or /dev mounted inside would
    // walk into (or delete from) the live system.
    let mounted = mounts_under(&dir);
    if !mounted.is_empty() {
        return Response::error(format!(
            "unmount {} first: the working copy stays at {workdir}",
            mounted.join(", ")
        ));
    }
    let Some(checkout) = checkouts.take(&dir) else {
        return Response::error(format!(
            "{workdir}: not a working copy of this node (it may predate a restart):              import it with `ironroot image import NAME --from {workdir}`"
        ));
    };
    if !commit {
        return remove(&dir, json!({ "result": "discarded" }));
    }
    let store = std::sync::Arc::clone(&node.store);
    let staging_dir = dir.clone();
    let image = checkout.image.clone();
    let staged = tokio::task::spawn_blocking(move || -> Result<Option<Staged>, String> {
        let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
        let current = store
            .state()
            .current(&image)
            .cloned()
            .ok_or_else(|| format!("image {image} is gone"))?;
        if current.id != checkout.generation {
            return Err(format!(
                "{image} moved from generation {} to {} while the shell ran: the working copy                  stays at {}; commit it anyway with `ironroot image import {image} --from {}`",
                checkout.generation,
                current.id,
                staging_dir.display(),
                staging_dir.display()
            ));
        }
        let base = unstage(store.objects(), &current.root).map_err(|e| e.to_string())?;
        let mut staged =
            import_dir(store.objects_mut(), &staging_dir).map_err(|e| e.to_string())?;
        carry_times(&mut staged, &base);
        Ok((!unchanged(&staged, &base)).then_some(staged))
    })
    .await;
    let staged = match staged {
        Ok(Ok(staged)) => staged,
        Ok(Err(message)) => return Response::error(message),
        Err(error) => return Response::error(error.to_string()),
    };
    let Some(staged) = staged else {
        return remove(&dir, json!({ "result": "unchanged" }));
    };
    let Some(primary) = node.replication.primary() else {
        return Response::error(format!(
            "this node's store is not primary: the working copy stays at {workdir}"
        ));
    };
    let image = checkout.image;
    let written = primary
        .write(move |store: &mut Store| {
            store.commit_staged(&image, &staged, crate::handler::now_timestamp(), &message)
        })
        .await;
    match written {
        Ok(seq) => remove(&dir, json!({ "result": "committed", "generation": seq })),
        Err(error) => Response::error(format!("{error}: the working copy stays at {workdir}")),
    }
}

/// Mount points strictly below `dir`, from this process's mount table.
fn mounts_under(dir: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_points_under(&table, dir)
}

/// The mount points (field 5 of mountinfo) strictly below `dir`.
pub fn mount_points_under(mountinfo: &str, dir: &Path) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        // mountinfo escapes spaces and the like as octal (\040).
        .map(|point| point.replace("\\040", " "))
        .filter(|point| {
            Path::new(point)
                .strip_prefix(dir)
                .is_ok_and(|rest| !rest.as_os_str().is_empty())
        })
        .collect()
}

fn remove(dir: &Path, data: serde_json::Value) -> Response {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Response::ok(data),
        Err(error) => Response::error(format!(
            "{}: {error} (the change itself is done: {data})",
            dir.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironroot_store::model::{Meta, Timestamp};

    fn meta(mtime: i64, atime: i64) -> Meta {
        Meta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            atime: Timestamp {
                secs: atime,
                nanos: 0,
            },
            mtime: Timestamp {
                secs: mtime,
                nanos: 0,
            },
            ctime: Timestamp {
                secs: atime,
                nanos: 0,
            },
            nlink: 1,
            xattrs: BTreeMap::new(),
        }
    }

    fn dir(mtime: i64, atime: i64, children: Vec<(&str, Staged)>) -> Staged {
        Staged {
            kind: StagedKind::Dir(
                children
                    .into_iter()
                    .map(|(n, s)| (n.as_bytes().to_vec(), s))
                    .collect(),
            ),
            meta: meta(mtime, atime),
            link_group: None,
        }
    }

    fn link(target: &str, mtime: i64, atime: i64) -> Staged {
        Staged {
            kind: StagedKind::Symlink(target.as_bytes().to_vec()),
            meta: meta(mtime, atime),
            link_group: Some(7),
        }
    }

    #[test]
    fn a_tree_only_read_is_unchanged_once_times_are_carried() {
        let base = dir(1, 1, vec![("sh", link("busybox", 1, 1))]);
        let mut copy = dir(1, 50, vec![("sh", link("busybox", 1, 60))]);
        copy.kind = match copy.kind {
            StagedKind::Dir(mut entries) => {
                entries.get_mut(&b"sh"[..]).expect("sh").link_group = Some(99);
                StagedKind::Dir(entries)
            }
            other => other,
        };
        assert!(!unchanged(&copy, &base), "access and change times differ");
        carry_times(&mut copy, &base);
        assert!(unchanged(&copy, &base));
    }

    #[test]
    fn a_changed_node_keeps_its_new_times_and_counts_as_a_change() {
        let base = dir(1, 1, vec![("a", link("x", 1, 1)), ("b", link("y", 1, 1))]);
        let mut copy = dir(1, 5, vec![("a", link("x", 1, 5)), ("b", link("z", 9, 9))]);
        carry_times(&mut copy, &base);
        assert!(!unchanged(&copy, &base));
        let StagedKind::Dir(entries) = &copy.kind else {
            panic!("a directory")
        };
        assert_eq!(entries[&b"a"[..]].meta.ctime.secs, 1, "untouched: carried");
        assert_eq!(entries[&b"b"[..]].meta.ctime.secs, 9, "changed: its own");
        let added = dir(1, 1, vec![("a", link("x", 1, 1))]);
        assert!(!unchanged(&added, &base), "a removed entry is a change");
    }

    #[test]
    fn mounts_inside_a_working_copy_are_found() {
        let table = "22 1 0:21 / /proc rw - proc proc rw\n\
                     90 40 0:5 / /srv/work/img.3.x/proc rw - proc proc rw\n\
                     91 40 0:6 / /srv/work/img.3.x/dev rw - devtmpfs udev rw\n\
                     92 40 0:7 / /srv/work/img.3.xy rw - tmpfs t rw\n";
        assert_eq!(
            mount_points_under(table, Path::new("/srv/work/img.3.x")),
            ["/srv/work/img.3.x/proc", "/srv/work/img.3.x/dev"]
        );
    }

    #[test]
    fn checkouts_are_bounded_and_work_dirs_checked() {
        let checkouts = Checkouts::default();
        for i in 0..CHECKOUTS_MAX {
            let checkout = Checkout {
                image: "img".into(),
                generation: 1,
            };
            checkouts
                .insert(PathBuf::from(format!("/w/{i}")), checkout)
                .expect("room");
        }
        let error = checkouts
            .insert(
                PathBuf::from("/w/extra"),
                Checkout {
                    image: "img".into(),
                    generation: 1,
                },
            )
            .expect_err("full");
        assert!(error.contains("at most 8"), "{error}");
        assert!(checkouts.take(Path::new("/w/0")).is_some());
        assert_eq!(checkouts.len(), CHECKOUTS_MAX - 1);

        let store = tempfile::tempdir().expect("tempdir");
        let made = work_dir(store.path(), "deb/ian", 4, None).expect("work dir");
        assert!(made.starts_with(store.path().join(WORK_DIR)), "{made:?}");
        assert!(made
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("deb_ian.4.")));
        assert!(work_dir(store.path(), "img", 1, Some("relative")).is_err());
        std::fs::write(made.join("x"), "x").expect("write");
        let busy = made.display().to_string();
        let error = work_dir(store.path(), "img", 1, Some(&busy)).expect_err("not empty");
        assert!(error.ends_with("not empty"), "{error}");
    }
}
