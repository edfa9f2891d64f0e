//! The DHCP server's view of the store's client registry: reservations
//! answered from a copy, so a DHCP datagram never waits for the store's
//! lock (held by the replication primary through a whole journal write).
//! It must never serve a copy older than the registry's last change once a
//! datagram has arrived after that change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ironroot_dhcp::{Registry, Reservation};
use ironroot_store::store::{RegistryVersion, Store};

use crate::seen::{Seen, Via, Who};
use crate::storefs::SharedStore;

/// DHCP reservations from the store's client registry, answered from a
/// copy. The store's lock is held by the replication primary for a whole
/// journal write (fdatasync and all); a DHCP server taking it for every
/// DISCOVER would wait for lease writes. The copy is rebuilt, under the
/// lock, only when the registry's version moved (see [`RegistryVersion`]),
/// i.e. when a client was added, changed or removed.
pub struct StoreRegistry {
    store: SharedStore,
    version: RegistryVersion,
    /// The version the copy was made at; None before the first refresh.
    copied_at: Option<u64>,
    by_mac: BTreeMap<[u8; 6], Reservation>,
    /// Every reserved address (the journal does not keep them unique).
    reserved: BTreeSet<Ipv4Addr>,
    /// Where a reserved client's lookup is noted, for `ironroot status`.
    seen: Option<Arc<Seen>>,
}

impl StoreRegistry {
    pub fn new(store: SharedStore) -> StoreRegistry {
        let version = lock_store(&store).registry_version();
        let mut registry = StoreRegistry {
            store,
            version,
            copied_at: None,
            by_mac: BTreeMap::new(),
            reserved: BTreeSet::new(),
            seen: None,
        };
        registry.refresh();
        registry
    }

    /// Note every client whose reservation is looked up in `seen`.
    pub fn noting(mut self, seen: Arc<Seen>) -> StoreRegistry {
        self.seen = Some(seen);
        self
    }
}

fn lock_store(store: &SharedStore) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry for StoreRegistry {
    fn refresh(&mut self) {
        if self.copied_at == Some(self.version.get()) {
            return;
        }
        let store = lock_store(&self.store);
        // Read under the lock: the store bumps it under the same lock, so
        // the copy is exactly this version.
        let version = self.version.get();
        let clients = &store.state().clients;
        self.by_mac = clients
            .iter()
            .map(|(mac, client)| {
                let reservation = Reservation {
                    mac: ironroot_dhcp::Mac(*mac),
                    name: client.name.clone(),
                    ip: Ipv4Addr::from(client.ipv4),
                    image: client.image.clone(),
                };
                (*mac, reservation)
            })
            .collect();
        drop(store);
        self.reserved = self.by_mac.values().map(|r| r.ip).collect();
        self.copied_at = Some(version);
    }

    fn lookup(&self, mac: &ironroot_dhcp::Mac) -> Option<Reservation> {
        let found = self.by_mac.get(&mac.0).cloned();
        if let (Some(_), Some(seen)) = (&found, &self.seen) {
            seen.note(Who::Mac(mac.0), Via::Dhcp);
        }
        found
    }

    fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        self.reserved.contains(&ip)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use ironroot_dhcp::Mac;
    use ironroot_store::storage::MemStorage;

    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 7];

    fn primary() -> SharedStore {
        let (mut store, _) = Store::open(Arc::new(MemStorage::new())).expect("open");
        store.promote(1, 0);
        Arc::new(Mutex::new(store))
    }

    fn upsert(store: &SharedStore, ipv4: [u8; 4]) {
        lock_store(store)
            .upsert_client(MAC, "n7", ipv4, "debian", None)
            .expect("upsert");
    }

    #[test]
    fn lookups_answer_from_the_copy_without_the_store_lock() {
        let store = primary();
        upsert(&store, [10, 0, 0, 7]);
        let mut registry = StoreRegistry::new(Arc::clone(&store));
        // A journal write in progress holds the lock; lookups still answer
        // (with the lock taken they would deadlock on this thread).
        let held = lock_store(&store);
        registry.refresh();
        let found = registry.lookup(&Mac(MAC)).expect("reserved");
        assert_eq!(
            (found.name.as_str(), found.ip),
            ("n7", Ipv4Addr::new(10, 0, 0, 7))
        );
        assert!(registry.is_reserved(Ipv4Addr::new(10, 0, 0, 7)));
        assert!(!registry.is_reserved(Ipv4Addr::new(10, 0, 0, 8)));
        drop(held);
    }

    #[test]
    fn a_registry_change_is_seen_at_the_next_refresh() {
        let store = primary();
        let mut registry = StoreRegistry::new(Arc::clone(&store));
        assert!(registry.lookup(&Mac(MAC)).is_none());
        upsert(&store, [10, 0, 0, 7]);
        registry.refresh();
        assert!(registry.is_reserved(Ipv4Addr::new(10, 0, 0, 7)));
        upsert(&store, [10, 0, 0, 9]);
        registry.refresh();
        assert!(!registry.is_reserved(Ipv4Addr::new(10, 0, 0, 7)), "moved");
        assert_eq!(
            registry.lookup(&Mac(MAC)).map(|r| r.ip),
            Some(Ipv4Addr::new(10, 0, 0, 9))
        );
        // Lease batches do not touch the registry: no rebuild.
        let copied_at = registry.copied_at;
        lock_store(&store)
            .record_pool_leases(Vec::new())
            .expect("empty batch");
        registry.refresh();
        assert_eq!(registry.copied_at, copied_at);
        lock_store(&store).remove_client(MAC).expect("remove");
        registry.refresh();
        assert!(registry.lookup(&Mac(MAC)).is_none());
        assert!(!registry.is_reserved(Ipv4Addr::new(10, 0, 0, 9)));
    }
}
