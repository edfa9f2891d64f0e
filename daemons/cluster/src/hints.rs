//! Takeover hints: the TCP connections the active node serves on the VIP,
//! sent to the standby so that, after it takes the VIP over, it can make
//! every client reset its connection at once instead of waiting out TCP's
//! retransmission backoff (a "tickle ACK", see
//! `ironroot_net::tokio_backend::tickle`).
//!
//! Why: a client whose server died mid-request retransmits on TCP's
//! exponential schedule (0.2, 0.6, 1.4, 3 s, ... after the loss). Only a
//! retransmission that reaches the new holder of the VIP is answered with
//! the RST that makes the client reconnect, so without a hint the stall is
//! the takeover time rounded up to the next retransmission: up to twice it.
//!
//! Layout (big endian): magic `IRH1`, version, cluster id (u32), sender node
//! id (u16), count (u16), `count` x (server IPv4, server port, client IPv4,
//! client port), then a 32-byte HMAC-SHA256 tag under the cluster key over
//! everything before it. A connection list larger than [`TUPLES_PER_PACKET_MAX`]
//! goes as several packets; the receiver ages entries out instead of
//! expecting complete sets.
//!
//! A replayed hint is harmless: the standby would reset connections that
//! no longer exist (the client answers with an RST of its own) or are its
//! own (its kernel answers the client's ACK normally). A forged one is
//! dropped by the tag check.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::time::Duration;

use crate::wire::{DecodeError, Key, NodeId, TAG_LEN};
use ironroot_net::Instant;

pub const MAGIC: [u8; 4] = *b"IRH1";
pub const VERSION: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 4 + 2 + 2;
const TUPLE_LEN: usize = 12;
/// Connections per packet at most: 1,213 bytes, below any Ethernet MTU.
pub const TUPLES_PER_PACKET_MAX: usize = 98;
/// No valid packet is longer; a receive buffer of this size is enough.
pub const PACKET_LEN_MAX: usize = HEADER_LEN + TUPLES_PER_PACKET_MAX * TUPLE_LEN + TAG_LEN;

/// One served TCP connection: the server's end (the VIP and a service
/// port) and the client's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Connection {
    pub server: SocketAddrV4,
    pub client: SocketAddrV4,
}

/// One hint packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    pub cluster_id: u32,
    pub sender: NodeId,
    pub connections: Vec<Connection>,
}

impl Hint {
    /// Serialize and append the tag. At most [`TUPLES_PER_PACKET_MAX`]
    /// connections are written (use [`encode_all`] for a longer list).
    pub fn encode(&self, key: &Key) -> Vec<u8> {
        let connections = &self.connections[..self.connections.len().min(TUPLES_PER_PACKET_MAX)];
        let mut out = Vec::with_capacity(HEADER_LEN + connections.len() * TUPLE_LEN + TAG_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.cluster_id.to_be_bytes());
        out.extend_from_slice(&self.sender.0.to_be_bytes());
        // Bounded by TUPLES_PER_PACKET_MAX above.
        out.extend_from_slice(&(connections.len() as u16).to_be_bytes());
        for c in connections {
            for end in [c.server, c.client] {
                out.extend_from_slice(&end.ip().octets());
                out.extend_from_slice(&end.port().to_be_bytes());
            }
        }
        out.extend_from_slice(&key.tag(&out));
        out
    }

    /// Verify the tag (constant time), then parse.
    pub fn decode(key: &Key, bytes: &[u8]) -> Result<Hint, DecodeError> {
        let body_len = bytes
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(DecodeError::Length(bytes.len()))?;
        let (signed, tag) = bytes.split_at(body_len);
        if !key.verify(signed, tag) {
            return Err(DecodeError::Forged);
        }
        Hint::parse_signed(signed)
    }

