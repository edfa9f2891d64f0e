//! Entry points shared by the fuzz targets (`fuzz/`) and the unit test that
//! replays the committed corpus (`fuzz/corpus/<target>/`), so CI runs every
//! decoder on those inputs without cargo-fuzz. Each must return, never panic.

use crate::deb::DebPackage;

pub fn decode_ar(data: &[u8]) {
    if let Ok(members) = crate::ar::parse_ar(data) {
        let total: usize = members.iter().map(|m| m.data.len()).sum();
        assert!(total <= data.len());
    }
}

pub fn decode_module(data: &[u8]) {
    if let Ok(info) = crate::modinfo::parse_module(data) {
        assert!(info.depends.iter().all(|d| !d.is_empty()));
    }
}

/// The whole .deb path: ar, decompression, tar walk (files read to /dev/null).
pub fn decode_deb(data: &[u8]) {
    let Ok(deb) = DebPackage::from_bytes("fuzz.deb".into(), data.to_vec()) else {
        return;
    };
    let _ = deb.for_each_file(|_, reader| {
        let _ = std::io::copy(
            &mut std::io::Read::take(reader, 1 << 20),
            &mut std::io::sink(),
        );
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn replay(target: &str, decode: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            decode(&bytes);
            // Every prefix too: truncation is the commonest corruption.
            for cut in [1, bytes.len() / 2, bytes.len().saturating_sub(1)] {
                decode(&bytes[..cut.min(bytes.len())]);
            }
            count += 1;
        }
        assert!(count > 0, "empty corpus in {}", dir.display());
    }

    #[test]
    fn corpus_ar() {
        replay("ar", super::decode_ar);
    }

    #[test]
    fn corpus_modinfo() {
        replay("modinfo", super::decode_module);
    }

    #[test]
    fn corpus_deb() {
        replay("deb", super::decode_deb);
    }

    /// Writes the seed corpus from the test builders; run with
    /// `--ignored` after changing them.
    #[test]
    #[ignore]
    fn write_seed_corpus() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let deb = crate::deb::tests::build_deb(&[("boot/vmlinuz-1", b"k"), ("bin/busybox", b"b")]);
        let module = crate::modinfo::tests::build_module(
            b"name=lockd\0depends=sunrpc,grace\0vermagic=6.1.0\0softdep=pre: x\0",
        );
        let ar = crate::ar::build_ar(&[("debian-binary", b"2.0\n"), ("data.tar.gz/", b"odd")]);
        std::fs::write(root.join("deb/small.deb"), &deb).unwrap();
        std::fs::write(root.join("ar/small.deb"), &deb).unwrap();
        std::fs::write(root.join("ar/odd-member.a"), ar).unwrap();
        std::fs::write(root.join("modinfo/lockd.ko"), module).unwrap();
    }
}
