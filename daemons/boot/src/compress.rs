//! Decompression chosen by file-name suffix, shared by package members
//! (`data.tar.xz`) and kernel modules (`foo.ko.xz`). Output is bounded by
//! the caller: readers here never allocate ahead of the data.

use std::io::Read;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Xz,
    Zstd,
    Gzip,
}

impl Codec {
    /// Codec and the name without its compression suffix.
    pub fn from_name(name: &str) -> (Codec, &str) {
        for (suffix, codec) in [
            (".xz", Codec::Xz),
            (".zst", Codec::Zstd),
            (".gz", Codec::Gzip),
        ] {
            if let Some(stem) = name.strip_suffix(suffix) {
                return (codec, stem);
            }
        }
        (Codec::None, name)
    }

    pub fn reader<'a>(self, input: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Codec::None => Box::new(input),
            // Multi-stream: dpkg and the kernel's module compression may emit
            // concatenated xz streams.
            Codec::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(input)),
            Codec::Zstd => Box::new(
                ruzstd::decoding::StreamingDecoder::new(input)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            ),
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        })
    }
}

/// Reads all of `input` through `codec`, failing with `None` past `bytes_max`.
pub fn decompress_bounded(
    codec: Codec,
    input: &[u8],
    bytes_max: u64,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    codec
        .reader(input)?
        .take(bytes_max + 1)
        .read_to_end(&mut out)?;
    Ok((out.len() as u64 <= bytes_max).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn suffixes_select_codecs() {
        assert_eq!(Codec::from_name("data.tar.xz"), (Codec::Xz, "data.tar"));
        assert_eq!(Codec::from_name("e1000.ko.zst"), (Codec::Zstd, "e1000.ko"));
        assert_eq!(Codec::from_name("a.ko"), (Codec::None, "a.ko"));
    }

    #[test]
    fn xz_and_gzip_round_trip_and_bound() {
        let payload = vec![7u8; 10_000];
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&payload).unwrap();
        let xz = xz.finish().unwrap();
        assert_eq!(
            decompress_bounded(Codec::Xz, &xz, 10_000).unwrap(),
            Some(payload.clone())
        );
        assert_eq!(decompress_bounded(Codec::Xz, &xz, 9_999).unwrap(), None);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&payload).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            decompress_bounded(Codec::Gzip, &gz, 1 << 20).unwrap(),
            Some(payload)
        );
        assert!(decompress_bounded(Codec::Xz, b"garbage", 100).is_err());
    }
}