    /// Parse the part before the tag. Public so the fuzzer reaches the body
    /// without forging tags; never use it on untrusted input otherwise.
    pub fn parse_signed(bytes: &[u8]) -> Result<Hint, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::Length(bytes.len()));
        }
        let (header, body) = bytes.split_at(HEADER_LEN);
        if header[..4] != MAGIC || header[4] != VERSION {
            return Err(DecodeError::Magic);
        }
        let cluster_id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
        let sender = NodeId(u16::from_be_bytes([header[9], header[10]]));
        let count = usize::from(u16::from_be_bytes([header[11], header[12]]));
        if count > TUPLES_PER_PACKET_MAX {
            return Err(DecodeError::Field("count"));
        }
        if body.len() != count * TUPLE_LEN {
            return Err(DecodeError::Length(bytes.len()));
        }
        let end = |b: &[u8]| {
            SocketAddrV4::new(
                [b[0], b[1], b[2], b[3]].into(),
                u16::from_be_bytes([b[4], b[5]]),
            )
        };
        let connections = body
            .chunks_exact(TUPLE_LEN)
            .map(|t| Connection {
                server: end(&t[..6]),
                client: end(&t[6..]),
            })
            .collect();
        Ok(Hint {
            cluster_id,
            sender,
            connections,
        })
    }
}

/// `connections` as as many packets as it takes (none for an empty list).
pub fn encode_all(
    key: &Key,
    cluster_id: u32,
    sender: NodeId,
    connections: &[Connection],
) -> Vec<Vec<u8>> {
    connections
        .chunks(TUPLES_PER_PACKET_MAX)
        .map(|chunk| {
            Hint {
                cluster_id,
                sender,
                connections: chunk.to_vec(),
            }
            .encode(key)
        })
        .collect()
}

/// What the standby knows of the active's connections: each entry ages out
/// `ttl` after the last hint that named it; at most `capacity` entries (the
/// oldest go first).
#[derive(Debug)]
pub struct HintTable {
    seen: BTreeMap<Connection, Instant>,
    ttl: Duration,
    capacity: usize,
}

impl HintTable {
    pub fn new(ttl: Duration, capacity: usize) -> HintTable {
        HintTable {
            seen: BTreeMap::new(),
            ttl,
            capacity,
        }
    }

    /// Record the connections of one hint received at `now`.
    pub fn record(&mut self, now: Instant, connections: &[Connection]) {
        for c in connections {
            self.seen.insert(*c, now);
        }
        self.expire(now);
        while self.seen.len() > self.capacity {
            let Some(oldest) = self.seen.iter().min_by_key(|(_, at)| **at).map(|(c, _)| *c) else {
                break;
            };
            self.seen.remove(&oldest);
        }
    }

    /// The connections still fresh at `now`, served on `server_ip`.
    pub fn fresh(&mut self, now: Instant, server_ip: std::net::Ipv4Addr) -> Vec<Connection> {
        self.expire(now);
        self.seen
            .keys()
            .filter(|c| *c.server.ip() == server_ip)
            .copied()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.seen
            .retain(|_, at| now.saturating_duration_since(*at) < ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(b"hint-test-key".to_vec())
    }

    fn conn(client_port: u16) -> Connection {
        Connection {
            server: SocketAddrV4::new([10, 0, 0, 10].into(), 2049),
            client: SocketAddrV4::new([10, 0, 0, 77].into(), client_port),
        }
    }

    #[test]
    fn hints_round_trip_and_split_into_packets() {
        let connections: Vec<_> = (0..250).map(|i| conn(600 + i)).collect();
        let packets = encode_all(&key(), 7, NodeId(2), &connections);
        assert_eq!(packets.len(), 3);
        let mut decoded = Vec::new();
        for bytes in &packets {
            assert!(bytes.len() <= PACKET_LEN_MAX);
            let hint = Hint::decode(&key(), bytes).expect("decodes");
            assert_eq!((hint.cluster_id, hint.sender), (7, NodeId(2)));
            decoded.extend(hint.connections);
        }
        assert_eq!(decoded, connections);
        assert!(encode_all(&key(), 7, NodeId(2), &[]).is_empty());
    }

    #[test]
    fn forged_truncated_and_malformed_hints_are_refused() {
        let bytes = encode_all(&key(), 7, NodeId(2), &[conn(700), conn(701)]).remove(0);
        let other = Key::new(b"another key".to_vec());
        assert_eq!(Hint::decode(&other, &bytes), Err(DecodeError::Forged));
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert_eq!(Hint::decode(&key(), &flipped), Err(DecodeError::Forged));
        for len in 0..bytes.len() {
            assert!(Hint::decode(&key(), &bytes[..len]).is_err(), "length {len}");
        }
        let signed = &bytes[..bytes.len() - TAG_LEN];
        assert!(Hint::parse_signed(&signed[..signed.len() - 1]).is_err());
        let mut too_many = signed.to_vec();
        too_many[11..13].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            Hint::parse_signed(&too_many),
            Err(DecodeError::Field("count"))
        );
        let mut bad_magic = signed.to_vec();
        bad_magic[0] = b'X';
        assert_eq!(Hint::parse_signed(&bad_magic), Err(DecodeError::Magic));
    }

