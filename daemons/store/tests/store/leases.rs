//! DHCP pool leases in the journal: version-2 records (client key, address,
//! expiry, state) in group commits, replayed in write order; version-1
//! records (by MAC) still replay; limits refuse an entry without changing
//! the state.

use std::sync::Arc;

use ironroot_store::journal::{
    Lease, PoolLease, PoolLeaseState, LEASES_PER_ENTRY_MAX, LEASE_CLIENT_LEN_MAX,
};
use ironroot_store::state::ApplyError;
use ironroot_store::storage::{MemStorage, Storage};
use ironroot_store::store::{Store, StoreError};

fn primary(storage: Arc<dyn Storage>) -> Store {
    let (mut store, _) = Store::open(storage).unwrap();
    store.promote(1, 0);
    store
}

fn lease(ip: u8, client: u8, state: PoolLeaseState, until: u64) -> PoolLease {
    PoolLease {
        ipv4: [10, 0, 0, ip],
        client: vec![1, 2, 0, 0, 0, 0, client],
        state,
        until_unix_secs: until,
    }
}

fn summary(store: &Store) -> Vec<([u8; 4], u8, PoolLeaseState)> {
    store
        .state()
        .pool_leases()
        .into_iter()
        .map(|l| (l.ipv4, l.client[6], l.state))
        .collect()
}

#[test]
fn pool_leases_replay_in_write_order_after_reopen() {
    use PoolLeaseState::*;
    let mem = Arc::new(MemStorage::new());
    let mut store = primary(mem.clone());
    // Version 1 first, as an old journal holds it.
    store
        .record_lease(
            [2, 0, 0, 0, 0, 9],
            Lease {
                ipv4: [10, 0, 0, 50],
                expires_unix_secs: 500,
            },
        )
        .unwrap();
    // One group commit: client 1 bound at .30, client 2 declines .31.
    store
        .record_pool_leases(vec![
            lease(30, 1, Bound, 1_000),
            lease(31, 2, Declined, 900),
        ])
        .unwrap();
    // Client 1 moves to a lower address: replay must end there, whatever
    // the address order.
    store
        .record_pool_leases(vec![lease(30, 1, Released, 0), lease(20, 1, Bound, 2_000)])
        .unwrap();
    let expected = vec![
        ([10, 0, 0, 50], 9, Bound),
        ([10, 0, 0, 31], 2, Declined),
        ([10, 0, 0, 30], 1, Released),
        ([10, 0, 0, 20], 1, Bound),
    ];
    assert_eq!(summary(&store), expected);
    let hash = store.state().content_hash();
    drop(store);
    let (reopened, report) = Store::open(mem.clone()).unwrap();
    assert_eq!(report.entries_replayed, 3);
    assert_eq!(reopened.state().content_hash(), hash);
    assert_eq!(summary(&reopened), expected);

    // Compaction writes a version-2 snapshot that keeps the order.
    let mut store = reopened;
    store.promote(1, 0);
    store.compact().unwrap();
    drop(store);
    let (reopened, report) = Store::open(mem).unwrap();
    assert_eq!(report.entries_replayed, 0);
    assert_eq!(summary(&reopened), expected);
}

#[test]
fn version_1_lease_keeps_one_address_per_mac() {
    let mut store = primary(Arc::new(MemStorage::new()));
    for ip in [5, 6] {
        store
            .record_lease(
                [2, 0, 0, 0, 0, 1],
                Lease {
                    ipv4: [10, 0, 0, ip],
                    expires_unix_secs: 99,
                },
            )
            .unwrap();
    }
    assert_eq!(
        summary(&store),
        vec![([10, 0, 0, 6], 1, PoolLeaseState::Bound)]
    );
}

#[test]
fn oversized_lease_entries_are_refused_and_change_nothing() {
    let mut store = primary(Arc::new(MemStorage::new()));
    store
        .record_pool_leases(vec![lease(1, 1, PoolLeaseState::Bound, 10)])
        .unwrap();
    let hash = store.state().content_hash();
    let mut long_key = lease(2, 2, PoolLeaseState::Bound, 10);
    long_key.client = vec![0; LEASE_CLIENT_LEN_MAX + 1];
    let refused = store.record_pool_leases(vec![long_key]);
    assert!(
        matches!(
            refused,
            Err(StoreError::Apply(ApplyError::LeaseClientTooLong { .. }))
        ),
        "{refused:?}"
    );
    let too_many: Vec<PoolLease> = (0..=LEASES_PER_ENTRY_MAX)
        .map(|i| lease((i % 250) as u8, 3, PoolLeaseState::Released, 0))
        .collect();
    let refused = store.record_pool_leases(too_many);
    assert!(
        matches!(
            refused,
            Err(StoreError::Apply(ApplyError::LeaseEntryTooLong { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(store.state().content_hash(), hash);
    assert_eq!(store.state().last_seq(), 1);
}

#[test]
fn registry_version_moves_with_client_changes_only() {
    use PoolLeaseState::*;
    let mem = Arc::new(MemStorage::new());
    let mut store = primary(mem.clone());
    let version = store.registry_version();
    let start = version.get();
    store
        .record_pool_leases(vec![lease(30, 1, Bound, 1_000)])
        .unwrap();
    assert_eq!(version.get(), start, "a lease batch is no registry change");
    let mac = [2, 0, 0, 0, 0, 7];
    store
        .upsert_client(mac, "n7", [10, 0, 0, 7], "debian", None)
        .unwrap();
    assert_eq!(version.get(), start + 1);
    store.remove_client(mac).unwrap();
    assert_eq!(version.get(), start + 2);
    // Replicated entries count the same on a secondary.
    let (mut secondary, _) = Store::open(Arc::new(MemStorage::new())).unwrap();
    let secondary_version = secondary.registry_version();
    let record = store
        .upsert_client(mac, "n7", [10, 0, 0, 7], "debian", None)
        .unwrap();
    let snapshot = store.snapshot();
    secondary.install_snapshot(&snapshot).unwrap();
    assert_eq!(secondary_version.get(), 1, "a snapshot may change anything");
    let next = store.remove_client(mac).unwrap();
    secondary.apply_replicated(&next).unwrap();
    assert_eq!(secondary_version.get(), 2);
    assert!(secondary.state().client_by_mac(&mac).is_none());
    // Rebuilding from disk keeps the handle and moves it on.
    assert!(store.truncate_after(record.seq).unwrap());
    assert_eq!(version.get(), start + 5);
    assert!(store.state().client_by_mac(&mac).is_some());
}
