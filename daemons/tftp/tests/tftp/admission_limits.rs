//! Limits on concurrent transfers, per client and in total; a request
//! retransmitted by a client whose transfer runs does not start another.

use std::net::SocketAddr;

use ironroot_net::Instant;
use ironroot_tftp::Decision;

use crate::harness::*;

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("addr")
}

#[test]
fn per_client_limit_drops_extra_requests_until_a_slot_frees() {
    let mut config = config();
    config.transfers_per_client_max = 2;
    let server = server_with(config, &[("f", b"x")]);
    let datagram = rrq("f", &[]);
    let (_first, ticket_a) = start_from(&server, addr("10.0.0.1:1001"), &datagram);
    let (_second, _ticket_b) = start_from(&server, addr("10.0.0.1:1002"), &datagram);
    let third = server.handle_request(Instant::ZERO, addr("10.0.0.1:1003"), &datagram);
    assert!(matches!(third, Decision::Drop));
    // Another client is not affected.
    let (_other, _ticket_c) = start_from(&server, addr("10.0.0.2:1001"), &datagram);
    assert_eq!(server.counters().snapshot().busy_dropped, 1);
    drop(ticket_a);
    let (_again, _ticket_d) = start_from(&server, addr("10.0.0.1:1003"), &datagram);
    assert_eq!(server.active(), 3);
}

#[test]
fn total_limit_applies_across_clients() {
    let mut config = config();
    config.transfers_max = 3;
    config.transfers_per_client_max = 3;
    let server = server_with(config, &[("f", b"x")]);
    let datagram = rrq("f", &[]);
    let tickets: Vec<_> = (1..=3)
        .map(|index| start_from(&server, addr(&format!("10.0.0.{index}:69")), &datagram))
        .collect();
    let refused = server.handle_request(Instant::ZERO, addr("10.0.0.9:69"), &datagram);
    assert!(matches!(refused, Decision::Drop));
    drop(tickets);
    assert_eq!(server.active(), 0);
    start_from(&server, addr("10.0.0.9:69"), &datagram);
}

#[test]
fn retransmitted_request_does_not_start_a_second_transfer() {
    let server = server(&[("f", b"x")]);
    let datagram = rrq("f", &[("blksize", "1468")]);
    let (_transfer, _ticket) = start(&server, &datagram);
    let again = server.handle_request(Instant::ZERO, CLIENT, &datagram);
    assert!(matches!(again, Decision::Drop));
    assert_eq!(server.counters().snapshot().duplicate_requests, 1);
    assert_eq!(server.active(), 1);
}

#[test]
fn refused_open_gives_the_slot_back() {
    let mut config = config();
    config.transfers_per_client_max = 1;
    let server = server_with(config, &[("f", b"x")]);
    refusal(&server, &rrq("missing", &[]));
    assert_eq!(server.active(), 0);
    start(&server, &rrq("f", &[]));
}
