//! The incarnation number: bumped and made durable at every start, so that a
//! restarted node's heartbeats (sequence back at 1) are told apart from
//! replays of its previous life.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Durable storage of the incarnation counter.
pub trait IncarnationStore: Send {
    /// Read the last value, add one, make the new value durable and return
    /// it. Must not return before the new value would survive a crash.
    fn bump(&mut self) -> io::Result<u64>;
}

/// A file holding the counter as decimal text; written to a temporary file,
/// fsynced, renamed over the old one and the directory fsynced.
#[derive(Clone, Debug)]
pub struct FileIncarnationStore {
    path: PathBuf,
}

impl FileIncarnationStore {
    pub fn new(path: impl Into<PathBuf>) -> FileIncarnationStore {
        FileIncarnationStore { path: path.into() }
    }

    fn read(&self) -> io::Result<u64> {
        match fs::read_to_string(&self.path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", self.path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }
}

impl IncarnationStore for FileIncarnationStore {
    fn bump(&mut self) -> io::Result<u64> {
        let next = self
            .read()?
            .checked_add(1)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "incarnation overflow"))?;
        let tmp = self.path.with_extension("tmp");
        {
            let mut file = fs::File::create(&tmp)?;
            writeln!(file, "{next}")?;
            file.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(next)
    }
}

/// In-memory counter; clones share it, so a simulated host keeps its value
/// across restarts of the daemon.
#[derive(Clone, Debug, Default)]
pub struct MemoryIncarnationStore {
    value: Arc<Mutex<u64>>,
}

impl MemoryIncarnationStore {
    pub fn new() -> MemoryIncarnationStore {
        MemoryIncarnationStore::default()
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        *self.value.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl IncarnationStore for MemoryIncarnationStore {
    fn bump(&mut self) -> io::Result<u64> {
        let mut value = self.value.lock().unwrap_or_else(|p| p.into_inner());
        *value = value
            .checked_add(1)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "incarnation overflow"))?;
        Ok(*value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_bumps_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("incarnation");
        let mut store = FileIncarnationStore::new(&path);
        assert_eq!(store.bump().expect("bump"), 1);
        assert_eq!(store.bump().expect("bump"), 2);
        let mut reopened = FileIncarnationStore::new(&path);
        assert_eq!(reopened.bump().expect("bump"), 3);
        assert_eq!(fs::read_to_string(&path).expect("read").trim(), "3");
    }

    #[test]
    fn file_store_refuses_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("incarnation");
        fs::write(&path, "not a number").expect("write");
        assert!(FileIncarnationStore::new(&path).bump().is_err());
    }

    #[test]
    fn memory_store_is_shared_by_clones() {
        let store = MemoryIncarnationStore::new();
        let mut first = store.clone();
        assert_eq!(first.bump().expect("bump"), 1);
        let mut second = store.clone();
        assert_eq!(second.bump().expect("bump"), 2);
        assert_eq!(store.get(), 2);
    }
}
