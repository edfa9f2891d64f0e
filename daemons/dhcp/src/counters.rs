//! What the server did and dropped, for metrics: every datagram that does
//! not get a reply is counted under the reason why. The server bumps
//! [`SharedCounters`] (atomics behind an `Arc`, so the daemon's metrics
//! endpoint reads them while the driver task owns the server, and they
//! survive a restart of the service); [`Counters`] is a copy at one moment.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::wire::DecodeError;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// The live counters, shared with whoever reports them.
        #[derive(Debug, Default)]
        pub struct SharedCounters { $($(#[$doc])* pub $name: AtomicU64,)* }

        /// A copy of [`SharedCounters`] at one moment.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct Counters { $($(#[$doc])* pub $name: u64,)* }

        impl SharedCounters {
            pub fn snapshot(&self) -> Counters {
                Counters { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters!(
    received,
    /// Shorter than the header or an option running past the end.
    dropped_truncated,
    /// Decodable length but not a DHCP request we can use (bad cookie, op,
    /// hlen, message type...).
    dropped_malformed,
    dropped_too_long,
    /// Relayed from a giaddr outside the VIP's subnet.
    ignored_foreign_subnet,
    /// No reservation and no pool for this client.
    ignored_unknown_client,
    /// REQUEST/DECLINE/RELEASE naming another server (option 54).
    ignored_other_server,
    /// A request missing what its message type needs (REQUEST without
    /// option 50 or ciaddr, DECLINE without option 50...).
    ignored_incomplete,
    /// proxyDHCP: not a PXE client, or a message type a proxy ignores.
    ignored_by_proxy,
    discovers,
    requests,
    declines,
    releases,
    informs,
    offers,
    /// ACKs built (pool ACKs then wait for their lease write).
    acks,
    naks,
    /// Replies handed to the socket.
    replies_sent,
    /// DECLINE of a reserved address: an operator must look at it.
    declines_of_reserved,
    pool_exhausted,
    lease_table_full,
    pending_acks_full,
    transmits_full,
    reply_too_long,
    lease_writes,
    lease_records,
    lease_write_failures,
    /// ACKs dropped because their lease write failed.
    acks_dropped_unwritten,
    /// ACKs dropped because their write outlasted `ack_delay_ms_max`.
    acks_dropped_late,
    /// ACKs dropped because the client released or declined the address
    /// before the write completed.
    acks_dropped_stale,
    /// Replies the socket refused.
    send_failures,
    /// Gauge: addresses in the dynamic pool (0 without one).
    pool_addresses,
    /// Gauge: pool addresses offered, bound or quarantined, as of the last
    /// tidy of the lease table (every [`crate::server::PURGE_INTERVAL`])
    /// or lease restore.
    pool_addresses_in_use,
);

/// Add one.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Add `value`.
pub(crate) fn add(counter: &AtomicU64, value: u64) {
    counter.fetch_add(value, Ordering::Relaxed);
}

impl SharedCounters {
    /// Count a datagram the decoder rejected.
    pub fn count_decode_error(&self, error: &DecodeError) {
        match error {
            DecodeError::Truncated { .. } | DecodeError::OptionTruncated { .. } => {
                bump(&self.dropped_truncated);
            }
            DecodeError::TooLong { .. } => bump(&self.dropped_too_long),
            DecodeError::NotRequest { .. }
            | DecodeError::BadHardwareLength { .. }
            | DecodeError::BadMagicCookie { .. }
            | DecodeError::NoMessageType
            | DecodeError::BadOptionLength { .. }
            | DecodeError::BadMessageType { .. }
            | DecodeError::Header => bump(&self.dropped_malformed),
        }
    }
}

impl Counters {
    /// Every datagram dropped before protocol logic.
    pub fn dropped_undecodable(&self) -> u64 {
        self.dropped_truncated + self.dropped_malformed + self.dropped_too_long
    }
}
