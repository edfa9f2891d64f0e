use super::*;

/// The key the fuzz target and its corpus use.
pub const FUZZ_KEY: &[u8] = b"ironroot-fuzz-key-0123456789abcdef";

fn key() -> Key {
    Key::new(FUZZ_KEY.to_vec())
}

fn samples() -> Vec<Packet> {
    let heartbeat = Heartbeat {
        incarnation: 3,
        seq: 17,
        role: Role::Active,
        flags: Flags {
            eligible: false,
            vote: true,
            handoff: false,
            wants_active: true,
        },
        echo_incarnation: 5,
        echo_seq: 99,
    };
    let request = WitnessRequest {
        incarnation: 2,
        request_id: 8,
        kind: RequestKind::Acquire,
        peer_alive: false,
    };
    let reply = WitnessReply {
        to: NodeId(2),
        request_id: 8,
        granted: true,
        holder: Some(NodeId(2)),
        lease_ms: 600,
        outdated: Some(NodeId(1)),
    };
    [
        Message::Heartbeat(heartbeat),
        Message::WitnessRequest(request),
        Message::WitnessReply(reply),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, message)| Packet {
        cluster_id: 7,
        sender: NodeId(u16::try_from(i).unwrap_or(0)),
        message,
    })
    .collect()
}

#[test]
fn every_message_round_trips() {
    for packet in samples() {
        let bytes = packet.encode(&key());
        assert!(bytes.len() <= PACKET_LEN_MAX);
        assert_eq!(Packet::decode(&key(), &bytes), Ok(packet));
    }
}

#[test]
fn any_flipped_bit_or_other_key_is_forged() {
    let bytes = samples()[0].encode(&key());
    for index in 0..bytes.len() {
        let mut copy = bytes.clone();
        copy[index] ^= 0x01;
        assert_eq!(
            Packet::decode(&key(), &copy),
            Err(DecodeError::Forged),
            "byte {index}"
        );
    }
    let other = Key::new(vec![1; 32]);
    assert_eq!(Packet::decode(&other, &bytes), Err(DecodeError::Forged));
}

#[test]
fn truncated_and_padded_packets_are_rejected() {
    let bytes = samples()[0].encode(&key());
    for len in 0..bytes.len() {
        assert!(Packet::decode(&key(), &bytes[..len]).is_err());
        assert!(Packet::parse_signed(&bytes[..len]).is_err() || len == bytes.len() - TAG_LEN);
    }
    let signed = &bytes[..bytes.len() - TAG_LEN];
    let mut padded = signed.to_vec();
    padded.push(0);
    assert_eq!(
        Packet::parse_signed(&padded),
        Err(DecodeError::Length(padded.len()))
    );
}

#[test]
fn unknown_role_and_flags_are_field_errors() {
    let bytes = samples()[0].encode(&key());
    let signed = &bytes[..bytes.len() - TAG_LEN];
    let mut role = signed.to_vec();
    role[HEADER_LEN + 16] = 42;
    assert_eq!(Packet::parse_signed(&role), Err(DecodeError::Field("role")));
    let mut flags = signed.to_vec();
    flags[HEADER_LEN + 17] = 0x80;
    assert_eq!(
        Packet::parse_signed(&flags),
        Err(DecodeError::Field("flags"))
    );
}

#[test]
fn replay_guard_orders_by_incarnation_then_sequence() {
    let mut guard = ReplayGuard::default();
    assert_eq!(guard.check(2, 5), Freshness::Fresh { restarted: false });
    assert_eq!(guard.check(2, 5), Freshness::Replayed);
    assert_eq!(guard.check(2, 4), Freshness::Replayed);
    assert_eq!(guard.check(1, 100), Freshness::Stale);
    assert_eq!(guard.check(2, 6), Freshness::Fresh { restarted: false });
    assert_eq!(guard.check(3, 1), Freshness::Fresh { restarted: true });
    assert_eq!(guard.last(), Some((3, 1)));
}

fn corpus_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/packet")
}

/// Replays the committed fuzz corpus through the same functions the fuzz
/// target calls: nothing panics, and the valid seeds still decode.
#[test]
fn fuzz_corpus_replays() {
    let mut entries: Vec<_> = std::fs::read_dir(corpus_dir())
        .expect("corpus directory")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    assert!(entries.len() >= 6, "corpus too small: {}", entries.len());
    let mut valid = 0;
    for path in entries {
        let bytes = std::fs::read(&path).expect("read corpus entry");
        let decoded = Packet::decode(&key(), &bytes);
        let _ = Packet::parse_signed(&bytes);
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("valid-"))
        {
            assert!(decoded.is_ok(), "{}: {decoded:?}", path.display());
            valid += 1;
        }
    }
    assert_eq!(valid, 3);
}

/// Regenerates the seed corpus: `cargo test -p ironroot-cluster -- --ignored write_corpus`.
#[test]
#[ignore]
fn write_corpus() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (i, packet) in samples().into_iter().enumerate() {
        let bytes = packet.encode(&key());
        std::fs::write(dir.join(format!("valid-{i}")), &bytes).expect("write");
        let mut forged = bytes.clone();
        forged[HEADER_LEN] ^= 0xff;
        std::fs::write(dir.join(format!("forged-{i}")), &forged).expect("write");
        std::fs::write(
            dir.join(format!("truncated-{i}")),
            &bytes[..bytes.len() / 2],
        )
        .expect("write");
        std::fs::write(
            dir.join(format!("unsigned-{i}")),
            &bytes[..bytes.len() - TAG_LEN],
        )
        .expect("write");
    }
    std::fs::write(dir.join("empty"), b"").expect("write");
}
