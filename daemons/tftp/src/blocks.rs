//! The payload of block N of a transfer, read on demand so a window can be
//! resent without keeping its bytes: octet blocks are a plain offset into
//! the file, read a [`CHUNK_LEN`] chunk at a time so most blocks cost a
//! copy rather than a read; netascii blocks (RFC 764 line endings: LF -> CR LF, CR -> CR
//! NUL) are re-translated from a checkpoint kept for every block not yet
//! acknowledged.

use std::collections::BTreeMap;
use std::io;

use crate::source::FileReader;
use crate::wire::Mode;

/// Bytes an octet transfer reads from its file at once (or one block, if
/// larger): one read serves 44 blocks of 1468 bytes. Held per transfer, so
/// bounded by the transfer limit.
pub const CHUNK_LEN: usize = 64 * 1024;

/// Where the translation of one netascii block starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Checkpoint {
    /// Offset in the source file of the next byte to translate.
    source_offset: u64,
    /// Second byte of an expansion that did not fit in the previous block.
    pending: Option<u8>,
}

/// Reads blocks (1-based, counted without wrap-around) of one file.
pub struct BlockReader {
    reader: Box<dyn FileReader>,
    blksize: usize,
    chunk: Chunk,
    netascii: Option<Netascii>,
}

/// The file's bytes at `offset..offset + len`, read ahead for octet blocks.
#[derive(Default)]
struct Chunk {
    offset: u64,
    bytes: Vec<u8>,
    len: usize,
    /// The read stopped short: the file ends at `offset + len`.
    at_end: bool,
}

impl Chunk {
    /// Whether `offset..offset + want` can be served from this chunk (the
    /// whole range, or up to the end of the file).
    fn holds(&self, offset: u64, want: usize) -> bool {
        let end = self.offset + self.len as u64;
        offset >= self.offset && (offset + want as u64 <= end || (self.at_end && offset <= end))
    }

    fn fill(&mut self, reader: &dyn FileReader, offset: u64, want: usize) -> io::Result<()> {
        let capacity = CHUNK_LEN.max(want);
        if self.bytes.len() < capacity {
            self.bytes.resize(capacity, 0);
        }
        self.offset = offset;
        self.len = 0;
        self.at_end = false;
        let read = reader.read_at(offset, &mut self.bytes[..capacity])?;
        self.len = read;
        self.at_end = read < capacity;
        Ok(())
    }
}

struct Netascii {
    /// Checkpoints of blocks from the oldest unacknowledged one onwards;
    /// pruned on every acknowledgement, so at most windowsize + 1 entries.
    checkpoints: BTreeMap<u64, Checkpoint>,
    scratch: Vec<u8>,
}

impl BlockReader {
    pub fn new(reader: Box<dyn FileReader>, mode: Mode, blksize: usize) -> BlockReader {
        assert!(blksize > 0);
        let netascii = (mode == Mode::Netascii).then(|| Netascii {
            checkpoints: BTreeMap::from([(
                1,
                Checkpoint {
                    source_offset: 0,
                    pending: None,
                },
            )]),
            scratch: Vec::new(),
        });
        BlockReader {
            reader,
            blksize,
            chunk: Chunk::default(),
            netascii,
        }
    }

    /// Append the payload of `block` to `out`; returns its length, which is
    /// below the block size only for the last block.
    pub fn read_block(&mut self, block: u64, out: &mut Vec<u8>) -> io::Result<usize> {
        assert!(block >= 1);
        match &mut self.netascii {
            None => read_octet(
                self.reader.as_ref(),
                &mut self.chunk,
                self.blksize,
                block,
                out,
            ),
            Some(netascii) => netascii.read(self.reader.as_ref(), self.blksize, block, out),
        }
    }

    /// Blocks before `block` will never be read again.
    pub fn forget_before(&mut self, block: u64) {
        if let Some(netascii) = &mut self.netascii {
            netascii.checkpoints = netascii.checkpoints.split_off(&block);
        }
    }
}

fn read_octet(
    reader: &dyn FileReader,
    chunk: &mut Chunk,
    blksize: usize,
    block: u64,
    out: &mut Vec<u8>,
) -> io::Result<usize> {
    let offset = (block - 1)
        .checked_mul(blksize as u64)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "block offset overflows"))?;
    if !chunk.holds(offset, blksize) {
        chunk.fill(reader, offset, blksize)?;
    }
    assert!(chunk.holds(offset, blksize));
    let from = (offset - chunk.offset) as usize;
    let to = (from + blksize).min(chunk.len);
    out.extend_from_slice(&chunk.bytes[from..to]);
    Ok(to - from)
}

