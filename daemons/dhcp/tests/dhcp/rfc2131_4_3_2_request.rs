//! RFC 2131 §4.3.2: DHCPREQUEST in each client state, and the rule that a
//! pool ACK leaves only after its lease is durable.

use std::net::Ipv4Addr;

use dhcproto::v4::MessageType;
use ironroot_dhcp::LeaseRecordKind;

use crate::support::*;

const OTHER_SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);

#[test]
fn selecting_a_reservation_is_acked_at_once() {
    let mut server = server(config(), &[1]);
    let ip = reservation(1).ip;
    let req = Req::new(MessageType::Request, mac(1))
        .server_id(VIP)
        .requested(ip);
    let out = exchange(&mut server, at(0), &req);
    let reply = parse(&out[0]);
    assert_eq!(reply.kind(), ACK);
    assert_eq!(reply.message.yiaddr(), ip);
    assert!(
        server.poll_lease_write(at(60)).is_none(),
        "reservations need no write"
    );
}

#[test]
fn selecting_another_server_is_silent_and_frees_our_offer() {
    let mut server = server(pool_config(100, 100), &[]);
    let out = exchange(&mut server, at(0), &Req::new(MessageType::Discover, mac(1)));
    let offered = parse(&out[0]).message.yiaddr();
    let req = Req::new(MessageType::Request, mac(1))
        .server_id(OTHER_SERVER)
        .requested(Ipv4Addr::new(10, 0, 0, 200));
    assert!(exchange(&mut server, at(1), &req).is_empty());
    assert_eq!(server.counters().ignored_other_server, 1);
    // The only address is free again for somebody else.
    let out = exchange(&mut server, at(2), &Req::new(MessageType::Discover, mac(2)));
    assert_eq!(parse(&out[0]).message.yiaddr(), offered);
}

#[test]
fn init_reboot_with_a_wrong_address_is_naked() {
    let mut server = server(config(), &[1]);
    let req = Req::new(MessageType::Request, mac(1)).requested(Ipv4Addr::new(192, 168, 1, 5));
    let out = exchange(&mut server, at(0), &req);
    let reply = parse(&out[0]);
    assert_eq!(reply.kind(), NAK);
    assert_eq!(reply.opt(54), Some(&VIP.octets()[..]));
    assert!(reply.opt(51).is_none(), "NAK carries no lease");
    assert!(reply.opt_str(56).is_some(), "NAK says why");
}

#[test]
fn request_without_address_is_ignored() {
    let mut server = server(config(), &[1]);
    assert!(exchange(&mut server, at(0), &Req::new(MessageType::Request, mac(1))).is_empty());
    assert_eq!(server.counters().ignored_incomplete, 1);
}

#[test]
fn pool_ack_waits_for_the_lease_to_be_durable() {
    let mut server = server(pool_config(100, 150), &[]);
    let out = exchange(&mut server, at(0), &Req::new(MessageType::Discover, mac(1)));
    let ip = parse(&out[0]).message.yiaddr();
    let req = Req::new(MessageType::Request, mac(1))
        .server_id(VIP)
        .requested(ip);
    assert!(
        exchange(&mut server, at(1), &req).is_empty(),
        "no ACK before the write"
    );
    let write = server
        .poll_lease_write(window_end(&server, at(1)))
        .expect("a lease write");
    assert_eq!(write.records.len(), 1);
    assert_eq!(write.records[0].ip, ip);
    assert_eq!(write.records[0].kind, LeaseRecordKind::Bound);
    assert!(server.poll_transmit().is_none(), "still not durable");
    server.handle_lease_durable(at(2), write.id);
    let ack = server.poll_transmit().expect("ACK after durable");
    let reply = parse(&ack);
    assert_eq!(reply.kind(), ACK);
    assert_eq!(reply.message.yiaddr(), ip);
    assert_eq!(reply.opt(51), Some(&600u32.to_be_bytes()[..]));
}

