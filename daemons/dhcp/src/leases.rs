//! The dynamic pool: which address belongs to which client, and until when.
//!
//! The invariant everything here protects: an address is never held by two
//! clients at once (offered, bound or quarantined). Expiry is lazy: an entry
//! whose deadline has passed is free, whatever its state says.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironroot_net::Instant;

use crate::wire::ClientKey;

/// What a lease entry is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// OFFERed, held for the client until `until`.
    Offered { until: Instant },
    /// ACKed (or about to be, once the journal says so).
    Bound { expires: Instant },
    /// Free, but remembered so the client gets the same address again.
    Released,
    /// DECLINEd: someone else uses it; nobody gets it until `until`.
    Declined { until: Instant },
}

/// One address in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub client: Option<ClientKey>,
    pub state: LeaseState,
}

impl Lease {
    /// Whether the address is taken at `now`.
    pub fn is_active(&self, now: Instant) -> bool {
        match self.state {
            LeaseState::Offered { until } | LeaseState::Declined { until } => now < until,
            LeaseState::Bound { expires } => now < expires,
            LeaseState::Released => false,
        }
    }
}

/// Why the pool could not give an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("no free address in the pool")]
    Exhausted,
    #[error("address {ip} is not in the pool")]
    OutOfRange { ip: Ipv4Addr },
    #[error("address {ip} is held by another client")]
    Taken { ip: Ipv4Addr },
    #[error("lease table is full ({leases_max} entries)")]
    TableFull { leases_max: usize },
}

/// Address range plus lease table.
#[derive(Clone, Debug)]
pub struct Pool {
    start: u32,
    end: u32,
    leases: BTreeMap<Ipv4Addr, Lease>,
    by_client: BTreeMap<ClientKey, Ipv4Addr>,
    /// Where the scan for never-used addresses resumes.
    cursor: u32,
    leases_max: usize,
    /// The last scan found no never-used address and no entry has left the
    /// table since: skip the O(range) scan (an exhausted pool must not make
    /// every DISCOVER cost a full sweep).
    fresh_exhausted: bool,
    /// The last search for a lapsed entry found none; until this instant
    /// (the earliest deadline it saw) or a release, none can exist.
    reuse_blocked_until: Option<Instant>,
}

impl Pool {
    /// A pool over `start..=end` (validated by the config).
    pub fn new(start: Ipv4Addr, end: Ipv4Addr, leases_max: usize) -> Pool {
        assert!(u32::from(start) <= u32::from(end), "pool range reversed");
        assert!(leases_max > 0, "leases_max is zero");
        Pool {
            start: u32::from(start),
            end: u32::from(end),
            leases: BTreeMap::new(),
            by_client: BTreeMap::new(),
            cursor: u32::from(start),
            leases_max,
            fresh_exhausted: false,
            reuse_blocked_until: None,
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.start..=self.end).contains(&u32::from(ip))
    }

    /// Addresses in the range.
    pub fn size(&self) -> u64 {
        u64::from(self.end - self.start) + 1
    }

    /// Entries offered, bound or quarantined at `now`.
    pub fn in_use(&self, now: Instant) -> usize {
        self.leases
            .values()
            .filter(|lease| lease.is_active(now))
            .count()
    }

