//! What the server did and dropped, for metrics: every datagram that does
//! not get a reply is counted under the reason why.

use crate::wire::DecodeError;

/// Plain counters, read by the daemon's metrics endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub received: u64,
    /// Shorter than the header or an option running past the end.
    pub dropped_truncated: u64,
    /// Decodable length but not a DHCP request we can use (bad cookie, op,
    /// hlen, message type...).
    pub dropped_malformed: u64,
    pub dropped_too_long: u64,
    /// Relayed from a giaddr outside the VIP's subnet.
    pub ignored_foreign_subnet: u64,
    /// No reservation and no pool for this client.
    pub ignored_unknown_client: u64,
    /// REQUEST/DECLINE/RELEASE naming another server (option 54).
    pub ignored_other_server: u64,
    /// A request missing what its message type needs (REQUEST without
    /// option 50 or ciaddr, DECLINE without option 50...).
    pub ignored_incomplete: u64,
    /// proxyDHCP: not a PXE client, or a message type a proxy ignores.
    pub ignored_by_proxy: u64,
    pub discovers: u64,
    pub requests: u64,
    pub declines: u64,
    pub releases: u64,
    pub informs: u64,
    pub offers: u64,
    pub acks: u64,
    pub naks: u64,
    /// DECLINE of a reserved address: an operator must look at it.
    pub declines_of_reserved: u64,
    pub pool_exhausted: u64,
    pub lease_table_full: u64,
    pub pending_acks_full: u64,
    pub transmits_full: u64,
    pub reply_too_long: u64,
    pub lease_writes: u64,
    pub lease_records: u64,
    pub lease_write_failures: u64,
    /// ACKs dropped because their lease write failed.
    pub acks_dropped_unwritten: u64,
    /// ACKs dropped because their write outlasted `ack_delay_ms_max`.
    pub acks_dropped_late: u64,
    /// ACKs dropped because the client released or declined the address
    /// before the write completed.
    pub acks_dropped_stale: u64,
    /// Replies the socket refused.
    pub send_failures: u64,
}

impl Counters {
    /// Count a datagram the decoder rejected.
    pub fn count_decode_error(&mut self, error: &DecodeError) {
        match error {
            DecodeError::Truncated { .. } | DecodeError::OptionTruncated { .. } => {
                self.dropped_truncated += 1;
            }
            DecodeError::TooLong { .. } => self.dropped_too_long += 1,
            DecodeError::NotRequest { .. }
            | DecodeError::BadHardwareLength { .. }
            | DecodeError::BadMagicCookie { .. }
            | DecodeError::NoMessageType
            | DecodeError::BadOptionLength { .. }
            | DecodeError::BadMessageType { .. }
            | DecodeError::Header => self.dropped_malformed += 1,
        }
    }

    /// Every datagram dropped before protocol logic.
    pub fn dropped_undecodable(&self) -> u64 {
        self.dropped_truncated + self.dropped_malformed + self.dropped_too_long
    }
}
