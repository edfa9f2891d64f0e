//! Bodies of the fuzz targets in `fuzz/`, here so that a unit test replays
//! the committed corpus through exactly the same code without cargo-fuzz.

use std::time::Duration;

use ironroot_net::Instant;

use crate::options::{negotiate, Limits};
use crate::source::OpenFile;
use crate::transfer::Transfer;
use crate::wire::{self, Mode, Opcode, Packet, RawOption};

/// Decoding never panics, and whatever decodes re-encodes to a packet that
/// decodes the same.
pub fn fuzz_decode(bytes: &[u8]) {
    let Ok(packet) = wire::decode(bytes) else {
        return;
    };
    let mut out = Vec::new();
    match &packet {
        Packet::Rrq(request) => wire::encode_request(&mut out, Opcode::Rrq, request),
        Packet::Wrq(request) => wire::encode_request(&mut out, Opcode::Wrq, request),
        Packet::Data { block, data } => {
            wire::encode_data_header(&mut out, *block);
            out.extend_from_slice(data);
        }
        Packet::Ack { block } => wire::encode_ack(&mut out, *block),
        Packet::Error { code, message } => wire::encode_error(&mut out, *code, message),
        Packet::Oack { options } => {
            let pairs: Vec<(&str, &str)> = options.iter().map(|o| (o.name, o.value)).collect();
            wire::encode_oack(&mut out, &pairs);
        }
    }
    assert_eq!(
        wire::decode(&out).as_ref(),
        Ok(&packet),
        "re-encoding changed the packet"
    );
}

/// A transfer fed arbitrary client input. Layout: mode, blksize, windowsize
/// and two bytes of file size, then steps: `0` a timeout, `1 hi lo` an ACK,
/// `2 len bytes..` a raw datagram. Invariants: one step never yields more
/// than a window of DATA (no sorcerer's apprentice), and every DATA block
/// is within the file.
pub fn fuzz_transfer(bytes: &[u8]) {
    let [mode, blksize, windowsize, size_hi, size_lo, steps @ ..] = bytes else {
        return;
    };
    let mode = if mode & 1 == 1 {
        Mode::Netascii
    } else {
        Mode::Octet
    };
    let size = usize::from(u16::from_be_bytes([*size_hi, *size_lo])) * 3;
    let content: Vec<u8> = (0..size).map(|index| b"ab\ncd\r"[index % 6]).collect();
    let limits = Limits {
        blksize_max: 1468,
        windowsize_max: 64,
        window_bytes_max: 192 * 1024,
        timeout_default: Duration::from_secs(1),
        rto_min: Duration::from_millis(20),
    };
    let blksize_text = (u16::from(*blksize) * 6).to_string();
    let windowsize_text = windowsize.to_string();
    let options = [
        RawOption {
            name: "blksize",
            value: &blksize_text,
        },
        RawOption {
            name: "windowsize",
            value: &windowsize_text,
        },
    ];
    let file = OpenFile::from_bytes(content.into());
    let negotiation = negotiate(&options, mode, file.size, &limits);
    let mut now = Instant::ZERO;
    let mut transfer = Transfer::new(now, file, mode, negotiation.params, &negotiation.oack, 3);
    let window = usize::from(negotiation.params.windowsize);
    let mut out = Vec::new();
    let mut rest = steps;
    loop {
        let mut sent = 0;
        while transfer.poll_transmit(&mut out) {
            sent += 1;
            assert!(sent <= window + 1, "one step sent more than a window");
            assert!(out.len() <= wire::DATA_HEADER_LEN + negotiation.params.blksize.max(512) + 64);
        }
        match rest {
            [0, tail @ ..] => {
                now += Duration::from_secs(300);
                transfer.handle_timeout(now);
                rest = tail;
            }
            [1, hi, lo, tail @ ..] => {
                wire::encode_ack(&mut out, u16::from_be_bytes([*hi, *lo]));
                transfer.handle_datagram(now, &out);
                rest = tail;
            }
            [2, len, tail @ ..] => {
                let len = usize::from(*len).min(tail.len());
                let (datagram, tail) = tail.split_at(len);
                transfer.handle_datagram(now, datagram);
                rest = tail;
            }
            [_, tail @ ..] => rest = tail,
            [] => break,
        }
    }
}

#[cfg(test)]
mod tests {
    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|err| panic!("reading {}: {err}", dir.display()))
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|path| std::fs::read(path).expect("corpus file"))
            .collect()
    }

    #[test]
    fn decode_corpus_replays() {
        let inputs = corpus("decode");
        assert!(inputs.len() >= 10, "decode corpus is too small");
        for input in inputs {
            super::fuzz_decode(&input);
        }
    }

    #[test]
    fn transfer_corpus_replays() {
        let inputs = corpus("transfer");
        assert!(inputs.len() >= 5, "transfer corpus is too small");
        for input in inputs {
            super::fuzz_transfer(&input);
        }
    }
}
