//! Leases written through a `LeaseLog` rebuild the table on another node
//! (failover): the standby never hands out an address the active node
//! acknowledged, and honours quarantines.

use std::net::Ipv4Addr;

use dhcproto::v4::MessageType;
use ironroot_dhcp::{LeaseLog, MemoryLeaseLog};

use crate::support::*;

#[tokio::test]
async fn standby_rebuilds_leases_from_the_log() {
    let log = MemoryLeaseLog::default();
    let mut active = server(pool_config(100, 103), &[]);
    active.set_wall_clock(at(0), 1_000_000);
    let bound = Ipv4Addr::new(10, 0, 0, 100);
    let declined = Ipv4Addr::new(10, 0, 0, 101);
    for (last, ip) in [(1u8, bound), (2, declined)] {
        exchange(
            &mut active,
            at(0),
            &Req::new(MessageType::Request, mac(last)).requested(ip),
        );
    }
    let write = active
        .poll_lease_write(window_end(&active, at(0)))
        .expect("batch");
    log.append(write.clone()).await.expect("durable");
    active.handle_lease_durable(at(0), write.id);
    assert_eq!(std::iter::from_fn(|| active.poll_transmit()).count(), 2);
    exchange(
        &mut active,
        at(1),
        &Req::new(MessageType::Decline, mac(2)).requested(declined),
    );
    let write = active
        .poll_lease_write(window_end(&active, at(1)))
        .expect("decline");
    log.append(write).await.expect("durable");
    assert_eq!(
        log.writes(),
        2,
        "group commit: two writes for three records"
    );

    // The standby's clock has another origin: 100 s later in wall time.
    let mut standby = server(pool_config(100, 103), &[]);
    standby.set_wall_clock(at(5), 1_000_100);
    standby.restore(at(5), &log.records());
    for last in 10..14u8 {
        for reply in exchange(
            &mut standby,
            at(6),
            &Req::new(MessageType::Discover, mac(last)),
        ) {
            let ip = parse(&reply).message.yiaddr();
            assert!(ip != bound && ip != declined, "standby offered {ip}");
        }
    }
    let steal = Req::new(MessageType::Request, mac(20)).requested(bound);
    assert_eq!(parse(&exchange(&mut standby, at(7), &steal)[0]).kind(), NAK);
    // The owner renews on the standby (server id is the VIP on both).
    let renew = Req::new(MessageType::Request, mac(1)).ciaddr(bound);
    exchange(&mut standby, at(8), &renew);
    let acks = commit(&mut standby, at(8));
    assert_eq!(parse(&acks[0]).message.yiaddr(), bound);
}
