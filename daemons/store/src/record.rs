//! Framing of every append-only file (object packs and journal segments):
//! `magic[4] | kind u8 | len u32 LE | checksum[16] | payload[len]`, where
//! checksum = BLAKE3(kind | len | payload) truncated to 16 bytes. A scan stops
//! at the first record that is incomplete or fails its checksum: that is the
//! torn tail a crash leaves, and recovery truncates it.

/// First bytes of every record.
pub const MAGIC: [u8; 4] = *b"IRr1";
/// Bytes before the payload.
pub const HEADER_LEN: usize = 4 + 1 + 4 + 16;

fn checksum(kind: u8, payload: &[u8]) -> [u8; 16] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(&(payload.len() as u32).to_le_bytes());
    hasher.update(payload);
    let mut out = [0u8; 16];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    out
}

/// Frame one record. Panics if the payload does not fit a u32 length: our
/// own callers bound every payload far below that.
pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("record payload fits u32");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(kind);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(kind, payload));
    out.extend_from_slice(payload);
    out
}

/// One valid record found by [`scan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub kind: u8,
    /// Offset of the payload within the scanned bytes.
    pub payload_offset: usize,
    pub payload_len: usize,
}

/// What [`scan`] found in one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub found: Vec<Found>,
    /// End of the last valid record: what follows is a torn tail.
    pub valid_end: usize,
    /// Bytes between valid records that failed their checksum (bit rot,
    /// not a crash): those records are lost, the ones after them kept.
    pub skipped_bytes: usize,
}

impl Scan {
    /// Where the first damaged stretch starts (0 if none).
    pub fn found_gap_offset(&self) -> u64 {
        let mut expected = 0usize;
        for record in &self.found {
            let start = record.payload_offset - HEADER_LEN;
            if start != expected {
                return expected as u64;
            }
            expected = record.payload_offset + record.payload_len;
        }
        0
    }
}

/// Every valid record of `bytes`. After a record that fails, the scan
/// resumes at the next magic, so damage in the middle loses only what it
/// hit; only the bytes after the last valid record count as a torn tail.
pub fn scan(bytes: &[u8], payload_len_max: usize) -> Scan {
    let mut scan = Scan::default();
    let mut at = 0usize;
    while at < bytes.len() {
        match parse_one(bytes, at, payload_len_max) {
            Some(record) => {
                scan.skipped_bytes += at - scan.valid_end;
                at = record.payload_offset + record.payload_len;
                scan.valid_end = at;
                scan.found.push(record);
            }
            None => match find_magic(bytes, at + 1) {
                Some(next) => at = next,
                None => break,
            },
        }
    }
    scan
}

fn find_magic(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = bytes.get(from..)?;
    rest.windows(MAGIC.len())
        .position(|w| w == MAGIC)
        .map(|p| from + p)
}

fn parse_one(bytes: &[u8], at: usize, payload_len_max: usize) -> Option<Found> {
    let header = bytes.get(at..at.checked_add(HEADER_LEN)?)?;
    if header[..4] != MAGIC {
        return None;
    }
    let kind = header[4];
    let len = u32::from_le_bytes(header[5..9].try_into().ok()?) as usize;
    if len > payload_len_max {
        return None;
    }
    let payload_offset = at + HEADER_LEN;
    let payload = bytes.get(payload_offset..payload_offset.checked_add(len)?)?;
    if checksum(kind, payload)[..] != header[9..25] {
        return None;
    }
    Some(Found {
        kind,
        payload_offset,
        payload_len: len,
    })
}

/// Check one record read back at a known offset (a pack read): returns the
/// payload if the frame is intact.
pub fn decode_one(bytes: &[u8], payload_len_max: usize) -> Option<(u8, &[u8])> {
    let found = parse_one(bytes, 0, payload_len_max)?;
    let end = found.payload_offset + found.payload_len;
    Some((found.kind, &bytes[found.payload_offset..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_stops_at_torn_tail_at_every_byte() {
        let mut bytes = encode(1, b"first");
        bytes.extend(encode(2, b"second record"));
        let full = bytes.len();
        for cut in 0..full {
            let scan = scan(&bytes[..cut], 1024);
            let expect = if cut >= 30 { 1 } else { 0 };
            assert_eq!(scan.found.len(), expect, "cut at {cut}");
            assert!(scan.valid_end <= cut && scan.skipped_bytes == 0);
        }
        let scan = scan(&bytes, 1024);
        assert_eq!((scan.found.len(), scan.valid_end), (2, full));
    }

    #[test]
    fn bit_flip_loses_only_the_record_it_hit() {
        let first = encode(1, b"payload");
        let second = encode(1, b"after the damage");
        for i in 0..first.len() {
            let mut bad = first.clone();
            bad[i] ^= 0x40;
            bad.extend_from_slice(&second);
            let scan = scan(&bad, 1024);
            assert_eq!(scan.found.len(), 1, "flip at {i}");
            assert_eq!(
                (scan.valid_end, scan.skipped_bytes),
                (bad.len(), first.len())
            );
        }
    }
}
