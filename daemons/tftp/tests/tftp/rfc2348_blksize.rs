//! RFC 2348: blksize 8..=65464, capped by the configured (MTU-derived)
//! maximum; out-of-range requests fall back to 512 without an OACK entry.

use ironroot_tftp::Outcome;

use crate::harness::*;

fn granted(config: ironroot_tftp::TftpConfig, asked: &str) -> Option<String> {
    let server = server_with(config, &[("f", &pattern(100))]);
    let (mut transfer, _ticket) = start(&server, &rrq("f", &[("blksize", asked)]));
    let sent = drain(&mut transfer);
    match ironroot_tftp::wire::decode(&sent[0]) {
        Ok(ironroot_tftp::wire::Packet::Oack { .. }) => oack_of(&sent[0])
            .into_iter()
            .find(|(name, _)| name == "blksize")
            .map(|(_, value)| value),
        _ => None,
    }
}

#[test]
fn blksize_is_granted_within_the_cap() {
    assert_eq!(granted(config(), "1468").as_deref(), Some("1468"));
    assert_eq!(granted(config(), "8").as_deref(), Some("8"));
    assert_eq!(granted(config(), "1024").as_deref(), Some("1024"));
}

#[test]
fn blksize_above_the_cap_is_lowered_to_it() {
    assert_eq!(granted(config(), "65464").as_deref(), Some("1468"));
    let mut jumbo = config();
    jumbo.mtu = 9000;
    assert_eq!(granted(jumbo, "65464").as_deref(), Some("8968"));
    let mut explicit = config();
    explicit.blksize_max = Some(65_464);
    assert_eq!(granted(explicit, "65464").as_deref(), Some("65464"));
}

#[test]
fn blksize_below_eight_or_garbage_is_ignored() {
    assert_eq!(granted(config(), "7"), None);
    assert_eq!(granted(config(), "0"), None);
    assert_eq!(granted(config(), "-5"), None);
    assert_eq!(granted(config(), "lots"), None);
}

#[test]
fn data_blocks_have_the_negotiated_size() {
    let content = pattern(10_000);
    let server = server(&[("f", &content)]);
    let (mut transfer, _ticket) = start(&server, &rrq("f", &[("blksize", "1468")]));
    drain(&mut transfer);
    transfer.handle_datagram(ironroot_net::Instant::from_millis(1), &ack(0));
    let sent = data_blocks(&drain(&mut transfer));
    assert_eq!(sent[0].1.len(), 1468);
    let (file, outcome) = fetch_after(&mut transfer, Some(1));
    assert_eq!(file, content[1468..]);
    assert_eq!(
        outcome,
        Outcome::Completed {
            bytes: 10_000,
            blocks: 7
        }
    );
}
