//! De-duplication of retransmitted calls while the first copy is still
//! being processed. Every procedure of a read-only server is idempotent, so
//! no reply cache is kept: a retransmission that arrives after the reply
//! was sent is simply answered again.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;

/// A call being processed: the same xid from the same address and port.
pub type CallKey = (SocketAddrV4, u32);

/// The set of calls in flight, bounded by `in_flight_max`.
#[derive(Debug)]
pub struct InFlight {
    in_flight_max: usize,
    calls: BTreeMap<CallKey, ()>,
}

/// What to do with an arriving call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Process it, then call [`InFlight::finish`].
    Process,
    /// A copy is being processed: drop this one.
    Duplicate,
    /// Too many calls in flight: drop it; the client retransmits.
    Full,
}

impl InFlight {
    pub fn new(in_flight_max: usize) -> InFlight {
        assert!(in_flight_max > 0);
        InFlight {
            in_flight_max,
            calls: BTreeMap::new(),
        }
    }

    pub fn begin(&mut self, key: CallKey) -> Admission {
        if self.calls.contains_key(&key) {
            return Admission::Duplicate;
        }
        if self.calls.len() >= self.in_flight_max {
            return Admission::Full;
        }
        self.calls.insert(key, ());
        Admission::Process
    }

    pub fn finish(&mut self, key: CallKey) {
        self.calls.remove(&key);
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_while_in_flight_then_accepted_again() {
        let peer: SocketAddrV4 = "127.0.0.1:900".parse().unwrap();
        let mut table = InFlight::new(2);
        assert_eq!(table.begin((peer, 1)), Admission::Process);
        assert_eq!(table.begin((peer, 1)), Admission::Duplicate);
        let other_port: SocketAddrV4 = "127.0.0.1:901".parse().unwrap();
        assert_eq!(table.begin((other_port, 1)), Admission::Process);
        assert_eq!(table.begin((peer, 2)), Admission::Full);
        table.finish((peer, 1));
        assert_eq!(table.begin((peer, 1)), Admission::Process);
        assert_eq!(table.len(), 2);
    }
}
