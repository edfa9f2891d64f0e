//! A full disk (ENOSPC after a partial write) on the in-memory storage:
//! failed writes report the error, leave no partial record in the middle of
//! a pack or journal segment, and the store reopens with every write that
//! succeeded and no damage.

use std::sync::Arc;

use ironroot_store::journal::Lease;
use ironroot_store::storage::{MemStorage, StorageError};
use ironroot_store::store::{Store, StoreError};

fn lease(store: &mut Store, i: u64) -> Result<u64, StoreError> {
    let mac = [2, 0, 0, 0, (i >> 8) as u8, i as u8];
    let lease = Lease {
        ipv4: [10, 0, (i >> 8) as u8, i as u8],
        expires_unix_secs: i,
    };
    store.record_lease(mac, lease).map(|r| r.seq)
}

#[test]
fn a_full_disk_fails_writes_cleanly_and_leaves_nothing_damaged() {
    for slack in [1u64, 17, 40, 75, 90, 130] {
        let mem = Arc::new(MemStorage::new());
        let (mut store, _) = Store::open(mem.clone()).unwrap();
        store.promote(1, 0);
        let mut done = Vec::new();
        for i in 0..5 {
            done.push(lease(&mut store, i).unwrap());
        }
        mem.set_quota(Some(mem.used_bytes() + slack));
        let mut failures = 0;
        for i in 5..10 {
            match lease(&mut store, i) {
                Ok(seq) => done.push(seq),
                Err(error) => {
                    failures += 1;
                    assert!(
                        error.to_string().contains("no space left"),
                        "a clear error: {error}"
                    );
                }
            }
        }
        assert!(failures > 0, "slack {slack}: the disk never filled");
        mem.set_quota(None);
        for i in 10..13 {
            done.push(lease(&mut store, i).unwrap());
        }
        let expected = store.state().content_hash();
        drop(store);
        mem.crash(None);
        let (store, report) = Store::open(mem.clone()).unwrap();
        assert_eq!(report.pack.corrupt_bytes, 0, "slack {slack}");
        assert_eq!(store.state().content_hash(), expected, "slack {slack}");
        assert_eq!(store.state().last_seq(), *done.last().unwrap());
    }
}

#[test]
fn the_full_error_names_the_file_and_the_quota() {
    let mem = MemStorage::new();
    mem.set_quota(Some(3));
    let error =
        ironroot_store::storage::Storage::append(&mem, "pack-00000001", b"abcd").unwrap_err();
    assert!(matches!(error, StorageError::Full { .. }));
    assert_eq!(
        error.to_string(),
        "no space left for \"pack-00000001\": 3 of 3 bytes used"
    );
}
