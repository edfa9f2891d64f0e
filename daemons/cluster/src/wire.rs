//! Wire format of heartbeats and witness requests/replies, authenticated with
//! HMAC-SHA256 under the cluster key.
//!
//! Layout (big endian): magic `IRC1`, version, kind, cluster id (u32),
//! sender node id (u16), a fixed-size body per kind, then a 32-byte tag over
//! everything before it. No timestamps: freshness comes from (incarnation,
//! sequence), checked by [`ReplayGuard`].

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const MAGIC: [u8; 4] = *b"IRC1";
pub const VERSION: u8 = 1;
pub const TAG_LEN: usize = 32;
const HEADER_LEN: usize = 4 + 1 + 1 + 4 + 2;
const HEARTBEAT_BODY_LEN: usize = 8 + 8 + 1 + 1 + 8 + 8;
const REQUEST_BODY_LEN: usize = 8 + 8 + 1 + 1;
const REPLY_BODY_LEN: usize = 2 + 8 + 1 + 2 + 4 + 2;
/// No valid packet is longer; the driver's receive buffer uses it.
pub const PACKET_LEN_MAX: usize = HEADER_LEN + HEARTBEAT_BODY_LEN + TAG_LEN;

/// A node's identity on the wire; 0 is the witness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u16);

impl NodeId {
    pub const WITNESS: NodeId = NodeId(0);
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node{}", self.0)
    }
}

/// The shared HMAC key. Debug never prints it.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl Key {
    pub fn new(bytes: Vec<u8>) -> Key {
        Key(bytes)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        Hmac::<Sha256>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }

    /// The HMAC-SHA256 tag of `bytes`.
    pub fn tag(&self, bytes: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac();
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the tag of `bytes` (constant-time comparison).
    pub fn verify(&self, bytes: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(bytes);
        mac.verify_slice(tag).is_ok()
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({} bytes)", self.0.len())
    }
}

/// A node's role as its heartbeats announce it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    InitialDead,
    Standby,
    Promoting,
    Active,
    Stopping,
    Outdated,
    Maintenance,
}

impl Role {
    const ALL: [Role; 7] = [
        Role::InitialDead,
        Role::Standby,
        Role::Promoting,
        Role::Active,
        Role::Stopping,
        Role::Outdated,
        Role::Maintenance,
    ];

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Option<Role> {
        Role::ALL.get(usize::from(code)).copied()
    }
}

/// Flags carried by a heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// The sender could become active now.
    pub eligible: bool,
    /// The sender gives its vote to the receiver.
    pub vote: bool,
    /// The sender stepped down for the receiver (switchover, failure).
    pub handoff: bool,
    /// The sender asks the active receiver to hand over (auto failback).
    pub wants_active: bool,
}

impl Flags {
    fn encode(self) -> u8 {
        u8::from(self.eligible)
            | u8::from(self.vote) << 1
            | u8::from(self.handoff) << 2
            | u8::from(self.wants_active) << 3
    }

