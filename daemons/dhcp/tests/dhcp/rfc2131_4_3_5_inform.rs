//! RFC 2131 §4.3.5: DHCPINFORM gets configuration, no address, no lease.

use dhcproto::v4::MessageType;

use crate::support::*;

#[test]
fn inform_is_answered_to_ciaddr_without_lease_or_yiaddr() {
    let mut server = server(config(), &[1]);
    let ip = reservation(1).ip;
    let out = exchange(
        &mut server,
        at(0),
        &Req::new(MessageType::Inform, mac(1)).ciaddr(ip),
    );
    assert_eq!(out[0].to, std::net::SocketAddr::from((ip, 68)));
    let reply = parse(&out[0]);
    assert_eq!(reply.kind(), ACK);
    assert!(reply.message.yiaddr().is_unspecified());
    assert!(reply.opt(51).is_none() && reply.opt(58).is_none());
    assert_eq!(reply.opt(1), Some(&MASK.octets()[..]));
    assert!(server.poll_lease_write(at(60)).is_none());
}