    pub fn lease(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.leases.get(&ip)
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// The address last associated with `client`, active or not.
    pub fn address_of(&self, client: &ClientKey) -> Option<Ipv4Addr> {
        self.by_client.get(client).copied()
    }

    /// Who holds `ip` at `now`.
    pub fn holder(&self, ip: Ipv4Addr, now: Instant) -> Option<&ClientKey> {
        let lease = self.leases.get(&ip)?;
        if lease.is_active(now) {
            lease.client.as_ref()
        } else {
            None
        }
    }

    /// Whether `client` may take `ip` at `now`.
    fn available_to(&self, ip: Ipv4Addr, client: &ClientKey, now: Instant) -> bool {
        match self.leases.get(&ip) {
            None => true,
            Some(lease) if lease.client.as_ref() == Some(client) => {
                !matches!(lease.state, LeaseState::Declined { .. }) || !lease.is_active(now)
            }
            Some(lease) => !lease.is_active(now),
        }
    }

    /// Choose an address for a DISCOVER (RFC 2131 §4.3.1 order: the client's
    /// current or previous address, the requested one, a never-used one, then
    /// the oldest free one) and hold it until `hold_until`.
    pub fn offer(
        &mut self,
        now: Instant,
        client: &ClientKey,
        requested: Option<Ipv4Addr>,
        hold_until: Instant,
        excluded: &dyn Fn(Ipv4Addr) -> bool,
    ) -> Result<Ipv4Addr, PoolError> {
        let usable = |pool: &Pool, ip: Ipv4Addr| {
            pool.contains(ip) && !excluded(ip) && pool.available_to(ip, client, now)
        };
        let mut choice = self.address_of(client).filter(|ip| usable(self, *ip));
        if choice.is_none() {
            choice = requested.filter(|ip| {
                usable(self, *ip)
                    && self
                        .leases
                        .get(ip)
                        .is_none_or(|lease| lease.client.is_none())
            });
        }
        if choice.is_none() && !self.fresh_exhausted {
            choice = self.scan_fresh(excluded);
            self.fresh_exhausted = choice.is_none();
        }
        if choice.is_none() && self.reuse_blocked_until.is_none_or(|until| now >= until) {
            choice = self.find_lapsed(now, excluded);
        }
        let ip = choice.ok_or(PoolError::Exhausted)?;
        let state = match self.leases.get(&ip) {
            // Re-offering to the holder of a bound lease must not shorten it.
            Some(lease) if lease.client.as_ref() == Some(client) && lease.is_active(now) => {
                lease.state
            }
            _ => LeaseState::Offered { until: hold_until },
        };
        self.assign(now, ip, client, state)?;
        Ok(ip)
    }

    /// The first entry free at `now`; if there is none, block further
    /// searches until the earliest deadline in the table.
    fn find_lapsed(
        &mut self,
        now: Instant,
        excluded: &dyn Fn(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        let mut earliest: Option<Instant> = None;
        for (ip, lease) in &self.leases {
            if !lease.is_active(now) {
                if !excluded(*ip) {
                    self.reuse_blocked_until = None;
                    return Some(*ip);
                }
                continue;
            }
            let deadline = match lease.state {
                LeaseState::Offered { until } | LeaseState::Declined { until } => until,
                LeaseState::Bound { expires } => expires,
                LeaseState::Released => continue,
            };
            earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
        }
        self.reuse_blocked_until = Some(earliest.unwrap_or(Instant::from_origin(Duration::MAX)));
        None
    }

    /// Something became free before its deadline: searches may succeed.
    fn unblock(&mut self) {
        self.reuse_blocked_until = None;
    }

    /// A never-used address, scanning once around the range from the cursor.
    fn scan_fresh(&mut self, excluded: &dyn Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
        let size = u64::from(self.end - self.start) + 1;
        for _ in 0..size {
            let ip = Ipv4Addr::from(self.cursor);
            self.cursor = if self.cursor >= self.end {
                self.start
            } else {
                self.cursor + 1
            };
            if !self.leases.contains_key(&ip) && !excluded(ip) {
                return Some(ip);
            }
        }
        None
    }

    /// Bind `ip` to `client` until `expires` (REQUEST). Fails if another
    /// client holds it.
    pub fn bind(
        &mut self,
        now: Instant,
        client: &ClientKey,
        ip: Ipv4Addr,
        expires: Instant,
    ) -> Result<(), PoolError> {
        if !self.contains(ip) {
            return Err(PoolError::OutOfRange { ip });
        }
        if !self.available_to(ip, client, now) {
            return Err(PoolError::Taken { ip });
        }
        self.assign(now, ip, client, LeaseState::Bound { expires })
    }

    /// Put `ip` in `state` for `client`, dropping the client's other address
    /// (one address per client) and the previous owner's memory of this one.
    fn assign(
        &mut self,
        now: Instant,
        ip: Ipv4Addr,
        client: &ClientKey,
        state: LeaseState,
    ) -> Result<(), PoolError> {
        if !self.leases.contains_key(&ip) && self.leases.len() >= self.leases_max {
            self.evict_one(now, ip)?;
        }
        if let Some(old_ip) = self.by_client.get(client).copied() {
            if old_ip != ip {
                if let Some(old) = self.leases.get_mut(&old_ip) {
                    old.state = LeaseState::Released;
                    old.client = None;
                    self.reuse_blocked_until = None;
                }
            }
        }
        let previous = self.leases.insert(
            ip,
            Lease {
                client: Some(client.clone()),
                state,
            },
        );
        if let Some(previous_client) = previous.and_then(|lease| lease.client) {
            if previous_client != *client {
                self.by_client.remove(&previous_client);
            }
        }
        self.by_client.insert(client.clone(), ip);
        Ok(())
    }

    /// Make room by forgetting one inactive entry other than `keep`.
    fn evict_one(&mut self, now: Instant, keep: Ipv4Addr) -> Result<(), PoolError> {
        let victim = self
            .leases
            .iter()
            .find(|(ip, lease)| **ip != keep && !lease.is_active(now))
            .map(|(ip, _)| *ip)
            .ok_or(PoolError::TableFull {
                leases_max: self.leases_max,
            })?;
        if let Some(client) = self.leases.remove(&victim).and_then(|lease| lease.client) {
            self.by_client.remove(&client);
        }
        self.fresh_exhausted = false;
        Ok(())
    }

    /// RELEASE: the client gives `ip` back. Returns whether it held it.
    pub fn release(&mut self, client: &ClientKey, ip: Ipv4Addr) -> bool {
        match self.leases.get_mut(&ip) {
            Some(lease) if lease.client.as_ref() == Some(client) => {
                lease.state = LeaseState::Released;
                self.reuse_blocked_until = None;
                true
            }
            _ => false,
        }
    }

    /// The client chose another server's offer: free what we offered.
    pub fn withdraw_offer(&mut self, client: &ClientKey) {
        if let Some(ip) = self.address_of(client) {
            if let Some(lease) = self.leases.get_mut(&ip) {
                if matches!(lease.state, LeaseState::Offered { .. }) {
                    lease.state = LeaseState::Released;
                    self.reuse_blocked_until = None;
                }
            }
        }
    }

    /// DECLINE: `ip` is in use by someone we do not know; keep everybody off
    /// it until `until`. Returns whether the client held it.
    pub fn decline(&mut self, client: &ClientKey, ip: Ipv4Addr, until: Instant) -> bool {
        let held =
            matches!(self.leases.get(&ip), Some(lease) if lease.client.as_ref() == Some(client));
        if held {
            self.by_client.remove(client);
            self.leases.insert(
                ip,
                Lease {
                    client: None,
                    state: LeaseState::Declined { until },
                },
            );
        }
        held
    }

    /// Replay one journal record (standby taking over, or restart).
    pub fn restore(&mut self, now: Instant, ip: Ipv4Addr, client: &ClientKey, state: LeaseState) {
        if !self.contains(ip) {
            return;
        }
        self.unblock();
        match state {
            LeaseState::Declined { .. } => {
                if !self.leases.contains_key(&ip)
                    && self.leases.len() >= self.leases_max
                    && self.evict_one(now, ip).is_err()
                {
                    return;
                }
                let previous = self.leases.insert(
                    ip,
                    Lease {
                        client: None,
                        state,
                    },
                );
                if let Some(previous_client) = previous.and_then(|lease| lease.client) {
                    self.by_client.remove(&previous_client);
                }
            }
            _ => {
                // A full table drops the record: the address then looks free,
                // which only the journal's own bound (leases_max) prevents.
                let _ = self.assign(now, ip, client, state);
            }
        }
    }

    /// Forget entries inactive at `now` beyond what is needed; returns how
    /// many were dropped. Keeps released entries (address affinity).
    pub fn purge_expired(&mut self, now: Instant) -> usize {
        let stale: Vec<Ipv4Addr> = self
            .leases
            .iter()
            .filter(|(_, lease)| {
                !lease.is_active(now) && !matches!(lease.state, LeaseState::Released)
            })
            .map(|(ip, _)| *ip)
            .collect();
        for ip in &stale {
            if let Some(lease) = self.leases.get_mut(ip) {
                lease.state = LeaseState::Released;
                if lease.client.is_none() {
                    self.leases.remove(ip);
                    self.fresh_exhausted = false;
                }
            }
        }
        stale.len()
    }

    /// Our own invariants; called after every operation in tests.
    pub fn check_invariants(&self) {
        assert!(
            self.leases.len() <= self.leases_max,
            "lease table over its bound"
        );
        for (client, ip) in &self.by_client {
            let lease = self.leases.get(ip);
            assert!(
                lease.is_some_and(|lease| lease.client.as_ref() == Some(client)),
                "by_client points {client:?} at {ip} which it does not hold"
            );
        }
        for (ip, lease) in &self.leases {
            assert!(self.contains(*ip), "{ip} outside the pool");
            if let Some(client) = &lease.client {
                assert_eq!(
                    self.by_client.get(client),
                    Some(ip),
                    "{client:?} has two addresses"
                );
            }
        }
    }
}

/// What a journal record says about an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseRecordKind {
    Bound,
    Released,
    Declined,
}

/// One lease change, as the journal stores it. Times are wall-clock seconds:
/// the standby's monotonic clock has another origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub ip: Ipv4Addr,
    pub client: ClientKey,
    pub kind: LeaseRecordKind,
    /// End of the lease (Bound) or quarantine (Declined); 0 for Released.
    pub until_unix_secs: u64,
}

