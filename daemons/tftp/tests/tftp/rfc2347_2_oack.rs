//! RFC 2347 §2-3: the OACK names only options the client asked for and the
//! server accepts; ACK 0 starts the data; an ERROR (code 8) in answer to the
//! OACK ends the transfer cleanly, as UEFI firmware does to learn tsize
//! before it requests the file again.

use std::net::SocketAddr;
use std::time::Duration;

use ironroot_net::Instant;
use ironroot_tftp::wire::ErrorCode;
use ironroot_tftp::Outcome;

use crate::harness::*;

#[test]
fn oack_carries_only_requested_options() {
    let server = server(&[("f", &pattern(3000))]);
    let (mut transfer, _ticket) = start(&server, &rrq("f", &[("blksize", "1024")]));
    let sent = drain(&mut transfer);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        oack_of(&sent[0]),
        vec![("blksize".to_string(), "1024".to_string())]
    );
}

#[test]
fn no_accepted_option_means_no_oack() {
    let server = server(&[("f", &pattern(3000))]);
    let (mut transfer, _ticket) = start(&server, &rrq("f", &[("multicast", ""), ("blksize", "4")]));
    let sent = data_blocks(&drain(&mut transfer));
    assert_eq!(sent[0].0, 1);
    assert_eq!(sent[0].1.len(), 512);
}

#[test]
fn data_waits_for_ack_zero() {
    let content = pattern(3000);
    let server = server(&[("f", &content)]);
    let (mut transfer, _ticket) = start(&server, &rrq("f", &[("tsize", "0")]));
    drain(&mut transfer);
    assert!(drain(&mut transfer).is_empty());
    transfer.handle_datagram(Instant::from_millis(1), &ack(1));
    assert!(
        drain(&mut transfer).is_empty(),
        "ACK 1 before ACK 0 started data"
    );
    transfer.handle_datagram(Instant::from_millis(2), &ack(0));
    assert_eq!(data_blocks(&drain(&mut transfer))[0].0, 1);
    let (file, outcome) = fetch_after(&mut transfer, Some(1));
    assert_eq!(file, content[512..]);
    assert!(matches!(outcome, Outcome::Completed { .. }));
}

#[test]
fn oack_is_retransmitted_on_timeout() {
    let server = server(&[("f", &pattern(10))]);
    let (mut transfer, _ticket) = start(&server, &rrq("f", &[("tsize", "0")]));
    let oack = drain(&mut transfer);
    let deadline = transfer.poll_timeout().expect("deadline");
    transfer.handle_timeout(deadline);
    assert_eq!(drain(&mut transfer), oack);
    transfer.handle_datagram(deadline + Duration::from_millis(1), &ack(0));
    assert_eq!(data_blocks(&drain(&mut transfer)), vec![(1, pattern(10))]);
}

#[test]
fn uefi_tsize_probe_then_real_read() {
    let content = pattern(70_000);
    let server = server(&[("bootx64.efi", &content)]);
    let probe = rrq("bootx64.efi", &[("tsize", "0"), ("blksize", "1468")]);
    let (mut transfer, ticket) = start(&server, &probe);
    let sent = drain(&mut transfer);
    assert!(oack_of(&sent[0]).contains(&("tsize".to_string(), "70000".to_string())));
    let decline = error(ErrorCode::OptionRefused, "User aborted the transfer");
    transfer.handle_datagram(Instant::from_millis(1), &decline);
    assert!(matches!(
        transfer.outcome(),
        Some(Outcome::ClientError {
            code: ErrorCode::OptionRefused,
            ..
        })
    ));
    assert!(drain(&mut transfer).is_empty(), "no reply to an ERROR");
    server.record_outcome(transfer.outcome(), transfer.stats());
    drop(ticket);
    assert_eq!(server.counters().snapshot().transfers_declined, 1);
    assert_eq!(server.active(), 0);

    let client: SocketAddr = "10.0.0.42:2001".parse().expect("addr");
    let real = rrq("bootx64.efi", &[("blksize", "1468")]);
    let (mut transfer, _ticket) = start_from(&server, client, &real);
    let (file, outcome) = fetch(&mut transfer);
    assert_eq!(file, content);
    assert!(matches!(outcome, Outcome::Completed { blocks: 48, .. }));
}
