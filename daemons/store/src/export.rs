//! Writing a stored tree back to a real directory with every attribute:
//! owner (then mode, since chown clears setuid), xattrs, device numbers,
//! hard links, and times including those of symlinks (AT_SYMLINK_NOFOLLOW).
//! Directory times are set after their children exist.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::model::{Meta, Node, NodeKind, Timestamp};
use crate::objects::{ObjectError, ObjectStore};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("{path}: name contains '/' or is '.' or '..'")]
    BadName { path: PathBuf },
}

/// Write the tree of `root` (a directory node) into `dest`, which is
/// created if missing and gets the root's metadata.
pub fn export_tree(objects: &ObjectStore, root: &Node, dest: &Path) -> Result<(), ExportError> {
    let mut exporter = Exporter {
        objects,
        linked: BTreeMap::new(),
    };
    if !dest.exists() {
        std::fs::create_dir_all(dest).map_err(|source| io(dest, source))?;
    }
    exporter.dir_contents(root, dest)?;
    apply_meta(dest, &root.meta, false)
}

struct Exporter<'a> {
    objects: &'a ObjectStore,
    /// File id of a multiply-linked node -> the path it was first written to.
    linked: BTreeMap<u64, PathBuf>,
}

fn io(path: &Path, source: std::io::Error) -> ExportError {
    ExportError::Io {
        path: path.to_owned(),
        source,
    }
}

fn cpath(path: &Path) -> Result<CString, ExportError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io(path, std::io::Error::from(std::io::ErrorKind::InvalidInput)))
}

fn check_errno(path: &Path, rc: libc::c_int) -> Result<(), ExportError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io(path, std::io::Error::last_os_error()))
    }
}

impl Exporter<'_> {
    fn dir_contents(&mut self, node: &Node, path: &Path) -> Result<(), ExportError> {
        let NodeKind::Dir { tree } = &node.kind else {
            unreachable!("dir_contents on a directory only");
        };
        let tree = self.objects.get_tree(tree)?;
        for (name, child) in &tree.entries {
            if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
                return Err(ExportError::BadName {
                    path: path.join(OsStr::from_bytes(name)),
                });
            }
            let child_path = path.join(OsStr::from_bytes(name));
            self.node(child, &child_path)?;
        }
        Ok(())
    }

    fn node(&mut self, node: &Node, path: &Path) -> Result<(), ExportError> {
        let multiply_linked = node.meta.nlink > 1 && !matches!(node.kind, NodeKind::Dir { .. });
        if multiply_linked {
            if let Some(first) = self.linked.get(&node.file_id) {
                return std::fs::hard_link(first, path).map_err(|source| io(path, source));
            }
            self.linked.insert(node.file_id, path.to_owned());
        }
        let c = cpath(path)?;
        match &node.kind {
            NodeKind::Dir { .. } => {
                std::fs::create_dir(path).map_err(|source| io(path, source))?;
                self.dir_contents(node, path)?;
            }
            NodeKind::File { blob, .. } => self.write_file(blob, path)?,
            NodeKind::Symlink { target } => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), path)
                    .map_err(|source| io(path, source))?;
            }
            NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
                let dev = libc::makedev(*major, *minor);
                let mode = node.kind.format_bits() | (node.meta.mode & 0o777);
                // SAFETY: `c` is a valid NUL-terminated path.
                check_errno(path, unsafe { libc::mknod(c.as_ptr(), mode, dev) })?;
            }
            NodeKind::Fifo => {
                // SAFETY: as above.
                check_errno(path, unsafe { libc::mkfifo(c.as_ptr(), 0o600) })?;
            }
            NodeKind::Socket => {
                // SAFETY: as above; a socket inode without a listener.
                check_errno(path, unsafe {
                    libc::mknod(c.as_ptr(), libc::S_IFSOCK | 0o600, 0)
                })?;
            }
        }
        apply_meta(
            path,
            &node.meta,
            matches!(node.kind, NodeKind::Symlink { .. }),
        )
    }

    fn write_file(&self, blob: &crate::model::ObjectId, path: &Path) -> Result<(), ExportError> {
        let blob = self.objects.get_blob(blob)?;
        let mut file = std::fs::File::create(path).map_err(|source| io(path, source))?;
        for chunk in &blob.chunks {
            let bytes = self
                .objects
                .get_kind(&chunk.id, crate::model::ObjectKind::Chunk)?;
            file.write_all(&bytes).map_err(|source| io(path, source))?;
        }
        Ok(())
    }
}

fn timespec(ts: Timestamp) -> libc::timespec {
    libc::timespec {
        tv_sec: ts.secs as libc::time_t,
        tv_nsec: ts.nanos as libc::c_long,
    }
}

/// Owner, then mode (chown clears setuid/setgid), then xattrs (chown also
/// clears `security.capability`), then times.
fn apply_meta(path: &Path, meta: &Meta, symlink: bool) -> Result<(), ExportError> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated path for every call below.
    check_errno(path, unsafe {
        libc::lchown(c.as_ptr(), meta.uid, meta.gid)
    })?;
    if !symlink {
        check_errno(path, unsafe { libc::chmod(c.as_ptr(), meta.mode & 0o7777) })?;
    }
    for (name, value) in &meta.xattrs {
        let Ok(cname) = CString::new(name.clone()) else {
            continue;
        };
        let rc = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        check_errno(path, rc)?;
    }
    let times = [timespec(meta.atime), timespec(meta.mtime)];
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check_errno(path, rc)
}
