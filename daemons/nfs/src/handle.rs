//! File handles: who may use them and what they point at, authenticated by
//! a keyed MAC shared by both control nodes.
//!
//! Layout (38 bytes, within NFSv3's 64): format byte, client id (u32),
//! file id (u64), flags (1 byte: bit 0 = has a content version), content
//! version (u64), then the first 16 bytes of keyed BLAKE3 over all of that.
//! No boot time and no node identity: handles survive restarts and failover.

use crate::fs::{ClientId, FileId};

const FORMAT_V1: u8 = 1;
const BODY_BYTES: usize = 1 + 4 + 8 + 1 + 8;
const MAC_BYTES: usize = 16;
/// Size of every handle we issue.
pub const HANDLE_BYTES: usize = BODY_BYTES + MAC_BYTES;
const _: () = assert!(HANDLE_BYTES <= 64);
const HAS_VERSION: u8 = 1;

/// What a handle names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle {
    pub client: ClientId,
    pub file_id: FileId,
    pub version: Option<u64>,
}

/// A handle that fails verification: NFS3ERR_BADHANDLE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    #[error("handle of {0} bytes")]
    Length(usize),
    #[error("unknown handle format {0}")]
    Format(u8),
    #[error("handle MAC does not verify")]
    Mac,
}

/// Issues and verifies handles with the cluster-wide key.
#[derive(Clone)]
pub struct HandleKey {
    key: [u8; 32],
}

impl std::fmt::Debug for HandleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandleKey(..)")
    }
}

impl HandleKey {
    pub fn new(key: [u8; 32]) -> HandleKey {
        HandleKey { key }
    }

    fn mac(&self, body: &[u8]) -> [u8; MAC_BYTES] {
        let hash = blake3::keyed_hash(&self.key, body);
        let mut mac = [0u8; MAC_BYTES];
        mac.copy_from_slice(&hash.as_bytes()[..MAC_BYTES]);
        mac
    }

    pub fn encode(&self, handle: &Handle) -> Vec<u8> {
        let mut out = Vec::with_capacity(HANDLE_BYTES);
        out.push(FORMAT_V1);
        out.extend_from_slice(&handle.client.to_be_bytes());
        out.extend_from_slice(&handle.file_id.to_be_bytes());
        out.push(if handle.version.is_some() {
            HAS_VERSION
        } else {
            0
        });
        out.extend_from_slice(&handle.version.unwrap_or(0).to_be_bytes());
        let mac = self.mac(&out);
        out.extend_from_slice(&mac);
        debug_assert_eq!(out.len(), HANDLE_BYTES);
        out
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<Handle, HandleError> {
        if bytes.len() != HANDLE_BYTES {
            return Err(HandleError::Length(bytes.len()));
        }
        let (body, mac) = bytes.split_at(BODY_BYTES);
        if body[0] != FORMAT_V1 {
            return Err(HandleError::Format(body[0]));
        }
        let expected = self.mac(body);
        // Constant time: a forger learns nothing from how long we took.
        let diff = expected
            .iter()
            .zip(mac)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(HandleError::Mac);
        }
        let word = |at: usize| {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(&body[at..at + 8]);
            u64::from_be_bytes(eight)
        };
        let client = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
        let version = (body[13] & HAS_VERSION != 0).then(|| word(14));
        Ok(Handle {
            client,
            file_id: word(5),
            version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = HandleKey::new([7; 32]);
        let handle = Handle {
            client: 3,
            file_id: 99,
            version: Some(4),
        };
        let bytes = key.encode(&handle);
        assert_eq!(bytes.len(), HANDLE_BYTES);
        assert_eq!(key.decode(&bytes), Ok(handle));
        for at in 0..bytes.len() {
            let mut forged = bytes.clone();
            forged[at] ^= 1;
            assert!(key.decode(&forged).is_err(), "flip at byte {at} accepted");
        }
        assert_eq!(
            HandleKey::new([8; 32]).decode(&bytes),
            Err(HandleError::Mac)
        );
        assert_eq!(key.decode(&bytes[..10]), Err(HandleError::Length(10)));
    }

    #[test]
    fn handles_are_stable_across_instances() {
        let handle = Handle {
            client: 1,
            file_id: 2,
            version: None,
        };
        assert_eq!(
            HandleKey::new([1; 32]).encode(&handle),
            HandleKey::new([1; 32]).encode(&handle)
        );
    }
}