/// Identifies one group-committed write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseWriteId(pub u64);

/// A batch of records that must be durable before the ACKs it holds go out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseWrite {
    pub id: LeaseWriteId,
    pub records: Vec<LeaseRecord>,
}

/// Why a lease write failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseLogError {
    #[error("journal refused the write: peer not reachable and not known outdated")]
    NotReplicated,
    #[error("journal I/O failed: {kind:?}")]
    Io { kind: std::io::ErrorKind },
    #[error("this node's journal is not the primary")]
    NotPrimary,
    #[error("the journal refused the records (a limit of the lease table)")]
    Refused,
}

/// Where leases are made durable (the store's replicated journal in
/// production). `append` returns once the batch is durable on both nodes.
pub trait LeaseLog: Send + Sync + 'static {
    fn append(&self, write: LeaseWrite) -> impl Future<Output = Result<(), LeaseLogError>> + Send;
    /// Every record so far, oldest first, to rebuild the table.
    fn records(&self) -> Vec<LeaseRecord>;
}

/// A lease log in memory (tests, single-node setups without a store). It
/// keeps the latest record of each address, in append order, so its size is
/// bounded by the pool.
#[derive(Clone, Debug, Default)]
pub struct MemoryLeaseLog {
    inner: Arc<Mutex<MemoryLeaseLogInner>>,
}

