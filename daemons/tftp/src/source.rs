//! Where served bytes come from: a [`FileSource`] opens a confined
//! [`TftpPath`] for one client and hands back its size and a random-access
//! reader. Implementations: a directory ([`DirSource`], the boot tree), a
//! map in memory ([`MemorySource`]) and [`WithGenerated`], which asks a
//! [`Generated`] hook first so per-client configs can be produced on the fly.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Longest path accepted, in bytes (a request is at most 512 bytes anyway).
pub const PATH_LEN_MAX: usize = 255;
/// Deepest path accepted, in components.
pub const PATH_DEPTH_MAX: usize = 16;

/// A request path after normalisation: relative, `/`-separated, no empty,
/// `.` or `..` components. A leading `/` means the root of the served tree.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TftpPath {
    components: Vec<String>,
}

/// Why a request path is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path of {len} bytes exceeds {max}")]
    TooLong { len: usize, max: usize },
    #[error("path has more than {max} components")]
    TooDeep { max: usize },
    #[error("path names no file")]
    Empty,
    #[error("path climbs out of the served tree with `..`")]
    ParentComponent,
    #[error("path contains a control character")]
    ControlCharacter,
}

impl TftpPath {
    /// Normalise a client's filename. Backslashes count as separators
    /// because Windows boot loaders send them.
    pub fn parse(raw: &str) -> Result<TftpPath, PathError> {
        if raw.len() > PATH_LEN_MAX {
            return Err(PathError::TooLong {
                len: raw.len(),
                max: PATH_LEN_MAX,
            });
        }
        if raw.chars().any(char::is_control) {
            return Err(PathError::ControlCharacter);
        }
        let mut components = Vec::new();
        for component in raw.split(['/', '\\']) {
            match component {
                "" | "." => continue,
                ".." => return Err(PathError::ParentComponent),
                name => {
                    if components.len() == PATH_DEPTH_MAX {
                        return Err(PathError::TooDeep {
                            max: PATH_DEPTH_MAX,
                        });
                    }
                    components.push(name.to_string());
                }
            }
        }
        if components.is_empty() {
            return Err(PathError::Empty);
        }
        Ok(TftpPath { components })
    }

    /// The components, outermost first.
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// `a/b/c`, without a leading slash.
    pub fn as_relative(&self) -> String {
        self.components.join("/")
    }
}

impl std::fmt::Display for TftpPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_relative())
    }
}

/// Random access to the bytes of one opened file.
pub trait FileReader: Send + Sync {
    /// Read up to `buf.len()` bytes at `offset`; fewer only at the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
}

/// An opened file: its size when opened and its reader.
pub struct OpenFile {
    pub size: u64,
    pub reader: Box<dyn FileReader>,
}

impl OpenFile {
    /// A file whose bytes are already in memory.
    pub fn from_bytes(bytes: Arc<[u8]>) -> OpenFile {
        OpenFile {
            size: bytes.len() as u64,
            reader: Box::new(BytesReader(bytes)),
        }
    }
}

impl std::fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFile")
            .field("size", &self.size)
            .finish()
    }
}

struct BytesReader(Arc<[u8]>);

impl FileReader for BytesReader {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let available = self.0.get(start..).unwrap_or_default();
        let len = available.len().min(buf.len());
        buf[..len].copy_from_slice(&available[..len]);
        Ok(len)
    }
}

struct FsReader(File);

impl FileReader for FsReader {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.0.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(read) => filled += read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(filled)
    }
}

/// Why a file cannot be served; each maps to a TFTP error code.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: no such file")]
    NotFound { path: TftpPath },
    #[error("{path}: resolves outside the served tree")]
    Escapes { path: TftpPath },
    #[error("{path}: not a regular file")]
    NotRegular { path: TftpPath },
    #[error("{path}: {source}")]
    Io {
        path: TftpPath,
        #[source]
        source: io::Error,
    },
}

/// Files a transfer may serve. Implementations never resolve a path
/// outside their tree.
pub trait FileSource: Send + Sync + 'static {
    /// Open `path` for `client` (per-client views and generated configs
    /// depend on who asks).
    fn open(&self, path: &TftpPath, client: IpAddr) -> Result<OpenFile, OpenError>;
}