    #[test]
    fn the_table_ages_entries_out_and_stays_bounded() {
        let t0 = Instant::ZERO;
        let mut table = HintTable::new(Duration::from_secs(3), 4);
        table.record(t0, &[conn(1), conn(2)]);
        table.record(t0 + Duration::from_secs(2), &[conn(2), conn(3)]);
        let at = t0 + Duration::from_millis(3500);
        assert_eq!(
            table.fresh(at, [10, 0, 0, 10].into()),
            vec![conn(2), conn(3)]
        );
        assert!(table.fresh(at, [10, 0, 0, 11].into()).is_empty());
        table.record(at, &[conn(4), conn(5), conn(6)]);
        assert_eq!(table.len(), 4);
        assert_eq!(
            table.fresh(at, [10, 0, 0, 10].into()),
            vec![conn(3), conn(4), conn(5), conn(6)]
        );
        assert!(table
            .fresh(at + Duration::from_secs(10), [10, 0, 0, 10].into())
            .is_empty());
    }
}

#[cfg(test)]
mod corpus {
    use super::*;

    /// The key the fuzz target and its corpus use.
    const FUZZ_KEY: &[u8] = b"ironroot-fuzz-key-0123456789abcdef";

    fn corpus_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/hints")
    }

    fn samples() -> Vec<Vec<Connection>> {
        let conn = |i: u16| Connection {
            server: SocketAddrV4::new([192, 168, 50, 10].into(), 2049),
            client: SocketAddrV4::new([192, 168, 50, 100].into(), 700 + i),
        };
        vec![
            vec![],
            vec![conn(0)],
            (0..TUPLES_PER_PACKET_MAX as u16).map(conn).collect(),
        ]
    }

    /// Replays the committed fuzz corpus through the same functions the
    /// fuzz target calls: nothing panics, and the valid seeds still decode.
    #[test]
    fn fuzz_corpus_replays() {
        let key = Key::new(FUZZ_KEY.to_vec());
        let mut entries: Vec<_> = std::fs::read_dir(corpus_dir())
            .expect("corpus directory")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        assert!(entries.len() >= 6, "corpus too small: {}", entries.len());
        let mut valid = 0;
        for path in entries {
            let bytes = std::fs::read(&path).expect("read corpus entry");
            let decoded = Hint::decode(&key, &bytes);
            let _ = Hint::parse_signed(&bytes);
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("valid-"))
            {
                assert!(decoded.is_ok(), "{}: {decoded:?}", path.display());
                valid += 1;
            }
        }
        assert_eq!(valid, 3);
    }

    /// Regenerates the seed corpus:
    /// `cargo test -p ironroot-cluster -- --ignored write_hint_corpus`.
    #[test]
    #[ignore]
    fn write_hint_corpus() {
        let key = Key::new(FUZZ_KEY.to_vec());
        let dir = corpus_dir();
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (i, connections) in samples().into_iter().enumerate() {
            let hint = Hint {
                cluster_id: 99,
                sender: NodeId(1),
                connections,
            };
            let bytes = hint.encode(&key);
            std::fs::write(dir.join(format!("valid-{i}")), &bytes).expect("write");
            let mut forged = bytes.clone();
            let last = forged.len() - 1;
            forged[last] ^= 0xff;
            std::fs::write(dir.join(format!("forged-{i}")), &forged).expect("write");
            std::fs::write(
                dir.join(format!("truncated-{i}")),
                &bytes[..bytes.len() / 2],
            )
            .expect("write");
        }
        std::fs::write(dir.join("empty"), b"").expect("write");
    }
}
