//! A client's next transfer starts its retransmission timeout from the
//! round trip its previous transfer measured (RFC 6298 §2.1 allows a cached
//! estimate), not from the configured maximum: firmware fetches several
//! files in a row, and a first DATA lost on a lossy link then costs a round
//! trip's worth of waiting instead of a whole second. Other clients still
//! start from the maximum.

use std::net::SocketAddr;
use std::time::Duration;

use ironroot_net::Instant;
use ironroot_tftp::Outcome;

use crate::harness::*;

#[test]
fn next_transfer_of_a_client_starts_from_its_measured_round_trip() {
    let content = pattern(5000);
    let server = server(&[("f", &content)]);
    let (mut first, ticket) = start(&server, &rrq("f", &[]));
    assert_eq!(
        first.poll_timeout(),
        Some(Instant::ZERO + Duration::from_millis(1000)),
        "no estimate yet: the configured timeout"
    );
    let (file, outcome) = fetch(&mut first);
    assert_eq!(file, content);
    assert!(matches!(outcome, Outcome::Completed { .. }));
    server.note_rtt(CLIENT.ip(), &first);
    drop(ticket);

    let again: SocketAddr = "10.0.0.42:2001".parse().expect("addr");
    let (second, _ticket) = start_from(&server, again, &rrq("f", &[]));
    let timeout = second.poll_timeout().expect("a deadline") - Instant::ZERO;
    assert_eq!(
        timeout,
        Duration::from_millis(50),
        "1 ms round trips: the floor (rto_min_ms)"
    );

    let stranger: SocketAddr = "10.0.0.43:2000".parse().expect("addr");
    let (third, _ticket) = start_from(&server, stranger, &rrq("f", &[]));
    assert_eq!(
        third.poll_timeout(),
        Some(Instant::ZERO + Duration::from_millis(1000))
    );

    // A negotiated timeout is the client's, estimate or not.
    let (fixed, _ticket) = start_from(
        &server,
        "10.0.0.42:2002".parse().expect("addr"),
        &rrq("f", &[("timeout", "3")]),
    );
    assert_eq!(
        fixed.poll_timeout(),
        Some(Instant::ZERO + Duration::from_secs(3))
    );
}
