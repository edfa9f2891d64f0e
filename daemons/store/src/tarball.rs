//! Importing a tar archive (ustar, GNU or PAX; e.g. a debootstrap tarball)
//! into a [`Staged`] tree. PAX records give nanosecond times and
//! `SCHILY.xattr.*` extended attributes; hard links join the link group of
//! their target. Directories the archive implies but never lists get mode
//! 0755 owned by root.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::model::{Meta, Timestamp};
use crate::objects::ObjectStore;
use crate::stage::{
    fix_nlink, store_content, ImportError, Staged, StagedKind, DEPTH_MAX, NODES_MAX,
};

/// Import every entry of the archive `reader` yields.
pub fn import_tar<R: Read>(objects: &mut ObjectStore, reader: R) -> Result<Staged, ImportError> {
    let mut root = implied_dir();
    let mut archive = tar::Archive::new(reader);
    let io = |source| ImportError::Io {
        path: PathBuf::from("<archive>"),
        source,
    };
    let mut groups = 0u64;
    for (count, entry) in archive.entries().map_err(io)?.enumerate() {
        if count >= NODES_MAX {
            return Err(ImportError::TooManyNodes { max: NODES_MAX });
        }
        let mut entry = entry.map_err(io)?;
        let path = entry.path().map_err(io)?.into_owned();
        let parts = components(&path)?;
        let meta = entry_meta(&mut entry).map_err(io)?;
        let header = entry.header().clone();
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let (blob, size) = store_content(objects, &mut entry)?;
                StagedKind::File { blob, size }
            }
            tar::EntryType::Directory => StagedKind::Dir(BTreeMap::new()),
            tar::EntryType::Symlink => StagedKind::Symlink(link_name(&entry, &path)?),
            tar::EntryType::Char | tar::EntryType::Block => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                if header.entry_type() == tar::EntryType::Char {
                    StagedKind::CharDevice { major, minor }
                } else {
                    StagedKind::BlockDevice { major, minor }
                }
            }
            tar::EntryType::Fifo => StagedKind::Fifo,
            tar::EntryType::Link => {
                let target = components(Path::new(std::ffi::OsStr::new(
                    std::str::from_utf8(&link_name(&entry, &path)?).unwrap_or(""),
                )))?;
                let node = link_target(&mut root, &target, &mut groups, &path)?;
                insert(&mut root, &parts, node, &path)?;
                continue;
            }
            _ => continue,
        };
        let staged = Staged {
            kind,
            meta,
            link_group: None,
        };
        insert(&mut root, &parts, staged, &path)?;
    }
    fix_nlink(&mut root);
    Ok(root)
}

fn implied_dir() -> Staged {
    Staged {
        kind: StagedKind::Dir(BTreeMap::new()),
        meta: Meta {
            mode: 0o755,
            ..Meta::default()
        },
        link_group: None,
    }
}

fn link_name<R: Read>(entry: &tar::Entry<R>, path: &Path) -> Result<Vec<u8>, ImportError> {
    entry
        .link_name_bytes()
        .map(|b| b.into_owned())
        .ok_or(ImportError::Archive {
            path: path.to_owned(),
            reason: "link without a target",
        })
}

fn components(path: &Path) -> Result<Vec<Vec<u8>>, ImportError> {
    use std::os::unix::ffi::OsStrExt;
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => parts.push(name.as_bytes().to_vec()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ImportError::Archive {
                    path: path.to_owned(),
                    reason: "path escapes the archive root",
                })
            }
        }
    }
    if parts.len() > DEPTH_MAX {
        return Err(ImportError::TooDeep {
            path: path.to_owned(),
            max: DEPTH_MAX,
        });
    }
    Ok(parts)
}

fn parse_time(value: &[u8]) -> Option<Timestamp> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits: String = frac.chars().take(9).collect();
    let nanos = format!("{digits:0<9}").parse::<u32>().ok()?;
    Some(Timestamp {
        secs: secs.parse().ok()?,
        nanos,
    })
}

fn entry_meta<R: Read>(entry: &mut tar::Entry<R>) -> std::io::Result<Meta> {
    let header = entry.header();
    let mtime = Timestamp {
        secs: header.mtime().unwrap_or(0) as i64,
        nanos: 0,
    };
    let mut meta = Meta {
        mode: header.mode().unwrap_or(0o644) & 0o7777,
        uid: header.uid().unwrap_or(0) as u32,
        gid: header.gid().unwrap_or(0) as u32,
        atime: mtime,
        mtime,
        ctime: mtime,
        nlink: 1,
        xattrs: BTreeMap::new(),
    };
    if let Some(pax) = entry.pax_extensions()? {
        for ext in pax {
            let ext = ext?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            match key {
                b"mtime" => meta.mtime = parse_time(value).unwrap_or(meta.mtime),
                b"atime" => meta.atime = parse_time(value).unwrap_or(meta.atime),
                b"ctime" => meta.ctime = parse_time(value).unwrap_or(meta.ctime),
                _ => {
                    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                        meta.xattrs.insert(name.to_vec(), value.to_vec());
                    }
                }
            }
        }
    }
    Ok(meta)
}

fn dir_mut<'a>(
    root: &'a mut Staged,
    parents: &[Vec<u8>],
    path: &Path,
) -> Result<&'a mut BTreeMap<Vec<u8>, Staged>, ImportError> {
    let mut node = root;
    for name in parents {
        let StagedKind::Dir(entries) = &mut node.kind else {
            return Err(ImportError::Archive {
                path: path.to_owned(),
                reason: "parent is not a directory",
            });
        };
        node = entries.entry(name.clone()).or_insert_with(implied_dir);
    }
    match &mut node.kind {
        StagedKind::Dir(entries) => Ok(entries),
        _ => Err(ImportError::Archive {
            path: path.to_owned(),
            reason: "parent is not a directory",
        }),
    }
}

fn insert(
    root: &mut Staged,
    parts: &[Vec<u8>],
    mut node: Staged,
    path: &Path,
) -> Result<(), ImportError> {
    let Some((name, parents)) = parts.split_last() else {
        // The archive's "./" entry carries the root's metadata.
        if matches!(node.kind, StagedKind::Dir(_)) {
            root.meta = node.meta;
        }
        return Ok(());
    };
    let entries = dir_mut(root, parents, path)?;
    // A directory listed after its children keeps them.
    if let (
        StagedKind::Dir(new),
        Some(Staged {
            kind: StagedKind::Dir(old),
            ..
        }),
    ) = (&mut node.kind, entries.get_mut(name))
    {
        std::mem::swap(new, old);
    }
    entries.insert(name.clone(), node);
    Ok(())
}

fn link_target(
    root: &mut Staged,
    target: &[Vec<u8>],
    groups: &mut u64,
    path: &Path,
) -> Result<Staged, ImportError> {
    let missing = ImportError::Archive {
        path: path.to_owned(),
        reason: "hard link to a missing or directory entry",
    };
    let Some((name, parents)) = target.split_last() else {
        return Err(missing);
    };
    let entries = dir_mut(root, parents, path)?;
    let node = entries.get_mut(name).ok_or(ImportError::Archive {
        path: path.to_owned(),
        reason: "hard link to a missing entry",
    })?;
    if matches!(node.kind, StagedKind::Dir(_)) {
        return Err(missing);
    }
    if node.link_group.is_none() {
        *groups += 1;
        node.link_group = Some(*groups);
    }
    Ok(node.clone())
}
