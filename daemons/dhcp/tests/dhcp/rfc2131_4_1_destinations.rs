//! RFC 2131 §4.1: where a server sends its replies.

use std::net::{Ipv4Addr, SocketAddr};

use dhcproto::v4::MessageType;

use crate::support::*;

fn to(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

#[test]
fn broadcast_flag_gets_a_broadcast_reply_from_the_vip() {
    let mut server = server(config(), &[1]);
    let out = exchange(
        &mut server,
        at(0),
        &Req::new(MessageType::Discover, mac(1)).broadcast_flag(),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, to(Ipv4Addr::BROADCAST, 68));
    assert!(out[0].broadcast);
    assert_eq!(out[0].from, VIP);
    assert_eq!(parse(&out[0]).opt(54), Some(&VIP.octets()[..]));
}

#[test]
fn no_broadcast_flag_and_no_ciaddr_still_broadcasts() {
    // The unicast-to-yiaddr case needs an ARP entry a UDP socket cannot add.
    let mut server = server(config(), &[1]);
    let out = exchange(&mut server, at(0), &Req::new(MessageType::Discover, mac(1)));
    assert_eq!(out[0].to, to(Ipv4Addr::BROADCAST, 68));
    assert!(out[0].broadcast);
}

#[test]
fn ciaddr_gets_a_unicast_reply() {
    let mut server = server(config(), &[1]);
    let ip = reservation(1).ip;
    let out = exchange(
        &mut server,
        at(0),
        &Req::new(MessageType::Request, mac(1)).ciaddr(ip),
    );
    assert_eq!(out[0].to, to(ip, 68));
    assert!(!out[0].broadcast);
    let reply = parse(&out[0]);
    assert_eq!(reply.kind(), ACK);
    assert_eq!(reply.message.ciaddr(), ip, "table 3: ACK echoes ciaddr");
}

#[test]
fn giaddr_sends_to_the_relay_server_port() {
    let relay = Ipv4Addr::new(10, 0, 0, 2);
    let mut server = server(config(), &[1]);
    let req = Req::new(MessageType::Discover, mac(1))
        .giaddr(relay)
        .broadcast_flag();
    let out = exchange(&mut server, at(0), &req);
    assert_eq!(out[0].to, to(relay, 67));
    assert!(!out[0].broadcast);
    assert_eq!(parse(&out[0]).message.giaddr(), relay);
}

#[test]
fn nak_is_broadcast_even_to_a_client_with_ciaddr() {
    let mut server = server(config(), &[1]);
    let wrong = Ipv4Addr::new(10, 0, 0, 99);
    let req = Req::new(MessageType::Request, mac(1)).requested(wrong);
    let out = exchange(&mut server, at(0), &req);
    let reply = parse(&out[0]);
    assert_eq!(reply.kind(), NAK);
    assert_eq!(out[0].to, to(Ipv4Addr::BROADCAST, 68));
    assert_eq!(reply.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(reply.message.siaddr(), Ipv4Addr::UNSPECIFIED);
}

#[test]
fn nak_through_a_relay_sets_the_broadcast_bit() {
    let relay = Ipv4Addr::new(10, 0, 0, 2);
    let mut server = server(config(), &[1]);
    let req = Req::new(MessageType::Request, mac(1))
        .requested(Ipv4Addr::new(10, 0, 0, 99))
        .giaddr(relay);
    let out = exchange(&mut server, at(0), &req);
    assert_eq!(out[0].to, to(relay, 67));
    assert!(parse(&out[0]).message.flags().broadcast());
}

#[test]
fn relay_from_another_subnet_is_ignored_and_counted() {
    let mut server = server(pool_config(100, 150), &[1]);
    let req = Req::new(MessageType::Discover, mac(1)).giaddr(Ipv4Addr::new(192, 168, 7, 1));
    assert!(exchange(&mut server, at(0), &req).is_empty());
    assert_eq!(server.counters().ignored_foreign_subnet, 1);
}