impl Netascii {
    fn read(
        &mut self,
        reader: &dyn FileReader,
        blksize: usize,
        block: u64,
        out: &mut Vec<u8>,
    ) -> io::Result<usize> {
        let Some(mut checkpoint) = self.checkpoints.get(&block).copied() else {
            return Err(io::Error::other(format!(
                "netascii block {block} requested without a checkpoint"
            )));
        };
        let start = out.len();
        if let Some(byte) = checkpoint.pending.take() {
            out.push(byte);
        }
        self.scratch.resize(blksize, 0);
        'fill: while out.len() - start < blksize {
            let read = reader.read_at(checkpoint.source_offset, &mut self.scratch)?;
            if read == 0 {
                break;
            }
            for &byte in &self.scratch[..read] {
                if out.len() - start == blksize {
                    break 'fill;
                }
                checkpoint.source_offset += 1;
                let (first, second) = match byte {
                    b'\n' => (b'\r', Some(b'\n')),
                    b'\r' => (b'\r', Some(0)),
                    other => (other, None),
                };
                out.push(first);
                if let Some(second) = second {
                    if out.len() - start < blksize {
                        out.push(second);
                    } else {
                        checkpoint.pending = Some(second);
                    }
                }
            }
        }
        self.checkpoints.insert(block + 1, checkpoint);
        Ok(out.len() - start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::OpenFile;

    fn reader(bytes: &[u8], mode: Mode, blksize: usize) -> BlockReader {
        BlockReader::new(
            OpenFile::from_bytes(bytes.to_vec().into()).reader,
            mode,
            blksize,
        )
    }

    fn all_blocks(reader: &mut BlockReader, blksize: usize) -> Vec<Vec<u8>> {
        let mut blocks = Vec::new();
        for block in 1.. {
            let mut out = Vec::new();
            let len = reader.read_block(block, &mut out).expect("read");
            assert_eq!(len, out.len());
            blocks.push(out);
            if len < blksize {
                break;
            }
        }
        blocks
    }

    #[test]
    fn octet_blocks_end_with_a_short_or_empty_block() {
        let mut exact = reader(b"abcdefgh", Mode::Octet, 4);
        assert_eq!(
            all_blocks(&mut exact, 4),
            vec![b"abcd".to_vec(), b"efgh".to_vec(), vec![]]
        );
        let mut short = reader(b"abcdef", Mode::Octet, 4);
        assert_eq!(
            all_blocks(&mut short, 4),
            vec![b"abcd".to_vec(), b"ef".to_vec()]
        );
    }

    #[test]
    fn octet_blocks_span_chunks_and_rewind() {
        let bytes: Vec<u8> = (0..CHUNK_LEN * 2 + 777).map(|i| (i % 251) as u8).collect();
        let blksize = 1468;
        let mut blocks = reader(&bytes, Mode::Octet, blksize);
        assert_eq!(all_blocks(&mut blocks, blksize).concat(), bytes);
        // A rewind to an early block after the chunk moved on.
        let mut again = Vec::new();
        assert_eq!(blocks.read_block(2, &mut again).expect("reread"), blksize);
        assert_eq!(again, bytes[blksize..2 * blksize]);
        // Blocks larger than a chunk.
        let big = CHUNK_LEN + 8;
        let mut large = reader(&bytes, Mode::Octet, big);
        assert_eq!(all_blocks(&mut large, big).concat(), bytes);
    }

    #[test]
    fn netascii_translates_across_block_boundaries() {
        let mut blocks = reader(b"ab\ncd\re\n", Mode::Netascii, 3);
        let joined: Vec<u8> = all_blocks(&mut blocks, 3).concat();
        assert_eq!(joined, b"ab\r\ncd\r\0e\r\n");
        // "ab\r" | "\ncd" | "\r\0e" | "\r\n": both kinds of split exercised.
        let mut again = reader(b"ab\ncd\re\n", Mode::Netascii, 3);
        assert_eq!(
            all_blocks(&mut again, 3),
            vec![
                b"ab\r".to_vec(),
                b"\ncd".to_vec(),
                b"\r\0e".to_vec(),
                b"\r\n".to_vec()
            ]
        );
    }

    #[test]
    fn netascii_block_can_be_reread_until_forgotten() {
        let mut blocks = reader(b"\n\n\n\n", Mode::Netascii, 3);
        let mut first = Vec::new();
        blocks.read_block(1, &mut first).expect("read");
        let mut second = Vec::new();
        blocks.read_block(2, &mut second).expect("read");
        let mut second_again = Vec::new();
        blocks.read_block(2, &mut second_again).expect("reread");
        assert_eq!(second, second_again);
        assert_eq!(first, b"\r\n\r");
        assert_eq!(second, b"\n\r\n");
        blocks.forget_before(3);
        assert!(blocks.read_block(2, &mut Vec::new()).is_err());
        let mut third = Vec::new();
        blocks.read_block(3, &mut third).expect("read");
        assert_eq!(third, b"\r\n");
    }
}
