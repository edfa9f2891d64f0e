//! Bounded XDR (RFC 4506) reader for untrusted call bodies.
//!
//! Every length read from the peer is checked against the bytes that are
//! actually left and against a caller-given maximum before anything is
//! sliced, so a hostile length never allocates: variable-length data is
//! borrowed from the input.

/// Why a call body did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XdrError {
    #[error("input ends at byte {at}, {wanted} more bytes wanted")]
    Short { at: usize, wanted: usize },
    #[error("opaque of {len} bytes exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("boolean with value {0}")]
    BadBool(u32),
}

/// A cursor over one XDR-encoded message.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    input: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Reader<'a> {
        Reader { input, at: 0 }
    }

    /// Bytes not yet consumed.
    pub fn rest(&self) -> &'a [u8] {
        self.input.get(self.at..).unwrap_or(&[])
    }

    /// Offset of the next byte.
    pub fn position(&self) -> usize {
        self.at
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], XdrError> {
        let rest = self.rest();
        let bytes = rest.get(..len).ok_or_else(|| XdrError::Short {
            at: self.at,
            wanted: len.saturating_sub(rest.len()),
        })?;
        self.at += len;
        Ok(bytes)
    }

    pub fn u32(&mut self) -> Result<u32, XdrError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, XdrError> {
        let high = u64::from(self.u32()?);
        let low = u64::from(self.u32()?);
        Ok(high << 32 | low)
    }

    pub fn bool(&mut self) -> Result<bool, XdrError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(XdrError::BadBool(other)),
        }
    }

    /// Fixed-length opaque of `N` bytes (plus padding).
    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], XdrError> {
        let bytes = self.take(N)?;
        self.take(pad(N))?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Variable-length opaque of at most `max` bytes, borrowed.
    pub fn opaque(&mut self, max: usize) -> Result<&'a [u8], XdrError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(XdrError::TooLong { len, max });
        }
        let bytes = self.take(len)?;
        self.take(pad(len))?;
        Ok(bytes)
    }
}

fn pad(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Appends XDR values to a buffer (replies are built in memory first, so
/// writing cannot fail).
pub fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

pub fn put_opaque(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(bytes);
    out.extend_from_slice(&[0u8; 3][..pad(bytes.len())]);
}

/// Encode a value of `nfs3_types` into `out`.
pub fn put<T: nfs3_types::xdr_codec::Pack>(out: &mut Vec<u8>, value: &T) {
    // Packing into a Vec only fails for objects over 4 GiB, which replies
    // bounded by `*_max` limits can never reach.
    let packed = value.pack(out);
    assert!(packed.is_ok(), "packing into memory failed: {packed:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_round_trip_with_padding() {
        let mut out = Vec::new();
        put_opaque(&mut out, b"abcde");
        assert_eq!(out.len(), 4 + 8);
        let mut reader = Reader::new(&out);
        assert_eq!(reader.opaque(16).unwrap(), b"abcde");
        assert!(reader.rest().is_empty());
    }

    #[test]
    fn hostile_length_is_refused_without_allocation() {
        let bytes = [0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4];
        assert_eq!(
            Reader::new(&bytes).opaque(1024),
            Err(XdrError::TooLong {
                len: 0xffff_ffff,
                max: 1024
            })
        );
        assert!(matches!(
            Reader::new(&[0, 0, 0, 9, 1]).opaque(1024),
            Err(XdrError::Short { .. })
        ));
    }

    #[test]
    fn u64_and_bool() {
        let bytes = [0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 7];
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.u64().unwrap(), (1 << 32) | 2);
        assert!(reader.bool().unwrap());
        assert_eq!(reader.bool(), Err(XdrError::BadBool(7)));
    }
}
