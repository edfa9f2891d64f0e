//! Entry points for the fuzz targets in `fuzz/` and the corpus replay
//! test: every decoder of bytes from a peer or a disk, none may panic.

use std::sync::Arc;

use crate::replication::wire::{decode_message, encode_message};
use crate::replication::{ReplicationConfig, ReplicationSecondary};
use crate::storage::{MemStorage, Storage};
use crate::store::Store;

/// A replication frame: decodes or errors; what decodes re-encodes to the
/// same message.
pub fn fuzz_wire(data: &[u8]) {
    if let Ok(Some((message, used))) = decode_message(data) {
        assert!(used <= data.len());
        let again = encode_message(&message);
        let (decoded, _) = decode_message(&again)
            .expect("re-encoded frame decodes")
            .expect("complete");
        assert_eq!(decoded, message);
    }
}

/// Arbitrary bytes as the primary's stream into a fresh secondary.
pub fn fuzz_secondary(data: &[u8]) {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let Ok((mut store, _)) = Store::open(storage) else {
        return;
    };
    let mut machine = ReplicationSecondary::new(ReplicationConfig::new(2));
    let now = ironroot_net::Instant::ZERO;
    machine.handle_connected(now, &store);
    for part in data.chunks(97) {
        machine.handle_bytes(now, &mut store, part);
    }
    while machine.poll_transmit().is_some() {}
    while machine.poll_event().is_some() {}
}

/// Arbitrary bytes as a journal segment, a pack segment and a snapshot:
/// opening recovers or errors, never panics.
pub fn fuzz_disk(data: &[u8]) {
    let mem = MemStorage::new();
    let (journal, rest) = data.split_at(data.len() / 2);
    let (pack, snapshot) = rest.split_at(rest.len() / 2);
    for (name, bytes) in [
        ("journal-0000000000000001", journal),
        ("pack-00000001", pack),
        ("snapshot", snapshot),
    ] {
        if !bytes.is_empty() {
            mem.write_atomic(name, bytes).expect("in-memory write");
        }
    }
    if let Ok((store, _)) = Store::open(Arc::new(mem)) {
        for id in store.objects().ids().copied().collect::<Vec<_>>() {
            let _ = store.objects().children(&id);
        }
    }
}

/// Arbitrary bytes as a tar archive to import: a result or an error.
pub fn fuzz_tar(data: &[u8]) {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let Ok((mut objects, _)) = crate::objects::ObjectStore::open(storage) else {
        return;
    };
    let _ = crate::tarball::import_tar(&mut objects, data);
}