#[test]
fn failed_lease_write_drops_the_ack_and_keeps_the_address_held() {
    let mut server = server(pool_config(100, 100), &[]);
    let ip = Ipv4Addr::new(10, 0, 0, 100);
    let req = Req::new(MessageType::Request, mac(1)).requested(ip);
    exchange(&mut server, at(0), &req);
    let write = server
        .poll_lease_write(window_end(&server, at(0)))
        .expect("write");
    server.handle_lease_failed(write.id);
    assert!(server.poll_transmit().is_none());
    assert_eq!(server.counters().acks_dropped_unwritten, 1);
    assert_eq!(server.pending_acks(), 0);
    // Nobody else gets it: the lease may be durable after all.
    let other = Req::new(MessageType::Request, mac(2)).requested(ip);
    let out = exchange(&mut server, at(1), &other);
    assert_eq!(parse(&out[0]).kind(), NAK);
}

#[test]
fn pending_acks_are_bounded() {
    let mut config = pool_config(100, 199);
    config.limits.pending_acks_max = 3;
    let mut server = server(config, &[]);
    for last in 0..5u8 {
        let ip = Ipv4Addr::new(10, 0, 0, 100 + last);
        exchange(
            &mut server,
            at(0),
            &Req::new(MessageType::Request, mac(last)).requested(ip),
        );
    }
    assert_eq!(server.pending_acks(), 3);
    assert_eq!(server.counters().pending_acks_full, 2);
    assert_eq!(commit(&mut server, at(0)).len(), 3);
}

#[test]
fn renewing_extends_the_lease_and_unicasts() {
    let mut server = server(pool_config(100, 150), &[]);
    let ip = Ipv4Addr::new(10, 0, 0, 120);
    exchange(
        &mut server,
        at(0),
        &Req::new(MessageType::Request, mac(1)).requested(ip),
    );
    commit(&mut server, at(0));
    let renew = Req::new(MessageType::Request, mac(1)).ciaddr(ip);
    exchange(&mut server, at(400), &renew);
    let acks = commit(&mut server, at(400));
    assert_eq!(acks[0].to, std::net::SocketAddr::from((ip, 68)));
    // Still held at 900 s (400 + 600) by the renewal.
    let other = Req::new(MessageType::Request, mac(2)).requested(ip);
    assert_eq!(
        parse(&exchange(&mut server, at(900), &other)[0]).kind(),
        NAK
    );
}

#[test]
fn ack_whose_write_outlasts_the_delay_bound_is_dropped() {
    let mut server = server(pool_config(100, 150), &[]);
    let ip = Ipv4Addr::new(10, 0, 0, 120);
    exchange(
        &mut server,
        at(0),
        &Req::new(MessageType::Request, mac(1)).requested(ip),
    );
    let write = server
        .poll_lease_write(window_end(&server, at(0)))
        .expect("write");
    server.handle_lease_durable(at(6), write.id);
    assert!(server.poll_transmit().is_none());
    assert_eq!(server.counters().acks_dropped_late, 1);
}

#[test]
fn ack_overtaken_by_a_release_is_dropped() {
    let mut server = server(pool_config(100, 150), &[]);
    let ip = Ipv4Addr::new(10, 0, 0, 120);
    exchange(
        &mut server,
        at(0),
        &Req::new(MessageType::Request, mac(1)).requested(ip),
    );
    exchange(
        &mut server,
        at(0),
        &Req::new(MessageType::Release, mac(1)).ciaddr(ip),
    );
    assert!(commit(&mut server, at(0)).is_empty());
    assert_eq!(server.counters().acks_dropped_stale, 1);
}

#[test]
fn table_is_tidied_on_a_fixed_interval() {
    let mut server = server(pool_config(100, 150), &[]);
    let first = server.poll_timeout().expect("pool servers have a timer");
    exchange(&mut server, at(0), &Req::new(MessageType::Discover, mac(1)));
    assert_eq!(server.pool().map(|pool| pool.len()), Some(1));
    server.handle_timeout(first);
    assert!(server.poll_timeout() > Some(first));
    // The 30 s offer hold is over at 40 s: the entry is released, not lost.
    server.handle_timeout(at(40));
    let lease = server
        .pool()
        .and_then(|pool| pool.lease(Ipv4Addr::new(10, 0, 0, 100)));
    assert!(lease.is_some_and(|lease| !lease.is_active(at(40))));
}