#[derive(Debug, Default)]
struct MemoryLeaseLogInner {
    /// ip -> (append sequence number, latest record)
    latest: BTreeMap<Ipv4Addr, (u64, LeaseRecord)>,
    appended: u64,
    writes: u64,
}

impl MemoryLeaseLog {
    /// How many batches were appended (group-commit tests).
    pub fn writes(&self) -> u64 {
        self.inner.lock().map(|inner| inner.writes).unwrap_or(0)
    }
}

impl LeaseLog for MemoryLeaseLog {
    fn append(&self, write: LeaseWrite) -> impl Future<Output = Result<(), LeaseLogError>> + Send {
        let result = match self.inner.lock() {
            Ok(mut inner) => {
                for record in write.records {
                    inner.appended += 1;
                    let seq = inner.appended;
                    inner.latest.insert(record.ip, (seq, record));
                }
                inner.writes += 1;
                Ok(())
            }
            Err(_) => Err(LeaseLogError::Io {
                kind: std::io::ErrorKind::Other,
            }),
        };
        std::future::ready(result)
    }

    fn records(&self) -> Vec<LeaseRecord> {
        let Ok(inner) = self.inner.lock() else {
            return Vec::new();
        };
        let mut records: Vec<&(u64, LeaseRecord)> = inner.latest.values().collect();
        records.sort_by_key(|(seq, _)| *seq);
        records
            .into_iter()
            .map(|(_, record)| record.clone())
            .collect()
    }
}