/// Per-client files produced on request (iPXE scripts,
/// `pxelinux.cfg/01-<mac>`): `None` means "not mine, look in the tree".
pub trait Generated: Send + Sync + 'static {
    fn generate(&self, path: &TftpPath, client: IpAddr) -> Option<Arc<[u8]>>;
}

/// A [`FileSource`] that asks a [`Generated`] hook before the tree.
pub struct WithGenerated<G, S> {
    pub generated: G,
    pub tree: S,
}

impl<G: Generated, S: FileSource> FileSource for WithGenerated<G, S> {
    fn open(&self, path: &TftpPath, client: IpAddr) -> Result<OpenFile, OpenError> {
        match self.generated.generate(path, client) {
            Some(bytes) => Ok(OpenFile::from_bytes(bytes)),
            None => self.tree.open(path, client),
        }
    }
}

/// Files held in memory, keyed by normalised path (tests, small trees).
#[derive(Clone, Debug, Default)]
pub struct MemorySource {
    files: BTreeMap<TftpPath, Arc<[u8]>>,
}

impl MemorySource {
    pub fn new() -> MemorySource {
        MemorySource::default()
    }

    /// Add or replace a file. Panics on a path that could never be
    /// requested: a programming error in the caller.
    pub fn insert(&mut self, path: &str, bytes: impl Into<Arc<[u8]>>) {
        let path = TftpPath::parse(path).unwrap_or_else(|err| panic!("{path:?}: {err}"));
        self.files.insert(path, bytes.into());
    }
}

impl FileSource for MemorySource {
    fn open(&self, path: &TftpPath, _client: IpAddr) -> Result<OpenFile, OpenError> {
        self.files
            .get(path)
            .map(|bytes| OpenFile::from_bytes(bytes.clone()))
            .ok_or_else(|| OpenError::NotFound { path: path.clone() })
    }
}

