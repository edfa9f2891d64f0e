//! Durable byte storage behind a trait, so the simulator can crash a node
//! mid-write: data written but not synced may be lost, data synced survives.
//!
//! Names are flat (`[A-Za-z0-9._-]`, no `/`): one directory per store keeps
//! the durability story simple (one directory fsync covers every rename).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rand::{Rng, SeedableRng};

/// Longest accepted file name.
pub const NAME_LEN_MAX: usize = 128;

/// Errors of a [`Storage`] backend.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid storage name {name:?}")]
    InvalidName { name: String },
    #[error("no such file {name:?}")]
    NotFound { name: String },
    #[error("read of {name:?} at {offset}+{len} is beyond its end {file_len}")]
    ShortRead {
        name: String,
        offset: u64,
        len: usize,
        file_len: u64,
    },
    /// The disk is full (ENOSPC): `name` took what fit of the write.
    #[error("no space left for {name:?}: {used_bytes} of {quota_bytes} bytes used")]
    Full {
        name: String,
        used_bytes: u64,
        quota_bytes: u64,
    },
    /// The device stopped answering (a simulated crash mid-write).
    #[error("device gone while writing {name:?}")]
    Gone { name: String },
    #[error("i/o on {name:?}: {source}")]
    Io {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// Append-only files plus small files replaced atomically.
pub trait Storage: Send + Sync + 'static {
    /// Append `data` to `name` (created if missing); returns the offset the
    /// data starts at. Not durable until [`Storage::sync`].
    fn append(&self, name: &str, data: &[u8]) -> Result<u64, StorageError>;
    /// Make every byte appended to `name` (and its existence) durable.
    fn sync(&self, name: &str) -> Result<(), StorageError>;
    /// Read `len` bytes at `offset`.
    fn read_at(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, StorageError>;
    /// Read a whole file.
    fn read_all(&self, name: &str) -> Result<Vec<u8>, StorageError>;
    /// Length of `name`, `None` if it does not exist.
    fn len(&self, name: &str) -> Result<Option<u64>, StorageError>;
    /// Cut `name` to `len` bytes, durably (recovery of a torn tail).
    fn truncate(&self, name: &str, len: u64) -> Result<(), StorageError>;
    /// Replace `name` with `data` durably and atomically: a crash leaves
    /// either the old or the new content, never a mix.
    fn write_atomic(&self, name: &str, data: &[u8]) -> Result<(), StorageError>;
    /// Every file name, sorted.
    fn list(&self) -> Result<Vec<String>, StorageError>;
    /// Remove `name` durably; removing a missing file is not an error.
    fn remove(&self, name: &str) -> Result<(), StorageError>;
}

fn check_name(name: &str) -> Result<(), StorageError> {
    let valid = !name.is_empty()
        && name.len() <= NAME_LEN_MAX
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(StorageError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// [`Storage`] on a real directory: `fsync` of the file on sync, and of the
/// directory after every create, rename and remove. A file's first sync
/// through this value also syncs the directory (the file may be new); later
/// syncs of that name skip it, since appends do not change the directory.
pub struct FsStorage {
    dir: PathBuf,
    open: Mutex<BTreeMap<String, File>>,
    /// Names whose directory entry a directory sync of ours made durable
    /// (forgotten on remove, so a re-created file syncs it again).
    entry_durable: Mutex<BTreeSet<String>>,
    dir_syncs: AtomicU64,
}

impl FsStorage {
    /// Open (creating it if needed) the directory `dir`.
    pub fn open(dir: &Path) -> Result<FsStorage, StorageError> {
        std::fs::create_dir_all(dir).map_err(|source| io_err(dir, source))?;
        Ok(FsStorage {
            dir: dir.to_owned(),
            open: Mutex::new(BTreeMap::new()),
            entry_durable: Mutex::new(BTreeSet::new()),
            dir_syncs: AtomicU64::new(0),
        })
    }

    fn path(&self, name: &str) -> Result<PathBuf, StorageError> {
        check_name(name)?;
        Ok(self.dir.join(name))
    }

    /// Directory syncs so far.
    pub fn dir_syncs(&self) -> u64 {
        self.dir_syncs.load(Ordering::Relaxed)
    }

    fn entry_durable(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.entry_durable.lock().expect("storage lock poisoned")
    }

    fn sync_dir(&self) -> Result<(), StorageError> {
        self.dir_syncs.fetch_add(1, Ordering::Relaxed);
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| io_err(&self.dir, source))
    }

    fn with_file<T>(
        &self,
        name: &str,
        create: bool,
        op: impl FnOnce(&mut File) -> std::io::Result<T>,
    ) -> Result<T, StorageError> {
        let path = self.path(name)?;
        let mut open = self.open.lock().expect("storage lock poisoned");
        if !open.contains_key(name) {
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(create)
                .open(&path)
                .map_err(|source| match source.kind() {
                    std::io::ErrorKind::NotFound => StorageError::NotFound {
                        name: name.to_owned(),
                    },
                    _ => io_err(&path, source),
                })?;
            open.insert(name.to_owned(), file);
        }
        let file = open.get_mut(name).expect("inserted above");
        op(file).map_err(|source| io_err(&path, source))
    }
}

fn io_err(path: &Path, source: std::io::Error) -> StorageError {
    StorageError::Io {
        name: path.display().to_string(),
        source,
    }
}

impl Storage for FsStorage {
    fn append(&self, name: &str, data: &[u8]) -> Result<u64, StorageError> {
        self.with_file(name, true, |file| {
            let offset = file.seek(SeekFrom::End(0))?;
            file.write_all(data)?;
            Ok(offset)
        })
    }

    fn sync(&self, name: &str) -> Result<(), StorageError> {
        self.with_file(name, true, |file| file.sync_data())?;
        // The file may be new: its directory entry must be durable too,
        // once; appends leave the directory alone.
        if !self.entry_durable().contains(name) {
            self.sync_dir()?;
            self.entry_durable().insert(name.to_owned());
        }
        Ok(())
    }

    fn read_at(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        let file_len = self.len(name)?.ok_or_else(|| StorageError::NotFound {
            name: name.to_owned(),
        })?;
        if offset.saturating_add(len as u64) > file_len {
            return Err(StorageError::ShortRead {
                name: name.to_owned(),
                offset,
                len,
                file_len,
            });
        }
        self.with_file(name, false, |file| {
            let mut buf = vec![0u8; len];
            std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, offset)?;
            Ok(buf)
        })
    }

    fn read_all(&self, name: &str) -> Result<Vec<u8>, StorageError> {
        let path = self.path(name)?;
        let mut buf = Vec::new();
        match File::open(&path) {
            Ok(mut file) => file
                .read_to_end(&mut buf)
                .map_err(|source| io_err(&path, source))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound {
                    name: name.to_owned(),
                })
            }
            Err(source) => return Err(io_err(&path, source)),
        };
        Ok(buf)
    }

    fn len(&self, name: &str) -> Result<Option<u64>, StorageError> {
        let path = self.path(name)?;
        match std::fs::metadata(&path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io_err(&path, source)),
        }
    }

    fn truncate(&self, name: &str, len: u64) -> Result<(), StorageError> {
        self.with_file(name, false, |file| {
            file.set_len(len)?;
            file.sync_all()
        })
    }

    fn write_atomic(&self, name: &str, data: &[u8]) -> Result<(), StorageError> {
        let path = self.path(name)?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(data)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| io_err(&path, source))?;
        self.open
            .lock()
            .expect("storage lock poisoned")
            .remove(name);
        self.sync_dir()?;
        self.entry_durable().insert(name.to_owned());
        Ok(())
    }

    fn list(&self) -> Result<Vec<String>, StorageError> {
        let mut names = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(|source| io_err(&self.dir, source))?;
        for entry in entries {
            let entry = entry.map_err(|source| io_err(&self.dir, source))?;
            if let Some(name) = entry.file_name().to_str() {
                if check_name(name).is_ok() {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn remove(&self, name: &str) -> Result<(), StorageError> {
        let path = self.path(name)?;
        self.open
            .lock()
            .expect("storage lock poisoned")
            .remove(name);
        self.entry_durable().remove(name);
        match std::fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(io_err(&path, source)),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct MemFile {
    data: Vec<u8>,
    /// Bytes that survive a crash. Atomic writes, truncates and removes are
    /// durable at once, as on the real backend.
    synced_len: usize,
    /// Whether the file's existence is durable.
    synced_exists: bool,
}

/// Faults a test or the simulator injects into a [`MemStorage`].
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    /// Total bytes the disk holds; appends beyond it fail with
    /// [`StorageError::Full`] after writing what fits (as ENOSPC does).
    quota_bytes: Option<u64>,
    /// Mutating operations left before the device goes away.
    ops_until_gone: Option<u64>,
    /// The device went away: every operation fails until [`MemStorage::crash`].
    gone: bool,
    /// Syncs done so far (a slow disk pays for each).
    syncs: u64,
}

/// In-memory [`Storage`] with the crash semantics of a real disk: after
/// [`MemStorage::crash`] only synced bytes remain (plus, optionally, a torn
/// random prefix of the unsynced tail). Faults can be injected: a quota
/// (full disk) and a device that goes away after a number of operations
/// (a crash at an exact point of a write).
#[derive(Default)]
pub struct MemStorage {
    files: Mutex<BTreeMap<String, MemFile>>,
    faults: Mutex<Faults>,
}

impl MemStorage {
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// Limit the disk to `quota_bytes` in total (`None`: unlimited).
    pub fn set_quota(&self, quota_bytes: Option<u64>) {
        self.faults().quota_bytes = quota_bytes;
    }

    /// Bytes stored over all files.
    pub fn used_bytes(&self) -> u64 {
        let files = self.files.lock().expect("storage lock poisoned");
        files.values().map(|f| f.data.len() as u64).sum()
    }

    /// The device goes away after `ops` more mutating operations (append,
    /// sync, truncate, atomic write, remove): the next one fails with
    /// [`StorageError::Gone`], as does everything after it until
    /// [`MemStorage::crash`].
    pub fn fail_after(&self, ops: u64) {
        self.faults().ops_until_gone = Some(ops);
    }

    /// Whether the device went away (see [`MemStorage::fail_after`]).
    pub fn is_gone(&self) -> bool {
        self.faults().gone
    }

    /// Syncs done since the storage was made.
    pub fn syncs(&self) -> u64 {
        self.faults().syncs
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().expect("storage lock poisoned")
    }

    /// Count one mutating operation; fails once the device is gone.
    fn operate(&self, name: &str) -> Result<(), StorageError> {
        let mut faults = self.faults();
        match faults.ops_until_gone {
            _ if faults.gone => {}
            Some(0) => {
                faults.gone = true;
                faults.ops_until_gone = None;
            }
            Some(n) => faults.ops_until_gone = Some(n - 1),
            None => {}
        }
        if faults.gone {
            return Err(StorageError::Gone {
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    /// Lose everything not synced. With `torn_seed`, each file keeps a
    /// random prefix of its unsynced tail instead (a torn write). A device
    /// that went away is back afterwards (the machine restarted).
    pub fn crash(&self, torn_seed: Option<u64>) {
        {
            let mut faults = self.faults();
            faults.gone = false;
            faults.ops_until_gone = None;
        }
        let mut rng = torn_seed.map(rand_chacha::ChaCha8Rng::seed_from_u64);
        let mut files = self.files.lock().expect("storage lock poisoned");
        files.retain(|_, file| {
            let unsynced = file.data.len() - file.synced_len;
            let keep = match (&mut rng, unsynced) {
                (Some(rng), n) if n > 0 => rng.gen_range(0..=n),
                _ => 0,
            };
            file.data.truncate(file.synced_len + keep);
            file.synced_len = file.data.len();
            file.synced_exists || !file.data.is_empty()
        });
        for file in files.values_mut() {
            file.synced_exists = true;
        }
    }

    /// Flip one bit of a stored byte (bit rot), for tests of checksums.
    pub fn corrupt(&self, name: &str, offset: usize) -> bool {
        let mut files = self.files.lock().expect("storage lock poisoned");
        match files.get_mut(name).and_then(|f| f.data.get_mut(offset)) {
            Some(byte) => {
                *byte ^= 0x01;
                true
            }
            None => false,
        }
    }

    fn not_found(name: &str) -> StorageError {
        StorageError::NotFound {
            name: name.to_owned(),
        }
    }
}

impl Storage for MemStorage {
    fn append(&self, name: &str, data: &[u8]) -> Result<u64, StorageError> {
        check_name(name)?;
        self.operate(name)?;
        let quota = self.faults().quota_bytes;
        let mut files = self.files.lock().expect("storage lock poisoned");
        let used: u64 = files.values().map(|f| f.data.len() as u64).sum();
        let file = files.entry(name.to_owned()).or_default();
        let offset = file.data.len() as u64;
        if let Some(quota) = quota {
            let room = usize::try_from(quota.saturating_sub(used)).unwrap_or(usize::MAX);
            if data.len() > room {
                file.data.extend_from_slice(&data[..room]);
                return Err(StorageError::Full {
                    name: name.to_owned(),
                    used_bytes: used + room as u64,
                    quota_bytes: quota,
                });
            }
        }
        file.data.extend_from_slice(data);
        Ok(offset)
    }

    fn sync(&self, name: &str) -> Result<(), StorageError> {
        check_name(name)?;
        self.operate(name)?;
        self.faults().syncs += 1;
        let mut files = self.files.lock().expect("storage lock poisoned");
        let file = files.entry(name.to_owned()).or_default();
        file.synced_len = file.data.len();
        file.synced_exists = true;
        Ok(())
    }

    fn read_at(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        check_name(name)?;
        let files = self.files.lock().expect("storage lock poisoned");
        let file = files.get(name).ok_or_else(|| Self::not_found(name))?;
        let short = || StorageError::ShortRead {
            name: name.to_owned(),
            offset,
            len,
            file_len: file.data.len() as u64,
        };
        let start = usize::try_from(offset).map_err(|_| short())?;
        let end = start.checked_add(len).ok_or_else(short)?;
        file.data
            .get(start..end)
            .map(<[u8]>::to_vec)
            .ok_or_else(short)
    }

    fn read_all(&self, name: &str) -> Result<Vec<u8>, StorageError> {
        check_name(name)?;
        let files = self.files.lock().expect("storage lock poisoned");
        let file = files.get(name).ok_or_else(|| Self::not_found(name))?;
        Ok(file.data.clone())
    }

    fn len(&self, name: &str) -> Result<Option<u64>, StorageError> {
        check_name(name)?;
        let files = self.files.lock().expect("storage lock poisoned");
        Ok(files.get(name).map(|f| f.data.len() as u64))
    }

    fn truncate(&self, name: &str, len: u64) -> Result<(), StorageError> {
        check_name(name)?;
        self.operate(name)?;
        let mut files = self.files.lock().expect("storage lock poisoned");
        let file = files.get_mut(name).ok_or_else(|| Self::not_found(name))?;
        let len = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(file.data.len());
        file.data.truncate(len);
        file.synced_len = len;
        file.synced_exists = true;
        Ok(())
    }

    fn write_atomic(&self, name: &str, data: &[u8]) -> Result<(), StorageError> {
        check_name(name)?;
        self.operate(name)?;
        let quota = self.faults().quota_bytes;
        let mut files = self.files.lock().expect("storage lock poisoned");
        let used: u64 = files
            .iter()
            .filter(|(n, _)| n.as_str() != name)
            .map(|(_, f)| f.data.len() as u64)
            .sum();
        if let Some(quota) = quota.filter(|q| used + data.len() as u64 > *q) {
            // The temporary file did not fit: the old content stays.
            return Err(StorageError::Full {
                name: name.to_owned(),
                used_bytes: used,
                quota_bytes: quota,
            });
        }
        files.insert(
            name.to_owned(),
            MemFile {
                data: data.to_vec(),
                synced_len: data.len(),
                synced_exists: true,
            },
        );
        Ok(())
    }

    fn list(&self) -> Result<Vec<String>, StorageError> {
        let files = self.files.lock().expect("storage lock poisoned");
        Ok(files.keys().cloned().collect())
    }

    fn remove(&self, name: &str) -> Result<(), StorageError> {
        check_name(name)?;
        self.operate(name)?;
        self.files
            .lock()
            .expect("storage lock poisoned")
            .remove(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(storage: &dyn Storage) {
        assert_eq!(storage.append("a.log", b"hello").unwrap(), 0);
        assert_eq!(storage.append("a.log", b" world").unwrap(), 5);
        storage.sync("a.log").unwrap();
        assert_eq!(storage.read_at("a.log", 6, 5).unwrap(), b"world");
        assert!(storage.read_at("a.log", 8, 5).is_err());
        storage.write_atomic("ref", b"one").unwrap();
        storage.write_atomic("ref", b"two").unwrap();
        assert_eq!(storage.read_all("ref").unwrap(), b"two");
        assert_eq!(storage.list().unwrap(), vec!["a.log", "ref"]);
        storage.truncate("a.log", 5).unwrap();
        assert_eq!(storage.read_all("a.log").unwrap(), b"hello");
        storage.remove("ref").unwrap();
        storage.remove("ref").unwrap();
        assert_eq!(storage.len("ref").unwrap(), None);
        assert!(matches!(
            storage.append("../x", b""),
            Err(StorageError::InvalidName { .. })
        ));
    }

    #[test]
    fn fs_storage_basics() {
        let dir = tempfile::tempdir().unwrap();
        exercise(&FsStorage::open(dir.path()).unwrap());
    }

    #[test]
    fn fs_storage_syncs_the_directory_once_per_created_file() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::open(dir.path()).unwrap();
        storage.append("journal", b"one").unwrap();
        storage.sync("journal").unwrap();
        assert_eq!(storage.dir_syncs(), 1, "a new file's entry is synced");
        for _ in 0..5 {
            storage.append("journal", b"more").unwrap();
            storage.sync("journal").unwrap();
        }
        assert_eq!(storage.dir_syncs(), 1, "appends leave the directory alone");
        storage.remove("journal").unwrap();
        assert_eq!(storage.dir_syncs(), 2);
        storage.append("journal", b"again").unwrap();
        storage.sync("journal").unwrap();
        assert_eq!(
            storage.dir_syncs(),
            3,
            "a re-created file's entry is synced"
        );
        storage.write_atomic("ref", b"x").unwrap();
        assert_eq!(storage.dir_syncs(), 4);
        storage.append("ref", b"y").unwrap();
        storage.sync("ref").unwrap();
        assert_eq!(storage.dir_syncs(), 4, "the rename's sync made it durable");
        // A new value (a restart) does not trust entries it did not sync.
        let reopened = FsStorage::open(dir.path()).unwrap();
        reopened.append("journal", b"!").unwrap();
        reopened.sync("journal").unwrap();
        assert_eq!(reopened.dir_syncs(), 1);
        assert_eq!(reopened.read_all("journal").unwrap(), b"again!");
    }

    #[test]
    fn mem_storage_basics() {
        exercise(&MemStorage::new());
    }

    #[test]
    fn mem_crash_drops_unsynced_bytes_and_files() {
        let storage = MemStorage::new();
        storage.append("log", b"durable").unwrap();
        storage.sync("log").unwrap();
        storage.append("log", b"-volatile").unwrap();
        storage.append("new", b"never synced").unwrap();
        storage.crash(None);
        assert_eq!(storage.read_all("log").unwrap(), b"durable");
        assert_eq!(storage.len("new").unwrap(), None);
    }

    #[test]
    fn mem_full_disk_writes_what_fits_then_refuses() {
        let storage = MemStorage::new();
        storage.set_quota(Some(10));
        storage.append("log", b"0123456").unwrap();
        let error = storage.append("log", b"789abc").unwrap_err();
        assert!(
            matches!(
                error,
                StorageError::Full {
                    used_bytes: 10,
                    quota_bytes: 10,
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(storage.read_all("log").unwrap(), b"0123456789");
        assert!(storage.write_atomic("ref", b"x").is_err());
        storage.set_quota(None);
        assert_eq!(storage.append("log", b"d").unwrap(), 10);
    }

    #[test]
    fn mem_device_goes_away_at_an_exact_operation() {
        let storage = MemStorage::new();
        storage.fail_after(2);
        storage.append("log", b"a").unwrap();
        storage.sync("log").unwrap();
        assert!(matches!(
            storage.append("log", b"b"),
            Err(StorageError::Gone { .. })
        ));
        assert!(storage.is_gone() && storage.sync("log").is_err());
        storage.crash(None);
        assert!(!storage.is_gone());
        assert_eq!(storage.read_all("log").unwrap(), b"a");
        assert_eq!(storage.syncs(), 1);
    }

    #[test]
    fn mem_crash_with_seed_tears_the_tail() {
        let mut lens = std::collections::BTreeSet::new();
        for seed in 0..32 {
            let storage = MemStorage::new();
            storage.append("log", b"durable").unwrap();
            storage.sync("log").unwrap();
            storage.append("log", b"0123456789").unwrap();
            storage.crash(Some(seed));
            let data = storage.read_all("log").unwrap();
            assert!(data.starts_with(b"durable") && data.len() <= 17);
            lens.insert(data.len());
        }
        assert!(lens.len() > 3, "torn lengths vary with the seed: {lens:?}");
    }
}