    fn decode(bits: u8) -> Option<Flags> {
        (bits & 0xf0 == 0).then_some(Flags {
            eligible: bits & 1 != 0,
            vote: bits & 2 != 0,
            handoff: bits & 4 != 0,
            wants_active: bits & 8 != 0,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub incarnation: u64,
    pub seq: u64,
    pub role: Role,
    pub flags: Flags,
    /// The receiver's incarnation and highest sequence the sender accepted:
    /// lets the receiver date the sender's vote by its own send time.
    pub echo_incarnation: u64,
    pub echo_seq: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// Grant or renew the vote lease.
    Acquire,
    /// Give the lease back (after stopping everything).
    Release,
    /// Only report holder and outdated node.
    Query,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WitnessRequest {
    pub incarnation: u64,
    pub request_id: u64,
    pub kind: RequestKind,
    /// The requester hears its peer (used for the Outdated record).
    pub peer_alive: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WitnessReply {
    pub to: NodeId,
    pub request_id: u64,
    pub granted: bool,
    pub holder: Option<NodeId>,
    /// Lease length granted (the requester counts it from its send time).
    pub lease_ms: u32,
    pub outdated: Option<NodeId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    Heartbeat(Heartbeat),
    WitnessRequest(WitnessRequest),
    WitnessReply(WitnessReply),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub cluster_id: u32,
    pub sender: NodeId,
    pub message: Message,
}

/// Why bytes were not accepted as a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("length {0} does not match the packet kind")]
    Length(usize),
    #[error("bad magic or version")]
    Magic,
    #[error("unknown kind {0}")]
    Kind(u8),
    #[error("bad field {0}")]
    Field(&'static str),
    #[error("authentication tag mismatch")]
    Forged,
}

impl Packet {
    /// Serialize and append the tag.
    pub fn encode(&self, key: &Key) -> Vec<u8> {
        let mut out = Vec::with_capacity(PACKET_LEN_MAX);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(match self.message {
            Message::Heartbeat(_) => 1,
            Message::WitnessRequest(_) => 2,
            Message::WitnessReply(_) => 3,
        });
        out.extend_from_slice(&self.cluster_id.to_be_bytes());
        out.extend_from_slice(&self.sender.0.to_be_bytes());
        match self.message {
            Message::Heartbeat(h) => encode_heartbeat(&h, &mut out),
            Message::WitnessRequest(r) => encode_request(&r, &mut out),
            Message::WitnessReply(r) => encode_reply(&r, &mut out),
        }
        out.extend_from_slice(&key.tag(&out));
        out
    }

    /// Verify the tag (constant time), then parse.
    pub fn decode(key: &Key, bytes: &[u8]) -> Result<Packet, DecodeError> {
        let body_len = bytes
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(DecodeError::Length(bytes.len()))?;
        let (signed, tag) = bytes.split_at(body_len);
        if !key.verify(signed, tag) {
            return Err(DecodeError::Forged);
        }
        Packet::parse_signed(signed)
    }

    /// Parse the part before the tag. Public so the fuzzer reaches the body
    /// without forging tags; never use it on untrusted input otherwise.
    pub fn parse_signed(bytes: &[u8]) -> Result<Packet, DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(4)? != MAGIC || r.u8()? != VERSION {
            return Err(DecodeError::Magic);
        }
        let kind = r.u8()?;
        let expected = HEADER_LEN
            + match kind {
                1 => HEARTBEAT_BODY_LEN,
                2 => REQUEST_BODY_LEN,
                3 => REPLY_BODY_LEN,
                other => return Err(DecodeError::Kind(other)),
            };
        if bytes.len() != expected {
            return Err(DecodeError::Length(bytes.len()));
        }
        let cluster_id = r.u32()?;
        let sender = NodeId(r.u16()?);
        let message = match kind {
            1 => Message::Heartbeat(parse_heartbeat(&mut r)?),
            2 => Message::WitnessRequest(parse_request(&mut r)?),
            _ => Message::WitnessReply(parse_reply(&mut r)?),
        };
        Ok(Packet {
            cluster_id,
            sender,
            message,
        })
    }
}

fn encode_heartbeat(h: &Heartbeat, out: &mut Vec<u8>) {
    out.extend_from_slice(&h.incarnation.to_be_bytes());
    out.extend_from_slice(&h.seq.to_be_bytes());
    out.push(h.role.code());
    out.push(h.flags.encode());
    out.extend_from_slice(&h.echo_incarnation.to_be_bytes());
    out.extend_from_slice(&h.echo_seq.to_be_bytes());
}

fn parse_heartbeat(r: &mut Reader<'_>) -> Result<Heartbeat, DecodeError> {
    Ok(Heartbeat {
        incarnation: r.u64()?,
        seq: r.u64()?,
        role: Role::from_code(r.u8()?).ok_or(DecodeError::Field("role"))?,
        flags: Flags::decode(r.u8()?).ok_or(DecodeError::Field("flags"))?,
        echo_incarnation: r.u64()?,
        echo_seq: r.u64()?,
    })
}

fn encode_request(req: &WitnessRequest, out: &mut Vec<u8>) {
    out.extend_from_slice(&req.incarnation.to_be_bytes());
    out.extend_from_slice(&req.request_id.to_be_bytes());
    out.push(match req.kind {
        RequestKind::Acquire => 1,
        RequestKind::Release => 2,
        RequestKind::Query => 3,
    });
    out.push(u8::from(req.peer_alive));
}

fn parse_request(r: &mut Reader<'_>) -> Result<WitnessRequest, DecodeError> {
    let incarnation = r.u64()?;
    let request_id = r.u64()?;
    let kind = match r.u8()? {
        1 => RequestKind::Acquire,
        2 => RequestKind::Release,
        3 => RequestKind::Query,
        _ => return Err(DecodeError::Field("request kind")),
    };
    Ok(WitnessRequest {
        incarnation,
        request_id,
        kind,
        peer_alive: r.bool("peer_alive")?,
    })
}

fn encode_reply(reply: &WitnessReply, out: &mut Vec<u8>) {
    out.extend_from_slice(&reply.to.0.to_be_bytes());
    out.extend_from_slice(&reply.request_id.to_be_bytes());
    out.push(u8::from(reply.granted));
    out.extend_from_slice(&reply.holder.map_or(0, |n| n.0).to_be_bytes());
    out.extend_from_slice(&reply.lease_ms.to_be_bytes());
    out.extend_from_slice(&reply.outdated.map_or(0, |n| n.0).to_be_bytes());
}

fn parse_reply(r: &mut Reader<'_>) -> Result<WitnessReply, DecodeError> {
    let optional = |id: u16| (id != 0).then_some(NodeId(id));
    Ok(WitnessReply {
        to: NodeId(r.u16()?),
        request_id: r.u64()?,
        granted: r.bool("granted")?,
        holder: optional(r.u16()?),
        lease_ms: r.u32()?,
        outdated: optional(r.u16()?),
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(len).ok_or(DecodeError::Length(len))?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(DecodeError::Length(self.bytes.len()))?;
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Field(field)),
        }
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

/// Freshness of one sender's packets on one path: a packet is accepted only
/// if its (incarnation, seq) is above the last accepted one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayGuard {
    last: Option<(u64, u64)>,
}

/// Why [`ReplayGuard::check`] refused a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// New and in order; `restarted` when the incarnation grew.
    Fresh { restarted: bool },
    /// Same incarnation, sequence not above the last one.
    Replayed,
    /// Older incarnation than one already seen.
    Stale,
}

impl ReplayGuard {
    /// Check and, if fresh, record.
    pub fn check(&mut self, incarnation: u64, seq: u64) -> Freshness {
        let verdict = match self.last {
            None => Freshness::Fresh { restarted: false },
            Some((last_inc, _)) if incarnation < last_inc => Freshness::Stale,
            Some((last_inc, last_seq)) if incarnation == last_inc => {
                if seq <= last_seq {
                    Freshness::Replayed
                } else {
                    Freshness::Fresh { restarted: false }
                }
            }
            Some(_) => Freshness::Fresh { restarted: true },
        };
        if let Freshness::Fresh { .. } = verdict {
            self.last = Some((incarnation, seq));
        }
        verdict
    }

    /// The last accepted (incarnation, seq).
    pub fn last(&self) -> Option<(u64, u64)> {
        self.last
    }
}

#[cfg(test)]
mod tests;
