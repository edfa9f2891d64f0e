//! Replays the committed fuzz corpus through the same entry point as the
//! fuzz target, so CI exercises it without cargo-fuzz.

#[test]
fn corpus_replays_without_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/rpc_call");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        ironroot_nfs::fuzz_one(&bytes);
        count += 1;
    }
    assert!(count >= 10, "corpus has only {count} inputs");
}

/// Valid calls with genuine handles (the fuzz entry point's server uses
/// the default all-zero key, client 1, root id 1, file id 2), so mutations
/// reach every procedure's argument decoding, not only the MAC check.
fn seeds() -> Vec<Vec<u8>> {
    use ironroot_nfs::rpc::{encode_call, Auth};
    use ironroot_nfs::{Handle, HandleKey};
    let key = HandleKey::new([0; 32]);
    let root = key.encode(&Handle {
        client: 1,
        file_id: 1,
        version: None,
    });
    let file = key.encode(&Handle {
        client: 1,
        file_id: 2,
        version: Some(1),
    });
    let opaque = |bytes: &[u8]| {
        let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out.resize(4 + bytes.len().div_ceil(4) * 4, 0);
        out
    };
    let auth = Auth::Unix {
        uid: 0,
        gid: 0,
        gids: vec![1, 2],
    };
    let mut seeds = Vec::new();
    for proc_ in 0..22 {
        let fh = if proc_ == 6 { &file } else { &root };
        let mut args = opaque(fh);
        match proc_ {
            3 => args.extend_from_slice(&opaque(b"f")),
            4 => args.extend_from_slice(&0x3fu32.to_be_bytes()),
            6 => args.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0]),
            16 | 17 => args.extend_from_slice(&[0; 20]),
            _ => {}
        }
        if proc_ == 17 {
            args.extend_from_slice(&4096u32.to_be_bytes());
        }
        seeds.push(encode_call(proc_, 100_003, 3, proc_, &auth, &args));
    }
    seeds.push(encode_call(99, 100_005, 3, 1, &auth, &opaque(b"/")));
    seeds
}

#[test]
fn mutated_calls_never_panic() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for seed in seeds() {
        for _ in 0..1000 {
            let mut input = seed.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % input.len().max(1);
                match next() % 4 {
                    0 if at < input.len() => input[at] ^= 1 << (next() % 8),
                    1 => input.truncate(at),
                    2 if at + 4 <= input.len() => {
                        input[at..at + 4].copy_from_slice(&(next() as u32).to_be_bytes())
                    }
                    _ => input.insert(at.min(input.len()), next() as u8),
                }
            }
            ironroot_nfs::fuzz_one(&input);
        }
    }
}

/// With IRONROOT_NFS_WRITE_CORPUS=1, writes the seeds above (calls with
/// genuine handles) into the committed corpus, so cargo-fuzz starts deep.
#[test]
fn seeds_are_in_the_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/rpc_call");
    let write = std::env::var("IRONROOT_NFS_WRITE_CORPUS").is_ok_and(|v| v == "1");
    for (index, seed) in seeds().iter().enumerate() {
        let path = dir.join(format!("seed_{index:02}"));
        if write {
            std::fs::write(&path, seed).unwrap();
        }
        assert_eq!(
            std::fs::read(&path).ok().as_ref(),
            Some(seed),
            "{} is stale: rerun with IRONROOT_NFS_WRITE_CORPUS=1",
            path.display()
        );
    }
}
