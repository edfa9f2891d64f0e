//! RFC 2131 §4.3.3: a declined address is in use by someone else; it must
//! not be handed out again for a while.

use std::net::Ipv4Addr;

use dhcproto::v4::MessageType;
use ironroot_dhcp::LeaseRecordKind;

use crate::support::*;

#[test]
fn declined_address_is_quarantined_and_journaled() {
    let mut server = server(pool_config(100, 101), &[]);
    let ip = Ipv4Addr::new(10, 0, 0, 100);
    exchange(
        &mut server,
        at(0),
        &Req::new(MessageType::Request, mac(1)).requested(ip),
    );
    commit(&mut server, at(0));
    let decline = Req::new(MessageType::Decline, mac(1))
        .requested(ip)
        .server_id(VIP);
    assert!(
        exchange(&mut server, at(1), &decline).is_empty(),
        "no reply to DECLINE"
    );
    let write = server
        .poll_lease_write(window_end(&server, at(1)))
        .expect("decline record");
    assert_eq!(write.records[0].kind, LeaseRecordKind::Declined);
    server.handle_lease_durable(at(0), write.id);
    // Until the quarantine (300 s) ends, nobody gets .100.
    for (t, last) in [(2, 2u8), (100, 3), (299, 4)] {
        let out = exchange(
            &mut server,
            at(t),
            &Req::new(MessageType::Discover, mac(last)),
        );
        for reply in &out {
            assert_ne!(parse(reply).message.yiaddr(), ip);
        }
    }
    let out = exchange(
        &mut server,
        at(400),
        &Req::new(MessageType::Discover, mac(9)).requested(ip),
    );
    assert_eq!(
        parse(&out[0]).message.yiaddr(),
        ip,
        "free again after quarantine"
    );
}

#[test]
fn decline_of_a_reservation_is_counted_not_applied() {
    let mut server = server(config(), &[1]);
    let decline = Req::new(MessageType::Decline, mac(1)).requested(reservation(1).ip);
    exchange(&mut server, at(0), &decline);
    assert_eq!(server.counters().declines_of_reserved, 1);
    let out = exchange(&mut server, at(1), &Req::new(MessageType::Discover, mac(1)));
    assert_eq!(parse(&out[0]).message.yiaddr(), reservation(1).ip);
}
