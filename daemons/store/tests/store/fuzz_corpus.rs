//! Replays the committed fuzz corpora through the fuzz entry points, so CI
//! exercises the decoders without cargo-fuzz.

use std::path::Path;

type FuzzFn = fn(&[u8]);

fn replay(target: &str, run: FuzzFn) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        run(&bytes);
        count += 1;
    }
    assert!(count >= 3, "{target}: corpus of {count} inputs");
}

#[test]
fn wire_corpus() {
    replay("wire", ironroot_store::fuzzing::fuzz_wire);
}

#[test]
fn secondary_corpus() {
    replay("secondary", ironroot_store::fuzzing::fuzz_secondary);
}

#[test]
fn tar_corpus() {
    replay("tar", ironroot_store::fuzzing::fuzz_tar);
}

#[test]
fn disk_corpus() {
    replay("disk", ironroot_store::fuzzing::fuzz_disk);
}

/// Writes the seed corpus (`cargo test -- --ignored generate_corpus`).
#[test]
#[ignore]
fn generate_corpus() {
    use ironroot_store::journal::{Entry, Epoch, Lease, Record};
    use ironroot_store::model::{ObjectId, ObjectKind, Timestamp};
    use ironroot_store::replication::wire::{encode_message, Hello, Message, WIRE_VERSION};
    use ironroot_store::storage::{MemStorage, Storage};
    use ironroot_store::store::Store;
    use std::sync::Arc;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let put = |target: &str, name: &str, bytes: &[u8]| {
        std::fs::write(root.join(target).join(name), bytes).unwrap();
    };
    let epoch = Epoch { term: 1, node: 1 };
    let hello = Message::Hello(Hello {
        wire_version: WIRE_VERSION,
        node: 1,
        last: None,
        epochs: vec![],
        journal_first_seq: None,
    });
    let chunk = b"chunk bytes".to_vec();
    let chunk_id = ObjectId::of(ObjectKind::Chunk, &chunk);
    let record = Record {
        epoch,
        seq: 1,
        entry: Entry::Lease {
            mac: [2, 0, 0, 0, 0, 1],
            lease: Lease {
                ipv4: [10, 0, 0, 5],
                expires_unix_secs: 60,
            },
        },
    };
    let messages = [
        hello.clone(),
        Message::Offer {
            ids: vec![chunk_id],
        },
        Message::Objects {
            objects: vec![(chunk_id, ObjectKind::Chunk, chunk.clone())],
        },
        Message::Entry {
            record: Box::new(record.clone()),
        },
        Message::Ack { seq: 1 },
    ];
    for (i, message) in messages.iter().enumerate() {
        put("wire", &format!("message{i}"), &encode_message(message));
    }
    put("wire", "truncated", &encode_message(&hello)[..6]);
    put("wire", "oversize", &[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    let stream: Vec<u8> = messages[..4].iter().flat_map(encode_message).collect();
    put("secondary", "hello_offer_objects_entry", &stream);
    let mut bad_hash = stream.clone();
    if let Some(pos) = bad_hash.windows(5).position(|w| w == b"chunk") {
        bad_hash[pos] ^= 1;
    }
    put("secondary", "object_fails_hash", &bad_hash);
    put(
        "secondary",
        "entry_before_hello",
        &encode_message(&messages[3]),
    );

    let mem = Arc::new(MemStorage::new());
    let (mut store, _) = Store::open(mem.clone()).unwrap();
    store.promote(1, 0);
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("f"), b"file").unwrap();
    store
        .import_dir("img", tree.path(), Timestamp::default(), "m")
        .unwrap();
    store
        .record_lease(
            [1; 6],
            Lease {
                ipv4: [10, 0, 0, 1],
                expires_unix_secs: 5,
            },
        )
        .unwrap();
    let names = mem.list().unwrap();
    let file = |prefix: &str| {
        let name = names.iter().find(|n| n.starts_with(prefix)).unwrap();
        mem.read_all(name).unwrap()
    };
    let (journal, pack) = (file("journal-"), file("pack-"));
    store.compact().unwrap();
    let snapshot = mem.read_all("snapshot").unwrap();
    let len = (journal.len() / 2).max(pack.len()).max(snapshot.len());
    let padded = |bytes: &[u8], to: usize| {
        let mut out = bytes.to_vec();
        out.resize(to, 0);
        out
    };
    let disk = [
        padded(&journal, 2 * len),
        padded(&pack, len),
        padded(&snapshot, len),
    ]
    .concat();
    put("disk", "store_with_zero_tails", &disk);
    let mut flipped = disk.clone();
    flipped[len / 3] ^= 0x10;
    put("disk", "bit_flip", &flipped);
    put(
        "disk",
        "journal_only",
        &[journal.clone(), vec![0; journal.len()]].concat(),
    );
}

/// Seeded mutations of the corpus (bit flips, truncations, splices): a
/// cheap stand-in for a fuzzing run on every CI pass.
#[test]
fn mutated_corpus_never_panics() {
    let targets: [(&str, FuzzFn); 4] = [
        ("tar", ironroot_store::fuzzing::fuzz_tar),
        ("wire", ironroot_store::fuzzing::fuzz_wire),
        ("secondary", ironroot_store::fuzzing::fuzz_secondary),
        ("disk", ironroot_store::fuzzing::fuzz_disk),
    ];
    let mut state = 0x5eed_u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    for (target, run) in targets {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        for _ in 0..300 {
            let mut input = inputs[next() % inputs.len()].clone();
            if input.is_empty() {
                continue;
            }
            for _ in 0..(1 + next() % 4) {
                let at = next() % input.len();
                match next() % 3 {
                    0 => input[at] ^= 1 << (next() % 8),
                    1 => input.truncate(at.max(1)),
                    _ => input[at] = next() as u8,
                }
            }
            run(&input);
        }
    }
}
