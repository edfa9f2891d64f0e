//! RFC 2131 §4.3.4: DHCPRELEASE frees the address; the client keeps its
//! affinity to it (§4.3.1: prefer the client's previous address).

use std::net::Ipv4Addr;

use dhcproto::v4::MessageType;
use ironroot_dhcp::LeaseRecordKind;

use crate::support::*;

#[test]
fn release_frees_the_address_and_is_journaled() {
    let mut server = server(pool_config(100, 100), &[]);
    let ip = Ipv4Addr::new(10, 0, 0, 100);
    exchange(
        &mut server,
        at(0),
        &Req::new(MessageType::Request, mac(1)).requested(ip),
    );
    commit(&mut server, at(0));
    let release = Req::new(MessageType::Release, mac(1))
        .ciaddr(ip)
        .server_id(VIP);
    assert!(exchange(&mut server, at(1), &release).is_empty());
    let write = server
        .poll_lease_write(window_end(&server, at(1)))
        .expect("release record");
    assert_eq!(write.records[0].kind, LeaseRecordKind::Released);
    server.handle_lease_durable(at(0), write.id);
    let out = exchange(&mut server, at(2), &Req::new(MessageType::Discover, mac(2)));
    assert_eq!(parse(&out[0]).message.yiaddr(), ip);
}

#[test]
fn released_client_gets_its_old_address_back() {
    let mut server = server(pool_config(100, 110), &[]);
    let out = exchange(&mut server, at(0), &Req::new(MessageType::Discover, mac(1)));
    let first = parse(&out[0]).message.yiaddr();
    exchange(
        &mut server,
        at(0),
        &Req::new(MessageType::Request, mac(1)).requested(first),
    );
    commit(&mut server, at(0));
    exchange(
        &mut server,
        at(1),
        &Req::new(MessageType::Release, mac(1)).ciaddr(first),
    );
    commit(&mut server, at(1));
    let out = exchange(&mut server, at(2), &Req::new(MessageType::Discover, mac(1)));
    assert_eq!(parse(&out[0]).message.yiaddr(), first);
}

#[test]
fn release_of_someone_elses_address_changes_nothing() {
    let mut server = server(pool_config(100, 100), &[]);
    let ip = Ipv4Addr::new(10, 0, 0, 100);
    exchange(
        &mut server,
        at(0),
        &Req::new(MessageType::Request, mac(1)).requested(ip),
    );
    commit(&mut server, at(0));
    exchange(
        &mut server,
        at(1),
        &Req::new(MessageType::Release, mac(2)).ciaddr(ip),
    );
    assert!(server
        .poll_lease_write(window_end(&server, at(1)))
        .is_none());
    let out = exchange(
        &mut server,
        at(2),
        &Req::new(MessageType::Request, mac(2)).requested(ip),
    );
    assert_eq!(parse(&out[0]).kind(), NAK);
}
