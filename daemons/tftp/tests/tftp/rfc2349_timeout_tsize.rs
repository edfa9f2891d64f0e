//! RFC 2349: the timeout option (1..=255 s) sets the retransmission
//! interval; tsize 0 in a read request is answered with the file's size.

use std::time::Duration;

use ironroot_net::Instant;
use ironroot_tftp::wire::{Mode, Opcode};

use crate::harness::*;

#[test]
fn tsize_reports_the_file_size() {
    let server = server(&[("initrd", &pattern(123_456))]);
    let (mut transfer, _ticket) = start(&server, &rrq("initrd", &[("tsize", "0")]));
    let sent = drain(&mut transfer);
    assert_eq!(
        oack_of(&sent[0]),
        vec![("tsize".to_string(), "123456".to_string())]
    );
}

#[test]
fn tsize_is_not_offered_for_netascii() {
    let server = server(&[("cfg", b"a\nb\n")]);
    let datagram = request(Opcode::Rrq, "cfg", Mode::Netascii, &[("tsize", "0")]);
    let (mut transfer, _ticket) = start(&server, &datagram);
    assert_eq!(
        data_blocks(&drain(&mut transfer)),
        vec![(1, b"a\r\nb\r\n".to_vec())]
    );
}

#[test]
fn timeout_option_sets_the_retransmission_interval() {
    let server = server(&[("f", &pattern(100))]);
    let (mut transfer, _ticket) = start(&server, &rrq("f", &[("timeout", "3")]));
    let sent = drain(&mut transfer);
    assert_eq!(
        oack_of(&sent[0]),
        vec![("timeout".to_string(), "3".to_string())]
    );
    assert_eq!(transfer.poll_timeout(), Some(Instant::from_millis(3000)));
    transfer.handle_datagram(Instant::from_millis(10), &ack(0));
    drain(&mut transfer);
    assert_eq!(transfer.poll_timeout(), Some(Instant::from_millis(3010)));
    assert_eq!(transfer.params().timeout, Duration::from_secs(3));
}

#[test]
fn timeout_out_of_range_is_ignored() {
    let server = server(&[("f", &pattern(100))]);
    for asked in ["0", "256", "x"] {
        let (mut transfer, _ticket) = start(&server, &rrq("f", &[("timeout", asked)]));
        let sent = data_blocks(&drain(&mut transfer));
        assert_eq!(sent.len(), 1, "timeout {asked} produced an OACK");
        assert_eq!(transfer.params().timeout, Duration::from_secs(1));
    }
}

#[test]
fn without_the_option_the_interval_adapts_to_the_round_trip() {
    let server = server(&[("f", &pattern(512 * 40))]);
    let (mut transfer, _ticket) = start(&server, &rrq("f", &[]));
    drain(&mut transfer);
    // Before any round trip is measured: the configured 1 s.
    assert_eq!(transfer.poll_timeout(), Some(Instant::from_millis(1000)));
    let mut now = Instant::ZERO;
    for block in 1..=10u16 {
        now += Duration::from_millis(2);
        transfer.handle_datagram(now, &ack(block));
        drain(&mut transfer);
    }
    // 2 ms round trips: the floor (50 ms by default).
    assert_eq!(
        transfer.poll_timeout(),
        Some(now + Duration::from_millis(50))
    );
    // Each timeout doubles it, up to the configured 1 s.
    let mut deadline = transfer.poll_timeout().expect("deadline");
    for expected_ms in [100, 200, 400, 800] {
        transfer.handle_timeout(deadline);
        drain(&mut transfer);
        let next = transfer.poll_timeout().expect("deadline");
        assert_eq!(next - deadline, Duration::from_millis(expected_ms));
        deadline = next;
    }
}
