//! RFC 3046 §2.2: the server echoes the relay agent information option
//! unchanged, as the last option.

use std::net::Ipv4Addr;

use dhcproto::v4::MessageType;

use crate::support::*;

#[test]
fn option_82_is_echoed_verbatim_and_last() {
    let relay = Ipv4Addr::new(10, 0, 0, 2);
    // Circuit id "eth7", remote id bytes, and an unknown sub-option 99.
    let info = [
        1, 4, b'e', b't', b'h', b'7', 2, 3, 9, 8, 7, 99, 2, 0xaa, 0xbb,
    ];
    let mut server = server(config(), &[1]);
    let req = Req::new(MessageType::Discover, mac(1))
        .giaddr(relay)
        .raw(82, &info);
    let out = exchange(&mut server, at(0), &req);
    let reply = parse(&out[0]);
    assert_eq!(reply.opt(82), Some(&info[..]));
    assert_eq!(reply.order.last(), Some(&82));
    assert_eq!(out[0].to, std::net::SocketAddr::from((relay, 67)));
}

#[test]
fn no_option_82_without_a_relay_agent() {
    let mut server = server(config(), &[1]);
    let out = exchange(&mut server, at(0), &Req::new(MessageType::Discover, mac(1)));
    assert!(parse(&out[0]).opt(82).is_none());
}