/// Files under a directory. Symlinks inside the tree are followed; a path
/// whose resolution leaves the tree is refused. The tree belongs to the
/// operator, so the window between resolving and opening is not a threat.
#[derive(Clone, Debug)]
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    /// Serve the tree at `root` (resolved once, now).
    pub fn new(root: impl AsRef<Path>) -> io::Result<DirSource> {
        let root = root.as_ref().canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{}: not a directory", root.display()),
            ));
        }
        Ok(DirSource { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl FileSource for DirSource {
    fn open(&self, path: &TftpPath, _client: IpAddr) -> Result<OpenFile, OpenError> {
        let joined = path
            .components()
            .iter()
            .fold(self.root.clone(), |acc, component| acc.join(component));
        let resolved = joined.canonicalize().map_err(|err| match err.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
                OpenError::NotFound { path: path.clone() }
            }
            _ => OpenError::Io {
                path: path.clone(),
                source: err,
            },
        })?;
        if !resolved.starts_with(&self.root) {
            return Err(OpenError::Escapes { path: path.clone() });
        }
        // O_NONBLOCK so a FIFO placed in the tree cannot hang the open; the
        // type check below then refuses it.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(&resolved)
            .map_err(|source| OpenError::Io {
                path: path.clone(),
                source,
            })?;
        let metadata = file.metadata().map_err(|source| OpenError::Io {
            path: path.clone(),
            source,
        })?;
        if !metadata.is_file() {
            return Err(OpenError::NotRegular { path: path.clone() });
        }
        Ok(OpenFile {
            size: metadata.len(),
            reader: Box::new(FsReader(file)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 42));

    fn read_all(file: &OpenFile) -> Vec<u8> {
        let mut buf = vec![0u8; usize::try_from(file.size).expect("small") + 8];
        let len = file.reader.read_at(0, &mut buf).expect("read");
        buf.truncate(len);
        buf
    }

    #[test]
    fn paths_normalise() {
        let path = TftpPath::parse("/boot//./x86\\vmlinuz").expect("valid");
        assert_eq!(path.as_relative(), "boot/x86/vmlinuz");
        assert_eq!(
            TftpPath::parse("pxelinux.0").expect("valid").as_relative(),
            "pxelinux.0"
        );
    }

    #[test]
    fn escaping_paths_are_refused() {
        assert_eq!(
            TftpPath::parse("../etc/passwd"),
            Err(PathError::ParentComponent)
        );
        assert_eq!(
            TftpPath::parse("a/../../b"),
            Err(PathError::ParentComponent)
        );
        assert_eq!(TftpPath::parse("a\\..\\b"), Err(PathError::ParentComponent));
        assert_eq!(TftpPath::parse("/"), Err(PathError::Empty));
        assert_eq!(TftpPath::parse("a\nb"), Err(PathError::ControlCharacter));
        let deep = "a/".repeat(PATH_DEPTH_MAX + 1);
        assert_eq!(
            TftpPath::parse(&deep),
            Err(PathError::TooDeep {
                max: PATH_DEPTH_MAX
            })
        );
    }

    #[test]
    fn memory_source_serves_and_misses() {
        let mut source = MemorySource::new();
        source.insert("/boot/a", b"hello".to_vec());
        let path = TftpPath::parse("boot/a").expect("valid");
        assert_eq!(
            read_all(&source.open(&path, CLIENT).expect("open")),
            b"hello"
        );
        let missing = TftpPath::parse("boot/b").expect("valid");
        assert!(matches!(
            source.open(&missing, CLIENT),
            Err(OpenError::NotFound { .. })
        ));
    }

    struct PerClient;
    impl Generated for PerClient {
        fn generate(&self, path: &TftpPath, client: IpAddr) -> Option<Arc<[u8]>> {
            (path.as_relative() == "boot.ipxe")
                .then(|| format!("#!ipxe\necho {client}\n").into_bytes().into())
        }
    }

    #[test]
    fn generated_files_come_first_and_depend_on_the_client() {
        let mut tree = MemorySource::new();
        tree.insert("boot.ipxe", b"static".to_vec());
        tree.insert("other", b"tree".to_vec());
        let source = WithGenerated {
            generated: PerClient,
            tree,
        };
        let ipxe = TftpPath::parse("boot.ipxe").expect("valid");
        let other = TftpPath::parse("other").expect("valid");
        assert_eq!(
            read_all(&source.open(&ipxe, CLIENT).expect("open")),
            b"#!ipxe\necho 10.0.0.42\n"
        );
        assert_eq!(
            read_all(&source.open(&other, CLIENT).expect("open")),
            b"tree"
        );
    }

    #[test]
    fn dir_source_confines_symlinks_and_refuses_non_files() {
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), b"secret").expect("write");
        let tree = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tree.path().join("boot")).expect("mkdir");
        std::fs::write(tree.path().join("boot/vmlinuz-6.1"), b"kernel").expect("write");
        std::os::unix::fs::symlink("vmlinuz-6.1", tree.path().join("boot/vmlinuz")).expect("ln");
        std::os::unix::fs::symlink(outside.path().join("secret"), tree.path().join("leak"))
            .expect("ln");
        std::os::unix::fs::symlink(outside.path(), tree.path().join("dirleak")).expect("ln");
        let source = DirSource::new(tree.path()).expect("source");
        let open = |raw: &str| source.open(&TftpPath::parse(raw).expect("valid"), CLIENT);

        assert_eq!(
            read_all(&open("/boot/vmlinuz").expect("inside link")),
            b"kernel"
        );
        assert!(matches!(open("leak"), Err(OpenError::Escapes { .. })));
        assert!(matches!(
            open("dirleak/secret"),
            Err(OpenError::Escapes { .. })
        ));
        assert!(matches!(open("boot"), Err(OpenError::NotRegular { .. })));
        assert!(matches!(open("nope"), Err(OpenError::NotFound { .. })));
    }

    #[test]
    fn readers_stop_at_the_end() {
        let file = OpenFile::from_bytes(b"0123456789".to_vec().into());
        let mut buf = [0u8; 4];
        assert_eq!(file.reader.read_at(8, &mut buf).expect("read"), 2);
        assert_eq!(&buf[..2], b"89");
        assert_eq!(file.reader.read_at(99, &mut buf).expect("read"), 0);
    }
}
