//! Record marking for RPC over TCP (RFC 5531 section 11): a record is one
//! or more fragments, each behind a 4-byte header whose top bit marks the
//! last fragment. Records are bounded so a peer cannot make us buffer more
//! than `record_bytes_max`.

const LAST_FRAGMENT: u32 = 0x8000_0000;

/// A peer broke the framing; the connection must be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record of at least {len} bytes exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
}

/// Reassembles records from a byte stream.
#[derive(Debug)]
pub struct RecordDecoder {
    record_bytes_max: usize,
    buffer: Vec<u8>,
    /// Complete fragments of the record being assembled.
    record: Vec<u8>,
}

impl RecordDecoder {
    pub fn new(record_bytes_max: usize) -> RecordDecoder {
        RecordDecoder {
            record_bytes_max,
            buffer: Vec::new(),
            record: Vec::new(),
        }
    }

    /// Feed bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete record, if one is buffered.
    pub fn poll_record(&mut self) -> Result<Option<Vec<u8>>, RecordError> {
        loop {
            let Some(header) = self.buffer.get(..4) else {
                return Ok(None);
            };
            let header = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            let len = (header & !LAST_FRAGMENT) as usize;
            let total = self.record.len().saturating_add(len);
            if total > self.record_bytes_max {
                return Err(RecordError::TooLong {
                    len: total,
                    max: self.record_bytes_max,
                });
            }
            let Some(fragment) = self.buffer.get(4..4 + len) else {
                return Ok(None);
            };
            self.record.extend_from_slice(fragment);
            self.buffer.drain(..4 + len);
            if header & LAST_FRAGMENT != 0 {
                return Ok(Some(std::mem::take(&mut self.record)));
            }
        }
    }

    /// Bytes buffered but not yet returned (bounded by the caller reading
    /// only when this is below its limit).
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len() + self.record.len()
    }
}

/// The header of a record sent as one last fragment of `len` bytes.
pub fn record_mark(len: usize) -> [u8; 4] {
    let len = u32::try_from(len).unwrap_or(u32::MAX) & !LAST_FRAGMENT;
    (len | LAST_FRAGMENT).to_be_bytes()
}

/// Frame `message` as one record of a single last fragment.
pub fn encode_record(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + message.len());
    out.extend_from_slice(&record_mark(message.len()));
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_fragment_record_split_across_reads() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&3u32.to_be_bytes());
        stream.extend_from_slice(b"abc");
        stream.extend_from_slice(&(2u32 | LAST_FRAGMENT).to_be_bytes());
        stream.extend_from_slice(b"de");
        stream.extend_from_slice(&encode_record(b"next"));
        let mut decoder = RecordDecoder::new(64);
        let mut records = Vec::new();
        for byte in &stream {
            decoder.push(&[*byte]);
            while let Some(record) = decoder.poll_record().unwrap() {
                records.push(record);
            }
        }
        assert_eq!(records, vec![b"abcde".to_vec(), b"next".to_vec()]);
        assert_eq!(decoder.buffered_bytes(), 0);
    }

    #[test]
    fn oversized_record_is_refused_before_buffering() {
        let mut decoder = RecordDecoder::new(16);
        decoder.push(&(1000u32 | LAST_FRAGMENT).to_be_bytes());
        assert_eq!(
            decoder.poll_record(),
            Err(RecordError::TooLong { len: 1000, max: 16 })
        );
        let mut decoder = RecordDecoder::new(16);
        for _ in 0..3 {
            decoder.push(&10u32.to_be_bytes());
            decoder.push(&[0u8; 10]);
        }
        assert!(matches!(
            decoder.poll_record(),
            Err(RecordError::TooLong { .. })
        ));
    }
}
