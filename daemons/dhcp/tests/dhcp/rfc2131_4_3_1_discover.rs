//! RFC 2131 §4.3.1: answering DHCPDISCOVER (reservations and the pool).

use std::net::Ipv4Addr;

use dhcproto::v4::MessageType;

use crate::support::*;

#[test]
fn reserved_client_is_offered_its_address_without_a_journal_write() {
    let mut server = server(config(), &[1, 2]);
    let out = exchange(&mut server, at(0), &Req::new(MessageType::Discover, mac(2)));
    let reply = parse(&out[0]);
    assert_eq!(reply.kind(), OFFER);
    assert_eq!(reply.message.yiaddr(), reservation(2).ip);
    assert_eq!(reply.message.siaddr(), VIP, "next-server is the VIP");
    assert_eq!(reply.message.xid(), 0x0bad_cafe);
    assert_eq!(reply.message.chaddr(), &mac(2).0);
    assert_eq!(reply.opt(1), Some(&MASK.octets()[..]));
    assert_eq!(reply.opt(3), Some(&ROUTER.octets()[..]));
    assert_eq!(reply.opt_str(12).as_deref(), Some("node2"));
    assert_eq!(reply.opt(51), Some(&86_400u32.to_be_bytes()[..]));
    assert_eq!(reply.opt(58), Some(&43_200u32.to_be_bytes()[..]));
    assert_eq!(&reply.order[..2], &[53, 54], "53 and 54 lead");
    assert!(out[0].bytes.len() >= 300, "BOOTP minimum size");
    assert!(
        server.poll_lease_write(at(60)).is_none(),
        "offers are not written"
    );
}

#[test]
fn unknown_client_without_a_pool_is_ignored_and_counted() {
    let mut server = server(config(), &[1]);
    let out = exchange(&mut server, at(0), &Req::new(MessageType::Discover, mac(9)));
    assert!(out.is_empty());
    assert_eq!(server.counters().ignored_unknown_client, 1);
}

#[test]
fn pool_skips_reserved_addresses_and_the_vip() {
    // Pool .10-.22 covers the VIP (.10) and reservation 1 (.21).
    let mut server = server(pool_config(10, 22), &[1]);
    let mut offered = Vec::new();
    for last in 100..111 {
        let out = exchange(
            &mut server,
            at(0),
            &Req::new(MessageType::Discover, mac(last)),
        );
        offered.push(parse(&out[0]).message.yiaddr());
    }
    assert!(!offered.contains(&VIP));
    assert!(!offered.contains(&reservation(1).ip));
    let mut unique = offered.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), offered.len(), "no address offered twice");
    // 13 addresses minus the VIP and the reservation: 11 offers, then none.
    let out = exchange(
        &mut server,
        at(0),
        &Req::new(MessageType::Discover, mac(200)),
    );
    assert!(out.is_empty());
    assert_eq!(server.counters().pool_exhausted, 1);
}

#[test]
fn requested_address_is_honoured_when_free() {
    let mut server = server(pool_config(100, 150), &[]);
    let wanted = Ipv4Addr::new(10, 0, 0, 140);
    let req = Req::new(MessageType::Discover, mac(50)).requested(wanted);
    let out = exchange(&mut server, at(0), &req);
    assert_eq!(parse(&out[0]).message.yiaddr(), wanted);
}

#[test]
fn offer_holds_the_address_until_the_hold_time_ends() {
    let mut server = server(pool_config(100, 100), &[]);
    let out = exchange(&mut server, at(0), &Req::new(MessageType::Discover, mac(1)));
    assert_eq!(out.len(), 1);
    let out = exchange(
        &mut server,
        at(10),
        &Req::new(MessageType::Discover, mac(2)),
    );
    assert!(
        out.is_empty(),
        "single address still held for the first client"
    );
    let out = exchange(
        &mut server,
        at(31),
        &Req::new(MessageType::Discover, mac(2)),
    );
    assert_eq!(
        parse(&out[0]).message.yiaddr(),
        Ipv4Addr::new(10, 0, 0, 100)
    );
}
