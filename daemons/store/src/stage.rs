//! Importing a tree into the store: walk a directory with `lstat` (or read a
//! tar archive, see [`crate::tarball`]), store file contents as chunks and
//! blobs, and return a [`Staged`] tree that carries metadata but no file ids
//! yet: ids are the primary's to assign at commit ([`crate::commit`]).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::chunk;
use crate::model::{encode, Blob, ChunkRef, Meta, ObjectId, ObjectKind, Timestamp};
use crate::objects::{ObjectError, ObjectStore};

/// Deepest directory nesting accepted.
pub const DEPTH_MAX: usize = 256;
/// Most nodes in one imported tree.
pub const NODES_MAX: usize = 4_000_000;
/// Largest xattr value read.
pub const XATTR_VALUE_LEN_MAX: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("{path}: nesting deeper than {max}")]
    TooDeep { path: PathBuf, max: usize },
    #[error("more than {max} nodes")]
    TooManyNodes { max: usize },
    #[error("{path}: unsupported file type (mode {mode:o})")]
    UnsupportedType { path: PathBuf, mode: u32 },
    #[error("the root of an import must be a directory")]
    RootNotDir,
    #[error("archive entry {path}: {reason}")]
    Archive { path: PathBuf, reason: &'static str },
}

/// A node before commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staged {
    pub kind: StagedKind,
    pub meta: Meta,
    /// Hard links: nodes of one group are one inode.
    pub link_group: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StagedKind {
    File { blob: ObjectId, size: u64 },
    Dir(BTreeMap<Vec<u8>, Staged>),
    Symlink(Vec<u8>),
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
    Fifo,
    Socket,
}

/// Store a file's content: its chunks, then its blob manifest.
pub fn store_content<R: std::io::Read>(
    objects: &mut ObjectStore,
    reader: R,
) -> Result<(ObjectId, u64), ImportError> {
    let mut blob = Blob::default();
    let size = chunk::chunk_reader(reader, |bytes: &[u8]| -> Result<(), ChunkSinkError> {
        let (id, _) = objects.put(ObjectKind::Chunk, bytes)?;
        blob.chunks.push(ChunkRef {
            id,
            len: bytes.len() as u32,
        });
        Ok(())
    })
    .map_err(|e| match e {
        ChunkSinkError::Io(source) => ImportError::Io {
            path: PathBuf::new(),
            source,
        },
        ChunkSinkError::Object(e) => ImportError::Object(e),
    })?;
    blob.size = size;
    let (id, _) = objects.put(ObjectKind::Blob, &encode(&blob))?;
    Ok((id, size))
}

enum ChunkSinkError {
    Io(std::io::Error),
    Object(ObjectError),
}

impl From<std::io::Error> for ChunkSinkError {
    fn from(e: std::io::Error) -> Self {
        ChunkSinkError::Io(e)
    }
}

impl From<ObjectError> for ChunkSinkError {
    fn from(e: ObjectError) -> Self {
        ChunkSinkError::Object(e)
    }
}

fn ts(secs: i64, nanos: i64) -> Timestamp {
    Timestamp {
        secs,
        nanos: nanos.clamp(0, 999_999_999) as u32,
    }
}

/// Metadata of `lstat` plus extended attributes.
fn meta_of(path: &Path, md: &std::fs::Metadata) -> Result<Meta, ImportError> {
    Ok(Meta {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        atime: ts(md.atime(), md.atime_nsec()),
        mtime: ts(md.mtime(), md.mtime_nsec()),
        ctime: ts(md.ctime(), md.ctime_nsec()),
        nlink: 1,
        xattrs: read_xattrs(path)?,
    })
}

fn cpath(path: &Path) -> Result<CString, ImportError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| ImportError::Io {
        path: path.to_owned(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

/// All extended attributes of `path` (not following symlinks).
pub fn read_xattrs(path: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, ImportError> {
    let c = cpath(path)?;
    let io = |source| ImportError::Io {
        path: path.to_owned(),
        source,
    };
    let mut out = BTreeMap::new();
    // SAFETY: a null buffer of size 0 asks only for the needed length.
    let len = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if len < 0 {
        let err = std::io::Error::last_os_error();
        // Filesystems without xattr support have none to record.
        return match err.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(out),
            _ => Err(io(err)),
        };
    }
    let mut names = vec![0u8; len as usize];
    // SAFETY: `names` has `names.len()` writable bytes.
    let len = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if len < 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    names.truncate(len as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).expect("split on NUL");
        let mut value = vec![0u8; XATTR_VALUE_LEN_MAX];
        // SAFETY: `value` has `value.len()` writable bytes; names are NUL-terminated.
        let n = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n < 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        value.truncate(n as usize);
        out.insert(name.to_vec(), value);
    }
    Ok(out)
}

struct Walker<'a> {
    objects: &'a mut ObjectStore,
    nodes: usize,
    /// (dev, ino) of multiply-linked files -> (group, blob, size).
    inodes: BTreeMap<(u64, u64), (u64, ObjectId, u64)>,
}

