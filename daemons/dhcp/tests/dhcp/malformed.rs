//! Peer bytes never panic the server: malformed, truncated and random
//! datagrams are dropped and counted. Also replays the fuzz corpus.

use std::path::Path;

use dhcproto::v4::{Architecture, DhcpOption, MessageType};
use rand::{Rng, SeedableRng};

use crate::support::*;

fn pxe_discover() -> Vec<u8> {
    Req::new(MessageType::Discover, mac(1))
        .option(DhcpOption::ClientSystemArchitecture(Architecture::from(7)))
        .option(DhcpOption::ClassIdentifier(
            b"PXEClient:Arch:00007:UNDI:003010".to_vec(),
        ))
        .option(DhcpOption::UserClass(b"iPXE".to_vec()))
        .raw(82, &[1, 2, 3, 4])
        .bytes()
}

/// Datagrams that reached protocol logic (or its subnet check).
fn handled(counters: &ironroot_dhcp::Counters) -> u64 {
    counters.discovers
        + counters.requests
        + counters.declines
        + counters.releases
        + counters.informs
        + counters.ignored_foreign_subnet
}

#[test]
fn every_truncation_is_dropped_and_counted() {
    let bytes = pxe_discover();
    let end = bytes.iter().rposition(|b| *b == 255).expect("END");
    let mut server = server(pool_config(100, 200), &[1]);
    for len in 0..end {
        let out = server.handle(at(0), incoming(&bytes[..len]));
        if len < 240 {
            assert!(out.is_empty(), "len {len}");
        }
    }
    let counters = server.counters().clone();
    assert_eq!(counters.received, end as u64);
    assert_eq!(
        counters.dropped_undecodable() + handled(&counters),
        counters.received
    );
    assert!(counters.dropped_truncated >= 240);
}

#[test]
fn bad_cookie_op_and_hlen_are_malformed() {
    let good = pxe_discover();
    let mut server = server(config(), &[1]);
    for (offset, value) in [(236usize, 0u8), (0, 2), (2, 17)] {
        let mut bytes = good.clone();
        bytes[offset] = value;
        assert!(server.handle(at(0), incoming(&bytes)).is_empty());
    }
    assert_eq!(server.counters().dropped_malformed, 3);
    assert_eq!(
        server.handle(at(0), incoming(&good)).len(),
        1,
        "the original is fine"
    );
}

#[test]
fn random_mutations_never_panic() {
    let seeds = [
        pxe_discover(),
        Req::new(MessageType::Request, mac(1))
            .requested(reservation(1).ip)
            .bytes(),
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xd4c9);
    let mut server = server(pool_config(100, 200), &[1]);
    let iterations = 20_000u64;
    for i in 0..iterations {
        let mut bytes = seeds[(i % 2) as usize].clone();
        for _ in 0..rng.gen_range(1..8) {
            match rng.gen_range(0..3) {
                0 => {
                    let at = rng.gen_range(0..bytes.len());
                    bytes[at] = rng.gen();
                }
                1 => bytes.truncate(rng.gen_range(0..bytes.len())),
                _ => bytes.extend((0..rng.gen_range(1..64)).map(|_| rng.gen::<u8>())),
            }
            if bytes.is_empty() {
                break;
            }
        }
        server.handle(at(i), incoming(&bytes));
        while let Some(write) = server.poll_lease_write(window_end(&server, at(i))) {
            server.handle_lease_durable(at(i), write.id);
        }
    }
    let counters = server.counters();
    assert_eq!(counters.received, iterations);
    assert_eq!(
        counters.dropped_undecodable() + handled(&counters),
        iterations
    );
    if let Some(pool) = server.pool() {
        pool.check_invariants();
    }
}

#[test]
fn fuzz_corpus_replays_without_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    let mut files = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("corpus {}: {error}", dir.display()))
        .map(|entry| entry.expect("entry").path())
        .collect::<Vec<_>>();
    files.sort();
    assert!(files.len() >= 8, "corpus has {} files", files.len());
    let mut server = server(pool_config(100, 200), &[1]);
    let mut decoded = 0;
    for file in &files {
        let bytes = std::fs::read(file).expect("read");
        if ironroot_dhcp::decode_request(&bytes, 1500).is_ok() {
            decoded += 1;
        }
        server.handle(at(0), incoming(&bytes));
    }
    assert!(decoded >= 4, "valid seeds decode ({decoded})");
    assert!(
        server.counters().dropped_undecodable() >= 3,
        "invalid seeds are dropped"
    );
}
