//! Content-defined chunking (a gear rolling hash with FastCDC's normalized
//! masks): cut points depend on the bytes around them, not on offsets, so an
//! insertion in a big file changes only the chunks it touches.

use std::io::Read;

/// No chunk is smaller than this (except a file's last one).
pub const CHUNK_LEN_MIN: usize = 16 * 1024;
/// Average chunk length the masks aim at.
pub const CHUNK_LEN_AVG: usize = 64 * 1024;
/// No chunk is larger than this.
pub const CHUNK_LEN_MAX: usize = 256 * 1024;

// 18 bits before the average (harder to cut), 14 after (easier): FastCDC's
// normalization level 2 around a 16-bit average. High bits, because in a gear
// hash they depend on the last 64 bytes while low bits see only a few.
const MASK_HARD: u64 = !0u64 << (64 - 18);
const MASK_EASY: u64 = !0u64 << (64 - 14);

const fn splitmix64(state: u64) -> (u64, u64) {
    let state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (state, z ^ (z >> 31))
}

const fn gear_table() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut state = 0x1f0f_5eed_u64;
    let mut i = 0;
    while i < 256 {
        let (next, value) = splitmix64(state);
        state = next;
        table[i] = value;
        i += 1;
    }
    table
}

static GEAR: [u64; 256] = gear_table();

/// Length of the first chunk of `data` (all of it if it is the tail).
pub fn cut_point(data: &[u8]) -> usize {
    if data.len() <= CHUNK_LEN_MIN {
        return data.len();
    }
    let normal = CHUNK_LEN_AVG.min(data.len());
    let max = CHUNK_LEN_MAX.min(data.len());
    let mut hash = 0u64;
    let mut i = CHUNK_LEN_MIN;
    while i < normal {
        hash = (hash << 1).wrapping_add(GEAR[data[i] as usize]);
        if hash & MASK_HARD == 0 {
            return i + 1;
        }
        i += 1;
    }
    while i < max {
        hash = (hash << 1).wrapping_add(GEAR[data[i] as usize]);
        if hash & MASK_EASY == 0 {
            return i + 1;
        }
        i += 1;
    }
    max
}

/// Split everything `reader` yields into chunks, calling `sink` on each in
/// order. Holds at most two maximal chunks in memory.
pub fn chunk_reader<R: Read, E: From<std::io::Error>>(
    mut reader: R,
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, E> {
    let mut buf: Vec<u8> = Vec::with_capacity(2 * CHUNK_LEN_MAX);
    let mut total = 0u64;
    let mut eof = false;
    loop {
        while !eof && buf.len() < 2 * CHUNK_LEN_MAX {
            let start = buf.len();
            buf.resize(2 * CHUNK_LEN_MAX, 0);
            let n = loop {
                match reader.read(&mut buf[start..]) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    buf.truncate(start);
                    return Err(e.into());
                }
            };
            buf.truncate(start + n);
            eof = n == 0;
        }
        if buf.is_empty() {
            return Ok(total);
        }
        // Without more input a cut inside the window could differ from the
        // one a longer read would find, except at the end of the file.
        let len = cut_point(&buf);
        sink(&buf[..len])?;
        total += len as u64;
        buf.drain(..len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                let (next, value) = splitmix64(state);
                state = next;
                value as u8
            })
            .collect()
    }

    fn chunks(data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        chunk_reader::<_, std::io::Error>(data, |c| {
            out.push(c.to_vec());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn chunks_respect_bounds_and_average() {
        let data = pseudo_random(8 << 20, 7);
        let parts = chunks(&data);
        assert_eq!(parts.concat(), data);
        for part in &parts[..parts.len() - 1] {
            assert!((CHUNK_LEN_MIN..=CHUNK_LEN_MAX).contains(&part.len()));
        }
        let avg = data.len() / parts.len();
        assert!((32 * 1024..=128 * 1024).contains(&avg), "avg {avg}");
    }

    #[test]
    fn small_insertion_keeps_most_chunks() {
        let data = pseudo_random(4 << 20, 9);
        let mut edited = data[..1_000_000].to_vec();
        edited.extend_from_slice(b"inserted bytes");
        edited.extend_from_slice(&data[1_000_000..]);
        let before: std::collections::BTreeSet<_> = chunks(&data).into_iter().collect();
        let after = chunks(&edited);
        let fresh = after.iter().filter(|c| !before.contains(*c)).count();
        assert!(fresh <= 2, "{fresh} of {} chunks changed", after.len());
    }
}
