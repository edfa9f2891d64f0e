//! Replication messages and their framing on a byte stream:
//! `len u32 BE | postcard(Message)`. Peer bytes are checked against
//! [`MESSAGE_LEN_MAX`] before anything is allocated.

use serde::{Deserialize, Serialize};

use crate::journal::{EntryId, Epoch, Record};
use crate::model::{ObjectId, ObjectKind};

/// The replication protocol's version, exchanged first on every connection.
/// 2: [`Divergence::outdated_after`].
pub const WIRE_VERSION: u32 = 2;
/// Largest framed message (a batch of objects, a snapshot part).
pub const MESSAGE_LEN_MAX: usize = 32 << 20;
/// Most ids in one offer or answer.
pub const OFFER_IDS_MAX: usize = 65_536;

/// What both sides say first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub wire_version: u32,
    pub node: u32,
    pub last: Option<EntryId>,
    pub epochs: Vec<(Epoch, u64)>,
    /// Lowest seq still held as an entry (below it only a snapshot).
    pub journal_first_seq: Option<u64>,
}

/// How the secondary's history relates to the primary's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    pub common_seq: u64,
    /// Entries the secondary holds after the common one.
    pub entries_after: u64,
    /// Of those, entries other than leases.
    pub changes_after: u64,
    /// Epoch of the first entry after the common one.
    pub first_epoch_after: Option<Epoch>,
    /// Those entries include an `Entry::PeerOutdated`: the secondary was
    /// primary and may have acknowledged some of them alone. Without one
    /// none was acknowledged, and they are dropped without a split brain.
    pub outdated_after: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Hello(Hello),
    /// The peer speaks another version; the connection ends.
    VersionRefused {
        supported: u32,
    },
    /// Secondary -> primary, answering the primary's hello.
    Divergence(Divergence),
    /// Primary -> secondary: drop entries after `seq` (split-brain loser).
    Truncate {
        seq: u64,
    },
    /// Primary -> secondary: which of these objects do you lack?
    Offer {
        ids: Vec<ObjectId>,
    },
    /// Secondary -> primary: these.
    Lacking {
        ids: Vec<ObjectId>,
    },
    /// Primary -> secondary, children before parents.
    Objects {
        objects: Vec<(ObjectId, ObjectKind, Vec<u8>)>,
    },
    Entry {
        record: Box<Record>,
    },
    Snapshot {
        bytes: Vec<u8>,
    },
    /// Secondary -> primary: everything up to `seq` is durable here.
    Ack {
        seq: u64,
    },
    /// Either side: the connection is over, and why.
    Refused {
        reason: RefuseReason,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseReason {
    SplitBrainUnresolved,
    PeerAhead,
    ProtocolViolation,
    CorruptObject,
    /// The refusing side could not store what it received (disk full,
    /// I/O error): its own trouble, not the peer's.
    StorageFailed,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message of {len} bytes exceeds {max}")]
    TooLong { len: usize, max: usize },
    #[error("message does not decode")]
    Malformed,
}

pub fn encode_message(message: &Message) -> Vec<u8> {
    let body = postcard::to_stdvec(message).expect("messages always encode");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decode one frame from the front of `buf`: `Ok(None)` if more bytes are
/// needed, else the message and the bytes it took.
pub fn decode_message(buf: &[u8]) -> Result<Option<(Message, usize)>, WireError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
    if len > MESSAGE_LEN_MAX {
        return Err(WireError::TooLong {
            len,
            max: MESSAGE_LEN_MAX,
        });
    }
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    let message = postcard::from_bytes(body).map_err(|_| WireError::Malformed)?;
    Ok(Some((message, 4 + len)))
}