/// Import the directory `root` (its own metadata becomes the root's).
pub fn import_dir(objects: &mut ObjectStore, root: &Path) -> Result<Staged, ImportError> {
    let mut walker = Walker {
        objects,
        nodes: 0,
        inodes: BTreeMap::new(),
    };
    let md = std::fs::symlink_metadata(root).map_err(|source| ImportError::Io {
        path: root.to_owned(),
        source,
    })?;
    if !md.is_dir() {
        return Err(ImportError::RootNotDir);
    }
    let mut staged = walker.node(root, &md, 0)?;
    fix_nlink(&mut staged);
    Ok(staged)
}

impl Walker<'_> {
    fn node(
        &mut self,
        path: &Path,
        md: &std::fs::Metadata,
        depth: usize,
    ) -> Result<Staged, ImportError> {
        self.nodes += 1;
        if self.nodes > NODES_MAX {
            return Err(ImportError::TooManyNodes { max: NODES_MAX });
        }
        let io = |source| ImportError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = meta_of(path, md)?;
        let fmt = md.mode() & libc::S_IFMT;
        let (major, minor) = (libc::major(md.rdev()), libc::minor(md.rdev()));
        let mut link_group = None;
        let kind = match fmt {
            libc::S_IFDIR => StagedKind::Dir(self.dir(path, depth)?),
            libc::S_IFREG if md.nlink() > 1 => {
                let key = (md.dev(), md.ino());
                let (group, blob, size) = match self.inodes.get(&key) {
                    Some(found) => *found,
                    None => {
                        let file = std::fs::File::open(path).map_err(io)?;
                        let (blob, size) =
                            store_content(self.objects, file).map_err(|e| with_path(e, path))?;
                        let found = (self.inodes.len() as u64 + 1, blob, size);
                        self.inodes.insert(key, found);
                        found
                    }
                };
                link_group = Some(group);
                StagedKind::File { blob, size }
            }
            libc::S_IFREG => {
                let file = std::fs::File::open(path).map_err(io)?;
                let (blob, size) =
                    store_content(self.objects, file).map_err(|e| with_path(e, path))?;
                StagedKind::File { blob, size }
            }
            libc::S_IFLNK => StagedKind::Symlink(
                std::fs::read_link(path)
                    .map_err(io)?
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            ),
            libc::S_IFCHR => StagedKind::CharDevice { major, minor },
            libc::S_IFBLK => StagedKind::BlockDevice { major, minor },
            libc::S_IFIFO => StagedKind::Fifo,
            libc::S_IFSOCK => StagedKind::Socket,
            mode => {
                return Err(ImportError::UnsupportedType {
                    path: path.to_owned(),
                    mode,
                })
            }
        };
        Ok(Staged {
            kind,
            meta,
            link_group,
        })
    }

    fn dir(&mut self, path: &Path, depth: usize) -> Result<BTreeMap<Vec<u8>, Staged>, ImportError> {
        if depth >= DEPTH_MAX {
            return Err(ImportError::TooDeep {
                path: path.to_owned(),
                max: DEPTH_MAX,
            });
        }
        let io = |source| ImportError::Io {
            path: path.to_owned(),
            source,
        };
        let mut names: Vec<_> = std::fs::read_dir(path)
            .map_err(io)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        names.sort();
        let mut entries = BTreeMap::new();
        for name in names {
            let child = path.join(&name);
            let md = std::fs::symlink_metadata(&child).map_err(|source| ImportError::Io {
                path: child.clone(),
                source,
            })?;
            let node = self.node(&child, &md, depth + 1)?;
            entries.insert(name.as_bytes().to_vec(), node);
        }
        Ok(entries)
    }
}

fn with_path(err: ImportError, path: &Path) -> ImportError {
    match err {
        ImportError::Io { source, .. } => ImportError::Io {
            path: path.to_owned(),
            source,
        },
        other => other,
    }
}

/// Set `nlink` as the tree itself implies: 2 + subdirectories for a
/// directory, the size of its hard-link group for anything else.
pub fn fix_nlink(root: &mut Staged) {
    let mut groups = BTreeMap::new();
    count_groups(root, &mut groups);
    apply_nlink(root, &groups);
}

fn count_groups(node: &Staged, groups: &mut BTreeMap<u64, u32>) {
    if let Some(group) = node.link_group {
        *groups.entry(group).or_default() += 1;
    }
    if let StagedKind::Dir(entries) = &node.kind {
        entries
            .values()
            .for_each(|child| count_groups(child, groups));
    }
}

fn apply_nlink(node: &mut Staged, groups: &BTreeMap<u64, u32>) {
    node.meta.nlink = match &mut node.kind {
        StagedKind::Dir(entries) => {
            let mut subdirs = 0u32;
            for child in entries.values_mut() {
                apply_nlink(child, groups);
                subdirs += u32::from(matches!(child.kind, StagedKind::Dir(_)));
            }
            2 + subdirs
        }
        _ => node
            .link_group
            .and_then(|g| groups.get(&g).copied())
            .unwrap_or(1),
    };
}
