//! Debian package (.deb) reader: the ar container, then the data tarball
//! in whatever compression dpkg used. Paths are normalised to relative form
//! (`boot/vmlinuz-6.1.0-56-amd64`); entries that would escape the
//! destination (`..`, absolute after normalising) are skipped and counted.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Component, Path};

use crate::ar::parse_ar;
use crate::compress::Codec;
use crate::error::BootError;

/// A kernel package is ~70 MB; anything far bigger is not what we expect.
pub const DEB_BYTES_MAX: u64 = 1 << 30;
/// Entries walked in one data tarball (a kernel package has ~5,000).
pub const TAR_ENTRIES_MAX: usize = 200_000;
/// Bytes written by one extraction (a kernel package unpacks to ~400 MB).
pub const EXTRACT_BYTES_MAX: u64 = 4 << 30;
/// One file read into memory (busybox, a boot loader).
pub const FILE_BYTES_MAX: u64 = 64 << 20;

pub struct DebPackage {
    name: String,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for DebPackage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DebPackage({}, {} bytes)", self.name, self.bytes.len())
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExtractStats {
    pub files: usize,
    pub bytes: u64,
    pub skipped_unsafe_paths: usize,
}

impl DebPackage {
    pub fn open(path: &Path) -> Result<DebPackage, BootError> {
        let name = display_name(path);
        let len = fs::metadata(path).map_err(BootError::io(path))?.len();
        if len > DEB_BYTES_MAX {
            return Err(BootError::TooLarge {
                deb: name,
                bytes: len,
                bytes_max: DEB_BYTES_MAX,
            });
        }
        let bytes = fs::read(path).map_err(BootError::io(path))?;
        DebPackage::from_bytes(name, bytes)
    }

