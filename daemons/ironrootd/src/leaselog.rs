//! The DHCP pool's leases in the replicated journal: a [`LeaseLog`] whose
//! `append` is one journal entry written through the replication primary,
//! so it resolves only once the peer holds the batch durably (or the peer
//! is recorded Outdated), and the DHCP server sends the ACKs of that batch
//! only then. `records` reads the leases back from this node's store, which
//! is what a newly promoted node's DHCP server starts from.

use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ironroot_dhcp::{ClientKey, LeaseLog, LeaseLogError, LeaseRecord, LeaseRecordKind, LeaseWrite};
use ironroot_store::journal::{PoolLease, PoolLeaseState, LEASES_PER_ENTRY_MAX};
use ironroot_store::replication::driver::{PrimaryHandle, WriteError};
use ironroot_store::store::StoreError;

use crate::services::Replication;
use crate::storefs::SharedStore;

/// The replication primary's handle while this node is primary.
pub type PrimarySource = Arc<dyn Fn() -> Option<PrimaryHandle> + Send + Sync>;

/// Leases through the store of this node (see the module docs).
#[derive(Clone)]
pub struct StoreLeaseLog {
    store: SharedStore,
    primary: PrimarySource,
}

impl StoreLeaseLog {
    /// Through the node's running replication role.
    pub fn new(store: SharedStore, replication: Replication) -> StoreLeaseLog {
        StoreLeaseLog::with_primary(store, Arc::new(move || replication.primary()))
    }

    /// Through whatever `primary` returns (the simulator runs its own
    /// replication drivers).
    pub fn with_primary(store: SharedStore, primary: PrimarySource) -> StoreLeaseLog {
        StoreLeaseLog { store, primary }
    }
}

/// The journal's form of a lease record.
pub fn to_journal(record: LeaseRecord) -> PoolLease {
    PoolLease {
        ipv4: record.ip.octets(),
        client: record.client.0,
        state: match record.kind {
            LeaseRecordKind::Bound => PoolLeaseState::Bound,
            LeaseRecordKind::Released => PoolLeaseState::Released,
            LeaseRecordKind::Declined => PoolLeaseState::Declined,
        },
        until_unix_secs: record.until_unix_secs,
    }
}

/// The DHCP server's form of a journal lease.
pub fn from_journal(lease: &PoolLease) -> LeaseRecord {
    LeaseRecord {
        ip: Ipv4Addr::from(lease.ipv4),
        client: ClientKey(lease.client.clone()),
        kind: match lease.state {
            PoolLeaseState::Bound => LeaseRecordKind::Bound,
            PoolLeaseState::Released => LeaseRecordKind::Released,
            PoolLeaseState::Declined => LeaseRecordKind::Declined,
        },
        until_unix_secs: lease.until_unix_secs,
    }
}

fn log_error(error: WriteError) -> LeaseLogError {
    match error {
        WriteError::NotReplicated { .. } => LeaseLogError::NotReplicated,
        WriteError::DriverGone | WriteError::Store(StoreError::NotPrimary) => {
            LeaseLogError::NotPrimary
        }
        WriteError::Store(StoreError::Apply(_)) => LeaseLogError::Refused,
        WriteError::Store(other) => {
            tracing::warn!(error = %other, "lease entry not written");
            LeaseLogError::Io {
                kind: std::io::ErrorKind::Other,
            }
        }
    }
}

impl LeaseLog for StoreLeaseLog {
    fn append(&self, write: LeaseWrite) -> impl Future<Output = Result<(), LeaseLogError>> + Send {
        let primary = (self.primary)();
        let leases: Vec<PoolLease> = write.records.into_iter().map(to_journal).collect();
        async move {
            let primary = primary.ok_or(LeaseLogError::NotPrimary)?;
            if leases.len() > LEASES_PER_ENTRY_MAX {
                // The server's batch bound is validated below this; a
                // larger batch is our bug, refused rather than split.
                return Err(LeaseLogError::Refused);
            }
            primary
                .write(move |store| store.record_pool_leases(leases))
                .await
                .map(|_| ())
                .map_err(log_error)
        }
    }

    fn records(&self) -> Vec<LeaseRecord> {
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        store
            .state()
            .pool_leases()
            .into_iter()
            .map(from_journal)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_the_journal_form() {
        for (kind, state) in [
            (LeaseRecordKind::Bound, PoolLeaseState::Bound),
            (LeaseRecordKind::Released, PoolLeaseState::Released),
            (LeaseRecordKind::Declined, PoolLeaseState::Declined),
        ] {
            let record = LeaseRecord {
                ip: Ipv4Addr::new(10, 0, 0, 7),
                client: ClientKey(vec![0xff, 1, 2, 3]),
                kind,
                until_unix_secs: 1_800_000_123,
            };
            let journal = to_journal(record.clone());
            assert_eq!(journal.state, state);
            assert_eq!(journal.ipv4, [10, 0, 0, 7]);
            assert_eq!(from_journal(&journal), record);
        }
    }

    #[test]
    fn write_errors_map_to_what_the_dhcp_server_counts() {
        assert_eq!(
            log_error(WriteError::NotReplicated { seq: 4 }),
            LeaseLogError::NotReplicated
        );
        assert_eq!(log_error(WriteError::DriverGone), LeaseLogError::NotPrimary);
        assert_eq!(
            log_error(WriteError::Store(StoreError::NotPrimary)),
            LeaseLogError::NotPrimary
        );
        let full = ironroot_store::state::ApplyError::TooManyLeases { max: 1 };
        assert_eq!(
            log_error(WriteError::Store(StoreError::Apply(full))),
            LeaseLogError::Refused
        );
    }
}
