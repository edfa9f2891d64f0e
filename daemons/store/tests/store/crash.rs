//! Crash recovery on the real filesystem: a child process writes entries
//! and reports each acknowledged one; the parent kills it with SIGKILL at
//! seeded random moments, reopens the store, and checks that every
//! acknowledged entry is there and every object reads back intact.
//! `IRONROOT_STORE_CRASH_ROUNDS=200` runs more rounds than CI's 8.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ironroot_store::journal::Lease;
use ironroot_store::model::Timestamp;
use ironroot_store::storage::FsStorage;
use ironroot_store::store::Store;

const DIR_VAR: &str = "IRONROOT_STORE_CRASH_DIR";
/// Kill rounds; CI runs the default, a longer run sets more.
const ROUNDS_VAR: &str = "IRONROOT_STORE_CRASH_ROUNDS";
const ROUNDS_DEFAULT: u64 = 8;

/// The child: write forever, printing `ACK <seq>` once each write returned.
#[test]
#[ignore]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let dir = Path::new(&dir);
    let storage = Arc::new(FsStorage::open(&dir.join("store")).unwrap());
    let (mut store, _) = Store::open(storage).unwrap();
    store.promote(1, 0);
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    for i in 0u64.. {
        let record = if i % 3 == 0 {
            let bytes: Vec<u8> = (0..(i * 7919 % 300_000)).map(|j| (j ^ i) as u8).collect();
            std::fs::write(tree.join(format!("f{}", i % 5)), bytes).unwrap();
            store
                .import_dir(
                    "img",
                    &tree,
                    Timestamp {
                        secs: i as i64,
                        nanos: 0,
                    },
                    "w",
                )
                .unwrap()
        } else {
            let lease = Lease {
                ipv4: [10, 0, (i >> 8) as u8, i as u8],
                expires_unix_secs: i,
            };
            store
                .record_lease([2, 0, 0, 0, 0, (i % 7) as u8], lease)
                .unwrap()
        };
        println!("ACK {}", record.seq);
    }
}

#[test]
fn acknowledged_entries_survive_kill_9_at_random_points() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut state = 0x0c0f_fee5_u64;
    let mut acked_max = 0u64;
    let rounds = std::env::var(ROUNDS_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS_DEFAULT);
    for round in 0..rounds {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let run_ms = 50 + (state >> 33) % 400;
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acked = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(seq) = line.strip_prefix("ACK ") {
                    acked.push(seq.trim().parse::<u64>().unwrap());
                }
            }
            acked
        });
        std::thread::sleep(Duration::from_millis(run_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        acked_max = acked_max.max(acked.last().copied().unwrap_or(0));

        let storage = Arc::new(FsStorage::open(&tmp.path().join("store")).unwrap());
        let (store, _) = Store::open(storage).unwrap();
        assert!(
            store.state().last_seq() >= acked_max,
            "round {round}: acknowledged {acked_max}, recovered {}",
            store.state().last_seq()
        );
        for seq in &acked {
            assert_eq!(store.journal().read_from(*seq, 1).unwrap()[0].seq, *seq);
        }
        for id in store.live_objects().unwrap() {
            store
                .objects()
                .get(&id)
                .expect("every live object reads back intact");
        }
    }
    assert!(
        acked_max > 10,
        "the child made progress: {acked_max} entries"
    );
}