/// `now + secs`, saturating.
pub(crate) fn after_secs(now: Instant, secs: u32) -> Instant {
    now + Duration::from_secs(u64::from(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ClientKey {
        ClientKey(vec![1, 2, 0, 0, 0, 0, n])
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    const NONE: &dyn Fn(Ipv4Addr) -> bool = &|_| false;

    #[test]
    fn full_table_evicts_only_inactive_entries() {
        let mut pool = Pool::new(ip(100), ip(110), 2);
        let t0 = Instant::ZERO;
        let hold = Instant::from_millis(10_000);
        assert_eq!(pool.offer(t0, &key(1), None, hold, NONE), Ok(ip(100)));
        assert_eq!(pool.offer(t0, &key(2), None, hold, NONE), Ok(ip(101)));
        // Both entries active: the third client cannot be tracked.
        assert_eq!(
            pool.offer(t0, &key(3), None, hold, NONE),
            Err(PoolError::TableFull { leases_max: 2 })
        );
        // Once the first offer lapses its entry makes room.
        let later = Instant::from_millis(20_000);
        let offered = pool.offer(later, &key(3), None, Instant::from_millis(30_000), NONE);
        assert!(offered.is_ok());
        assert_eq!(pool.len(), 2);
        pool.check_invariants();
    }

    #[test]
    fn one_address_per_client() {
        let mut pool = Pool::new(ip(100), ip(110), 16);
        let t0 = Instant::ZERO;
        let end = Instant::from_millis(600_000);
        pool.bind(t0, &key(1), ip(100), end).expect("bind");
        pool.bind(t0, &key(1), ip(105), end).expect("move");
        assert_eq!(pool.holder(ip(100), t0), None);
        assert_eq!(pool.holder(ip(105), t0), Some(&key(1)));
        assert_eq!(
            pool.bind(t0, &key(2), ip(105), end),
            Err(PoolError::Taken { ip: ip(105) })
        );
        assert_eq!(
            pool.bind(t0, &key(2), ip(99), end),
            Err(PoolError::OutOfRange { ip: ip(99) })
        );
        pool.check_invariants();
    }

    #[test]
    fn restore_replays_bound_released_and_declined() {
        let mut pool = Pool::new(ip(100), ip(110), 16);
        let t0 = Instant::ZERO;
        let end = Instant::from_millis(600_000);
        pool.restore(t0, ip(100), &key(1), LeaseState::Bound { expires: end });
        pool.restore(t0, ip(101), &key(2), LeaseState::Bound { expires: end });
        pool.restore(t0, ip(101), &key(2), LeaseState::Released);
        pool.restore(t0, ip(102), &key(3), LeaseState::Declined { until: end });
        pool.restore(t0, ip(200), &key(4), LeaseState::Bound { expires: end });
        assert_eq!(pool.holder(ip(100), t0), Some(&key(1)));
        assert_eq!(pool.holder(ip(101), t0), None);
        assert!(pool.lease(ip(102)).is_some_and(|lease| lease.is_active(t0)));
        assert!(
            pool.lease(ip(200)).is_none(),
            "outside the range is ignored"
        );
        pool.check_invariants();
    }
}
