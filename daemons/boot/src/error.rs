//! Errors of the boot-tree builder. Each message names what is missing or
//! wrong in one line, because an operator reads it after a failed import.

use std::path::PathBuf;

/// Malformed bytes in an archive or module: never a panic, always one of these.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not an ar archive (no \"!<arch>\" magic)")]
    ArMagic,
    #[error("ar member header at offset {offset} is truncated or malformed")]
    ArHeader { offset: usize },
    #[error("ar member {name:?} claims {size} bytes but only {available} remain")]
    ArTruncated {
        name: String,
        size: u64,
        available: usize,
    },
    #[error("ar archive has more than {members_max} members")]
    ArTooManyMembers { members_max: usize },
    #[error("not an ELF64 little-endian object")]
    ElfMagic,
    #[error("ELF {what} lies outside the file ({len} bytes)")]
    ElfBounds { what: &'static str, len: usize },
    #[error("ELF object has no .modinfo section")]
    NoModinfo,
    #[error(".modinfo has no name= field")]
    ModinfoNoName,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Format {
        file: String,
        #[source]
        source: FormatError,
    },
    #[error("{deb}: not a Debian package: no data.tar.{{xz,zst,gz}} member")]
    NoDataTar { deb: String },
    #[error("{deb}: {bytes} bytes is more than {bytes_max}")]
    TooLarge {
        deb: String,
        bytes: u64,
        bytes_max: u64,
    },
    #[error("{deb}: data tarball has more than {entries_max} entries")]
    TooManyEntries { deb: String, entries_max: usize },
    #[error("{deb}: has no {path}")]
    MissingInPackage { deb: String, path: String },
    #[error("not a kernel package: no boot/vmlinuz-* in {deb}")]
    NotKernelPackage { deb: String },
    #[error("no kernel in {root}: no boot/vmlinuz-* with a matching lib/modules/<version>")]
    NoKernelInRoot { root: PathBuf },
    #[error("kernel {version} has no {module} module")]
    MissingModule { version: String, module: String },
    #[error("module {module} depends on itself through {cycle}")]
    DependencyCycle { module: String, cycle: String },
    #[error("module {module}: more than {modules_max} modules in the dependency closure")]
    TooManyModules { module: String, modules_max: usize },
    #[error("module {module}: its .modinfo says name={found}")]
    ModuleNameMismatch { module: String, found: String },
    #[error("module {module}: decompressed size exceeds {bytes_max} bytes")]
    ModuleTooLarge { module: String, bytes_max: u64 },
    #[error("image root {root} has no /sbin/init: nothing to switch_root into")]
    NoInitInImage { root: PathBuf },
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidInput {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("apt-get download {package} failed: {detail}")]
    AptDownload { package: String, detail: String },
}

impl BootError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BootError {
        let path = path.into();
        move |source| BootError::Io { path, source }
    }
}
