//! Writer of the `newc` cpio format, the one the kernel unpacks as an
//! initramfs. Output is a pure function of the entries: inode numbers are
//! assigned in path order and every mtime is the caller's.

use std::collections::BTreeMap;
use std::io::Write;

/// Entries in one archive (an initramfs holds ~100).
pub const ENTRIES_MAX: usize = 10_000;
/// Path length the kernel accepts in an initramfs (PATH_MAX).
pub const PATH_BYTES_MAX: usize = 4095;

const MODE_DIR: u32 = 0o040000;
const MODE_FILE: u32 = 0o100000;
const MODE_SYMLINK: u32 = 0o120000;
const MODE_CHAR: u32 = 0o020000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    node: Node,
    permissions: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpioError {
    #[error("cpio path {path:?} is empty, absolute after trimming, or has . or .. parts")]
    BadPath { path: String },
    #[error("cpio path {path:?} is longer than {PATH_BYTES_MAX} bytes")]
    PathTooLong { path: String },
    #[error("cpio archive has more than {ENTRIES_MAX} entries")]
    TooManyEntries,
    #[error("cpio path {path:?} added twice with different content")]
    Conflict { path: String },
    #[error("cpio file {path:?} is larger than 4 GiB")]
    FileTooLarge { path: String },
}

/// An archive under construction; parent directories are added implicitly.
#[derive(Debug, Default, Clone)]
pub struct CpioBuilder {
    entries: BTreeMap<String, Entry>,
}

impl CpioBuilder {
    pub fn new() -> CpioBuilder {
        CpioBuilder::default()
    }

    pub fn dir(&mut self, path: &str, permissions: u32) -> Result<(), CpioError> {
        self.add(path, Node::Dir, permissions)
    }

    pub fn file(&mut self, path: &str, data: Vec<u8>, permissions: u32) -> Result<(), CpioError> {
        if u32::try_from(data.len()).is_err() {
            return Err(CpioError::FileTooLarge { path: path.into() });
        }
        self.add(path, Node::File(data), permissions)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        self.add(path, Node::Symlink(target.to_string()), 0o777)
    }

    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) -> Result<(), CpioError> {
        self.add(path, Node::CharDevice { major, minor }, 0o600)
    }

    fn add(&mut self, path: &str, node: Node, permissions: u32) -> Result<(), CpioError> {
        let path = path.trim_start_matches('/');
        let bad = || CpioError::BadPath { path: path.into() };
        if path.is_empty()
            || path
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(bad());
        }
        if path.len() > PATH_BYTES_MAX {
            return Err(CpioError::PathTooLong { path: path.into() });
        }
        let mut parent = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |s| s.1)
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            match self.entries.get(&parent) {
                None => self.insert(parent.clone(), Node::Dir, 0o755)?,
                Some(existing) if existing.node == Node::Dir => {}
                Some(_) => return Err(CpioError::Conflict { path: parent }),
            }
        }
        self.insert(path.to_string(), node, permissions)
    }

    fn insert(&mut self, path: String, node: Node, permissions: u32) -> Result<(), CpioError> {
        let entry = Entry { node, permissions };
        match self.entries.get(&path) {
            Some(existing) if *existing == entry => Ok(()),
            Some(existing) if existing.node == Node::Dir && entry.node == Node::Dir => {
                self.entries.insert(path, entry);
                Ok(())
            }
            Some(_) => Err(CpioError::Conflict { path }),
            None if self.entries.len() == ENTRIES_MAX => Err(CpioError::TooManyEntries),
            None => {
                self.entries.insert(path, entry);
                Ok(())
            }
        }
    }

    /// The archive bytes, parents before children (path order), then the
    /// trailer.
    pub fn finish(&self, mtime_secs: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for (index, (path, entry)) in self.entries.iter().enumerate() {
            let (kind, data, rdev): (u32, &[u8], (u32, u32)) = match &entry.node {
                Node::Dir => (MODE_DIR, &[], (0, 0)),
                Node::File(data) => (MODE_FILE, data, (0, 0)),
                Node::Symlink(target) => (MODE_SYMLINK, target.as_bytes(), (0, 0)),
                Node::CharDevice { major, minor } => (MODE_CHAR, &[], (*major, *minor)),
            };
            let nlink = if entry.node == Node::Dir { 2 } else { 1 };
            let header = Header {
                ino: index as u32 + 1,
                mode: kind | (entry.permissions & 0o7777),
                nlink,
                mtime_secs,
                rdev,
            };
            header.write(&mut out, path, data);
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime_secs: 0,
            rdev: (0, 0),
        };
        trailer.write(&mut out, "TRAILER!!!", &[]);
        out
    }

    /// `finish` compressed with gzip, which every Debian kernel unpacks.
    pub fn finish_gzip(&self, mtime_secs: u32) -> Vec<u8> {
        let mut encoder = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::best());
        // Writing into a Vec cannot fail.
        encoder
            .write_all(&self.finish(mtime_secs))
            .expect("gzip into memory");
        encoder.finish().expect("gzip into memory")
    }
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime_secs: u32,
    rdev: (u32, u32),
}

impl Header {
    fn write(&self, out: &mut Vec<u8>, name: &str, data: &[u8]) {
        let fields = [
            self.ino,
            self.mode,
            0, // uid
            0, // gid
            self.nlink,
            self.mtime_secs,
            data.len() as u32,
            0, // devmajor
            0, // devminor
            self.rdev.0,
            self.rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        out.extend_from_slice(b"070701");
        for field in fields {
            out.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad4(out);
        out.extend_from_slice(data);
        pad4(out);
    }
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_newc() {
        let mut cpio = CpioBuilder::new();
        cpio.file("bin/busybox", b"abcde".to_vec(), 0o755).unwrap();
        cpio.symlink("bin/sh", "busybox").unwrap();
        cpio.char_device("dev/console", 5, 1).unwrap();
        let bytes = cpio.finish(0);
        // First entry is the implicit parent "bin".
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(&bytes[14..22], b"000041ed");
        assert_eq!(&bytes[110..114], b"bin\0");
        assert_eq!(bytes.len() % 4, 0);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("bin/busybox\0"));
        assert!(text.contains("abcde"));
        assert!(text.ends_with("TRAILER!!!\0\0\0\0"));
        // Deterministic.
        assert_eq!(bytes, cpio.finish(0));
    }

    #[test]
    fn rejects_bad_paths_and_conflicts() {
        let mut cpio = CpioBuilder::new();
        assert!(cpio.file("../etc", vec![], 0o644).is_err());
        assert!(cpio.file("a//b", vec![], 0o644).is_err());
        cpio.file("a", vec![1], 0o644).unwrap();
        assert_eq!(
            cpio.file("a", vec![2], 0o644),
            Err(CpioError::Conflict { path: "a".into() })
        );
        assert_eq!(
            cpio.file("a/b", vec![], 0o644),
            Err(CpioError::Conflict { path: "a".into() })
        );
    }
}
