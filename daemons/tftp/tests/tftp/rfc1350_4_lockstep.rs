//! RFC 1350 §4 (lock-step acknowledgement, retransmission on timeout,
//! client errors), RFC 1123 §4.2.3.1 (sorcerer's apprentice) and block
//! number rollover past 65535.

use std::time::Duration;

use ironroot_net::Instant;
use ironroot_tftp::wire::ErrorCode;
use ironroot_tftp::Outcome;

use crate::harness::*;

#[test]
fn next_block_waits_for_the_ack() {
    let content = pattern(2000);
    let server = server(&[("f", &content)]);
    let (mut transfer, _ticket) = start(&server, &rrq("f", &[]));
    assert_eq!(data_blocks(&drain(&mut transfer)).len(), 1);
    assert!(drain(&mut transfer).is_empty());
    transfer.handle_datagram(Instant::from_millis(1), &ack(1));
    let sent = data_blocks(&drain(&mut transfer));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, 2);
    assert_eq!(sent[0].1, content[512..1024]);
}

#[test]
fn duplicate_acks_never_trigger_a_resend() {
    let server = server(&[("f", &pattern(2000))]);
    let (mut transfer, _ticket) = start(&server, &rrq("f", &[]));
    drain(&mut transfer);
    transfer.handle_datagram(Instant::from_millis(1), &ack(1));
    assert_eq!(data_blocks(&drain(&mut transfer))[0].0, 2);
    for _ in 0..5 {
        transfer.handle_datagram(Instant::from_millis(2), &ack(1));
        assert!(
            drain(&mut transfer).is_empty(),
            "a duplicate ACK caused a send"
        );
    }
    assert_eq!(transfer.stats().duplicate_acks, 5);
    transfer.handle_datagram(Instant::from_millis(3), &ack(2));
    assert_eq!(data_blocks(&drain(&mut transfer))[0].0, 3);
}

#[test]
fn after_a_timeout_one_duplicate_ack_resends_at_once() {
    let server = server(&[("f", &pattern(2000))]);
    let (mut transfer, _ticket) = start(&server, &rrq("f", &[]));
    drain(&mut transfer);
    transfer.handle_datagram(Instant::from_millis(1), &ack(1));
    assert_eq!(data_blocks(&drain(&mut transfer))[0].0, 2);
    // DATA 2 is lost; our timer fires and resends it; that is lost too.
    let deadline = transfer.poll_timeout().expect("deadline");
    transfer.handle_timeout(deadline);
    assert_eq!(data_blocks(&drain(&mut transfer))[0].0, 2);
    let later = deadline + Duration::from_millis(10);
    // The client's own timer re-sends ACK 1: resend DATA 2 now, once.
    transfer.handle_datagram(later, &ack(1));
    assert_eq!(data_blocks(&drain(&mut transfer))[0].0, 2);
    for _ in 0..5 {
        transfer.handle_datagram(later, &ack(1));
        assert!(
            drain(&mut transfer).is_empty(),
            "duplicates multiplied sends"
        );
    }
    // After the next timeout, one more.
    let deadline = transfer.poll_timeout().expect("deadline");
    transfer.handle_timeout(deadline);
    assert_eq!(drain(&mut transfer).len(), 1);
    transfer.handle_datagram(deadline, &ack(1));
    assert_eq!(drain(&mut transfer).len(), 1);
    transfer.handle_datagram(deadline, &ack(1));
    assert!(drain(&mut transfer).is_empty());
    // Progress: duplicates of the new ACK send nothing until a timeout.
    transfer.handle_datagram(deadline, &ack(2));
    assert_eq!(data_blocks(&drain(&mut transfer))[0].0, 3);
    transfer.handle_datagram(deadline, &ack(2));
    assert!(drain(&mut transfer).is_empty());
}

#[test]
fn timeout_resends_the_unacknowledged_block_until_retries_run_out() {
    let mut config = config();
    config.retries_max = 3;
    config.timeout_ms = 500;
    let server = server_with(config, &[("f", &pattern(2000))]);
    let (mut transfer, _ticket) = start(&server, &rrq("f", &[]));
    let first = drain(&mut transfer);
    assert_eq!(transfer.poll_timeout(), Some(Instant::from_millis(500)));
    // An early call changes nothing.
    transfer.handle_timeout(Instant::from_millis(499));
    assert!(drain(&mut transfer).is_empty());
    let mut now = Instant::ZERO;
    for _ in 0..3 {
        now = transfer.poll_timeout().expect("deadline");
        transfer.handle_timeout(now);
        assert_eq!(drain(&mut transfer), first);
    }
    transfer.handle_timeout(now + Duration::from_millis(500));
    assert_eq!(transfer.outcome(), Some(&Outcome::TimedOut { retries: 3 }));
    assert!(drain(&mut transfer).is_empty());
    assert_eq!(transfer.poll_timeout(), None);
    assert!(transfer.is_finished());
}

#[test]
fn progress_resets_the_retry_budget() {
    let mut config = config();
    config.retries_max = 1;
    let server = server_with(config, &[("f", &pattern(5000))]);
    let (mut transfer, _ticket) = start(&server, &rrq("f", &[]));
    drain(&mut transfer);
    for block in 1..=5u16 {
        let deadline = transfer.poll_timeout().expect("deadline");
        transfer.handle_timeout(deadline);
        drain(&mut transfer);
        transfer.handle_datagram(deadline, &ack(block));
        drain(&mut transfer);
    }
    assert_eq!(transfer.outcome(), None);
}

#[test]
fn client_error_ends_the_transfer_without_a_reply() {
    let server = server(&[("f", &pattern(2000))]);
    let (mut transfer, _ticket) = start(&server, &rrq("f", &[]));
    drain(&mut transfer);
    transfer.handle_datagram(Instant::from_millis(1), &error(ErrorCode::DiskFull, "full"));
    assert_eq!(
        transfer.outcome(),
        Some(&Outcome::ClientError {
            code: ErrorCode::DiskFull,
            message: "full".into()
        })
    );
    assert!(drain(&mut transfer).is_empty());
    assert!(transfer.is_finished());
}

#[test]
fn stray_packets_are_ignored() {
    let server = server(&[("f", &pattern(2000))]);
    let (mut transfer, _ticket) = start(&server, &rrq("f", &[]));
    drain(&mut transfer);
    for stray in [
        rrq("f", &[]),
        b"\x00\x03\x00\x01data".to_vec(),
        ack(9),
        b"\xff".to_vec(),
    ] {
        transfer.handle_datagram(Instant::from_millis(1), &stray);
        assert!(drain(&mut transfer).is_empty());
    }
    assert_eq!(transfer.stats().ignored_datagrams, 4);
    assert_eq!(transfer.outcome(), None);
}

#[test]
fn block_numbers_roll_over_to_zero() {
    // 65536 full blocks and a short one, at the smallest blksize to keep
    // the test quick: blocks 65535, 0, 1 on the wire.
    let content = pattern(65_537 * 8 - 3);
    let server = server(&[("big", &content)]);
    let (mut transfer, _ticket) = start(&server, &rrq("big", &[("blksize", "8")]));
    let (file, outcome) = fetch(&mut transfer);
    assert_eq!(file, content);
    assert_eq!(
        outcome,
        Outcome::Completed {
            bytes: content.len() as u64,
            blocks: 65_537
        }
    );
}
