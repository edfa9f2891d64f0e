//! RFC 7440: send a window of blocks, wait for the ACK of its last one; an
//! ACK of an earlier block restarts the window after it; a timeout resends
//! the whole window; a duplicate ACK sends nothing.

use ironroot_net::Instant;
use ironroot_tftp::{Outcome, TftpConfig};

use crate::harness::*;

fn windowed(
    size: usize,
    window: &str,
) -> (Vec<u8>, Box<ironroot_tftp::Transfer>, ironroot_tftp::Ticket) {
    let content = pattern(size);
    let server = server(&[("f", &content)]);
    let (mut transfer, ticket) = start(
        &server,
        &rrq("f", &[("windowsize", window), ("blksize", "512")]),
    );
    drain(&mut transfer);
    transfer.handle_datagram(Instant::from_millis(1), &ack(0));
    (content, transfer, ticket)
}

fn blocks_of(transfer: &mut ironroot_tftp::Transfer) -> Vec<u16> {
    data_blocks(&drain(transfer))
        .into_iter()
        .map(|(block, _)| block)
        .collect()
}

#[test]
fn a_window_goes_out_then_waits_for_its_last_ack() {
    let (_, mut transfer, _ticket) = windowed(512 * 20, "4");
    assert_eq!(blocks_of(&mut transfer), vec![1, 2, 3, 4]);
    assert!(drain(&mut transfer).is_empty());
    transfer.handle_datagram(Instant::from_millis(2), &ack(4));
    assert_eq!(blocks_of(&mut transfer), vec![5, 6, 7, 8]);
}

#[test]
fn ack_of_an_earlier_block_rewinds_after_it() {
    let (_, mut transfer, _ticket) = windowed(512 * 20, "4");
    drain(&mut transfer);
    transfer.handle_datagram(Instant::from_millis(2), &ack(2));
    assert_eq!(blocks_of(&mut transfer), vec![3, 4, 5, 6]);
    assert_eq!(transfer.stats().rewinds, 1);
    // The same ACK again acknowledges nothing new: no storm.
    transfer.handle_datagram(Instant::from_millis(3), &ack(2));
    assert!(drain(&mut transfer).is_empty());
}

#[test]
fn timeout_resends_the_whole_window() {
    let (_, mut transfer, _ticket) = windowed(512 * 20, "4");
    drain(&mut transfer);
    let deadline = transfer.poll_timeout().expect("deadline");
    transfer.handle_timeout(deadline);
    assert_eq!(blocks_of(&mut transfer), vec![1, 2, 3, 4]);
}

#[test]
fn the_last_window_stops_at_the_end_of_the_file() {
    let (content, mut transfer, _ticket) = windowed(512 * 5 + 10, "4");
    assert_eq!(blocks_of(&mut transfer), vec![1, 2, 3, 4]);
    transfer.handle_datagram(Instant::from_millis(2), &ack(4));
    assert_eq!(blocks_of(&mut transfer), vec![5, 6]);
    transfer.handle_datagram(Instant::from_millis(3), &ack(6));
    assert_eq!(
        transfer.outcome(),
        Some(&Outcome::Completed {
            bytes: content.len() as u64,
            blocks: 6
        })
    );
}

#[test]
fn windowsize_is_capped_by_the_configuration() {
    let server = server(&[("f", &pattern(512 * 200))]);
    let (mut transfer, _ticket) = start(&server, &rrq("f", &[("windowsize", "500")]));
    let sent = drain(&mut transfer);
    assert_eq!(
        oack_of(&sent[0]),
        vec![("windowsize".to_string(), "64".to_string())]
    );
    transfer.handle_datagram(Instant::from_millis(1), &ack(0));
    assert_eq!(drain(&mut transfer).len(), 64);
}

/// RFC 7440 §4 lets the server answer a smaller windowsize: a window of
/// 8192-byte blocks is held to what the client's default socket buffer
/// holds, so the window's tail is not dropped on every round.
#[test]
fn a_window_of_large_blocks_is_capped_to_the_receive_buffer() {
    let config = TftpConfig {
        blksize_max: Some(8192),
        ..config()
    };
    let server = server_with(config, &[("f", &pattern(8192 * 100))]);
    let (mut transfer, _ticket) = start(
        &server,
        &rrq("f", &[("blksize", "8192"), ("windowsize", "64")]),
    );
    let sent = drain(&mut transfer);
    let window = 196_608 / ironroot_tftp::options::block_truesize(8192);
    assert_eq!(window, 11);
    assert_eq!(
        oack_of(&sent[0]),
        vec![
            ("blksize".to_string(), "8192".to_string()),
            ("windowsize".to_string(), window.to_string()),
        ]
    );
    transfer.handle_datagram(Instant::from_millis(1), &ack(0));
    assert_eq!(drain(&mut transfer).len(), window);
}

#[test]
fn windows_cross_the_block_number_rollover() {
    let content = pattern(65_600 * 8);
    let server = server(&[("big", &content)]);
    let options = [("blksize", "8"), ("windowsize", "16")];
    let (mut transfer, _ticket) = start(&server, &rrq("big", &options));
    let (file, outcome) = fetch(&mut transfer);
    assert_eq!(file, content);
    assert_eq!(
        outcome,
        Outcome::Completed {
            bytes: content.len() as u64,
            blocks: 65_601
        }
    );
}

#[test]
fn rewind_across_the_rollover_resolves_to_the_right_block() {
    let content = pattern(70_000 * 8);
    let server = server(&[("big", &content)]);
    let (mut transfer, _ticket) = start(
        &server,
        &rrq("big", &[("blksize", "8"), ("windowsize", "8")]),
    );
    drain(&mut transfer);
    transfer.handle_datagram(Instant::from_millis(1), &ack(0));
    // Acknowledge windows up to absolute block 65528 (wire 65528).
    let mut acked: u64 = 0;
    while acked < 65_528 {
        drain(&mut transfer);
        acked += 8;
        transfer.handle_datagram(Instant::from_millis(2), &ack(acked as u16));
    }
    // Window 65529..=65536 goes out as 65529..=65535, 0.
    assert_eq!(
        blocks_of(&mut transfer),
        vec![65529, 65530, 65531, 65532, 65533, 65534, 65535, 0]
    );
    transfer.handle_datagram(Instant::from_millis(3), &ack(65533));
    let resent = data_blocks(&drain(&mut transfer));
    let numbers: Vec<u16> = resent.iter().map(|(block, _)| *block).collect();
    assert_eq!(numbers, vec![65534, 65535, 0, 1, 2, 3, 4, 5]);
    // Wire block 0 here is absolute block 65536.
    let offset = 65_535 * 8;
    assert_eq!(resent[2].1, content[offset..offset + 8]);
}