    pub fn from_bytes(name: String, bytes: Vec<u8>) -> Result<DebPackage, BootError> {
        let deb = DebPackage { name, bytes };
        deb.data_member()?;
        Ok(deb)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn data_member(&self) -> Result<(Codec, &[u8]), BootError> {
        let members = parse_ar(&self.bytes).map_err(|source| BootError::Format {
            file: self.name.clone(),
            source,
        })?;
        members
            .into_iter()
            .find_map(|m| {
                let (codec, stem) = Codec::from_name(&m.name);
                (stem == "data.tar").then_some((codec, m.data))
            })
            .ok_or_else(|| BootError::NoDataTar {
                deb: self.name.clone(),
            })
    }

    /// Walks the data tarball, calling `visit` for each regular file with its
    /// normalised path; `visit` reads what it wants from the entry.
    pub fn for_each_file(
        &self,
        mut visit: impl FnMut(&str, &mut dyn Read) -> Result<(), BootError>,
    ) -> Result<ExtractStats, BootError> {
        let (codec, data) = self.data_member()?;
        let tar_err = |e: std::io::Error| BootError::Io {
            path: self.name.clone().into(),
            source: e,
        };
        let mut archive = tar::Archive::new(codec.reader(data).map_err(tar_err)?);
        let mut stats = ExtractStats::default();
        for (index, entry) in archive.entries().map_err(tar_err)?.enumerate() {
            if index == TAR_ENTRIES_MAX {
                return Err(BootError::TooManyEntries {
                    deb: self.name.clone(),
                    entries_max: TAR_ENTRIES_MAX,
                });
            }
            let mut entry = entry.map_err(tar_err)?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let raw = entry.path().map_err(tar_err)?.into_owned();
            let Some(path) = normalise(&raw) else {
                stats.skipped_unsafe_paths += 1;
                continue;
            };
            stats.files += 1;
            stats.bytes += entry.header().size().unwrap_or(0);
            visit(&path, &mut entry)?;
        }
        Ok(stats)
    }

    /// Reads the named regular files into memory; a missing one is an error
    /// naming it.
    pub fn read_files(&self, wanted: &[&str]) -> Result<BTreeMap<String, Vec<u8>>, BootError> {
        let mut found = BTreeMap::new();
        self.for_each_file(|path, reader| {
            if wanted.contains(&path) {
                let mut bytes = Vec::new();
                reader
                    .take(FILE_BYTES_MAX + 1)
                    .read_to_end(&mut bytes)
                    .map_err(BootError::io(path))?;
                if bytes.len() as u64 > FILE_BYTES_MAX {
                    return Err(BootError::TooLarge {
                        deb: format!("{}: {path}", self.name),
                        bytes: bytes.len() as u64,
                        bytes_max: FILE_BYTES_MAX,
                    });
                }
                found.insert(path.to_string(), bytes);
            }
            Ok(())
        })?;
        match wanted.iter().find(|w| !found.contains_key(**w)) {
            Some(missing) => Err(BootError::MissingInPackage {
                deb: self.name.clone(),
                path: missing.to_string(),
            }),
            None => Ok(found),
        }
    }

    /// Writes every regular file for which `select` holds under `dest`.
    pub fn extract(
        &self,
        dest: &Path,
        select: impl Fn(&str) -> bool,
    ) -> Result<ExtractStats, BootError> {
        let mut written = 0u64;
        let stats = self.for_each_file(|path, reader| {
            if !select(path) {
                return Ok(());
            }
            let target = dest.join(path);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(BootError::io(parent))?;
            }
            let mut file = fs::File::create(&target).map_err(BootError::io(&target))?;
            let budget = EXTRACT_BYTES_MAX.saturating_sub(written);
            written += std::io::copy(&mut reader.take(budget), &mut file)
                .map_err(BootError::io(&target))?;
            if written >= EXTRACT_BYTES_MAX {
                return Err(BootError::TooLarge {
                    deb: self.name.clone(),
                    bytes: written,
                    bytes_max: EXTRACT_BYTES_MAX,
                });
            }
            Ok(())
        })?;
        Ok(stats)
    }
}

/// `./boot/x` -> `boot/x`; `None` for anything that could leave the root.
fn normalise(raw: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

pub(crate) fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ar::build_ar;
    use std::io::Write;

    /// A .deb with the given regular files, data.tar.xz compressed.
    pub(crate) fn build_deb(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, format!("./{path}"), *data)
                .unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&tar).unwrap();
        let xz = xz.finish().unwrap();
        build_ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", b""),
            ("data.tar.xz", &xz),
        ])
    }

    #[test]
    fn reads_and_extracts_synthetic_package() {
        let deb = build_deb(&[("bin/busybox", b"\x7fELF..."), ("etc/x", b"y")]);
        let deb = DebPackage::from_bytes("t.deb".into(), deb).unwrap();
        let files = deb.read_files(&["bin/busybox"]).unwrap();
        assert_eq!(files["bin/busybox"], b"\x7fELF...");
        let err = deb.read_files(&["bin/sh"]).unwrap_err();
        assert_eq!(err.to_string(), "t.deb: has no bin/sh");
        let dir = tempfile::tempdir().unwrap();
        let stats = deb.extract(dir.path(), |p| p.starts_with("etc/")).unwrap();
        assert_eq!(stats.files, 2);
        assert_eq!(fs::read(dir.path().join("etc/x")).unwrap(), b"y");
        assert!(!dir.path().join("bin/busybox").exists());
    }

    #[test]
    fn not_a_package_is_named() {
        let err = DebPackage::from_bytes("x.deb".into(), b"hello".to_vec()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.deb: not an ar archive (no \"!<arch>\" magic)"
        );
        let ar = build_ar(&[("debian-binary", b"2.0\n")]);
        let err = DebPackage::from_bytes("y.deb".into(), ar).unwrap_err();
        assert!(err.to_string().contains("no data.tar"), "{err}");
    }

    #[test]
    fn unsafe_paths_are_normalised_or_refused() {
        assert_eq!(normalise(Path::new("./boot/a")).as_deref(), Some("boot/a"));
        assert_eq!(normalise(Path::new("/lib/x")).as_deref(), Some("lib/x"));
        assert_eq!(normalise(Path::new("a/../../etc")), None);
        assert_eq!(normalise(Path::new("./")), None);
    }
}
