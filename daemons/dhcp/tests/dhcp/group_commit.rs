//! Group commit of pool leases: records gathered into one journal write
//! until `limits.lease_gather_records` are waiting or the oldest has waited
//! `limits.lease_gather_ms`, one write in flight at a time, at most
//! `lease_records_per_write_max` records per write.

use std::net::Ipv4Addr;

use dhcproto::v4::MessageType;
use ironroot_dhcp::{Config, DhcpServer, MemoryRegistry};
use ironroot_net::Instant;

use crate::support::*;

fn ms(millis: u64) -> Instant {
    Instant::from_millis(millis)
}

fn gather_config(gather_ms: u64) -> Config {
    let mut config = pool_config(100, 199);
    config.limits.lease_gather_ms = gather_ms;
    config
}

/// Client `last` asks for 10.0.0.(100 + last) at `now`.
fn request(server: &mut DhcpServer<MemoryRegistry>, now: Instant, last: u8) {
    let req = Req::new(MessageType::Request, mac(last))
        .server_id(VIP)
        .requested(Ipv4Addr::new(10, 0, 0, 100 + last));
    assert!(
        exchange(server, now, &req).is_empty(),
        "ACK before the write"
    );
}

#[test]
fn a_batch_is_held_until_its_oldest_record_has_waited_the_window() {
    let mut server = server(gather_config(10), &[]);
    request(&mut server, ms(1000), 1);
    request(&mut server, ms(1004), 2);
    // The window is the oldest record's: it ends at 1010 ms, and the
    // server asks to be woken then.
    assert_eq!(server.poll_timeout(), Some(ms(1010)));
    assert!(server.poll_lease_write(ms(1009)).is_none(), "window open");
    request(&mut server, ms(1009), 3);
    let write = server.poll_lease_write(ms(1010)).expect("window over");
    let ips: Vec<u8> = write.records.iter().map(|r| r.ip.octets()[3]).collect();
    assert_eq!(ips, vec![101, 102, 103], "everything gathered, in order");
    assert_eq!(server.counters().lease_writes, 1);
    server.handle_lease_durable(ms(1012), write.id);
    let acks: Vec<_> = std::iter::from_fn(|| server.poll_transmit()).collect();
    assert_eq!(acks.len(), 3);
    assert!(acks.iter().all(|ack| parse(ack).kind() == ACK));
    // Nothing left: only the purge timer remains.
    assert!(server.poll_timeout() > Some(ms(2000)));
}

#[test]
fn a_full_batch_is_written_at_once() {
    let mut config = gather_config(10);
    config.limits.lease_gather_records = 3;
    let mut server = server(config, &[]);
    request(&mut server, ms(1000), 1);
    request(&mut server, ms(1001), 2);
    assert!(server.poll_lease_write(ms(1001)).is_none());
    request(&mut server, ms(1002), 3);
    assert_eq!(server.poll_timeout(), Some(ms(1000)), "due already");
    let write = server.poll_lease_write(ms(1002)).expect("batch full");
    assert_eq!(write.records.len(), 3);
    // The fourth record starts the next batch (and its window); it waits
    // for the write in flight, so no timer is due meanwhile.
    request(&mut server, ms(1002), 4);
    assert!(server.poll_timeout() > Some(ms(2000)));
    assert!(server.poll_lease_write(ms(1500)).is_none(), "one in flight");
    server.handle_lease_durable(ms(1500), write.id);
    // The fourth record's window ended long ago: it goes at once.
    assert_eq!(server.poll_timeout(), Some(ms(1012)));
    let next = server.poll_lease_write(ms(1500)).expect("overdue batch");
    assert_eq!(next.records.len(), 1);
    assert_eq!(next.records[0].ip, Ipv4Addr::new(10, 0, 0, 104));
}

#[test]
fn records_gathered_during_a_write_all_join_the_next_up_to_the_write_bound() {
    let mut config = gather_config(10);
    config.limits.lease_gather_records = 2;
    config.limits.lease_records_per_write_max = 4;
    let mut server = server(config, &[]);
    request(&mut server, ms(1000), 1);
    request(&mut server, ms(1000), 2);
    let first = server.poll_lease_write(ms(1000)).expect("two gathered");
    assert_eq!(first.records.len(), 2);
    // A slow write: five more arrive meanwhile, past the gather bound.
    for last in 3..=7 {
        request(&mut server, ms(1001), last);
    }
    server.handle_lease_durable(ms(1050), first.id);
    let second = server.poll_lease_write(ms(1050)).expect("overdue");
    assert_eq!(second.records.len(), 4, "as many as one write takes");
    server.handle_lease_durable(ms(1060), second.id);
    let third = server.poll_lease_write(ms(1060)).expect("the rest");
    assert_eq!(third.records.len(), 1);
}

#[test]
fn records_gathered_during_a_write_wait_for_their_own_window() {
    let mut server = server(gather_config(10), &[]);
    request(&mut server, ms(1000), 1);
    let first = server.poll_lease_write(ms(1010)).expect("first");
    request(&mut server, ms(1011), 2);
    server.handle_lease_durable(ms(1013), first.id);
    assert_eq!(server.poll_timeout(), Some(ms(1021)));
    assert!(server.poll_lease_write(ms(1013)).is_none());
    let second = server.poll_lease_write(ms(1021)).expect("second");
    assert_eq!(second.records.len(), 1);
}

#[test]
fn without_a_window_a_record_is_written_as_soon_as_no_write_is_in_flight() {
    let mut server = server(gather_config(0), &[]);
    request(&mut server, ms(1000), 1);
    let first = server.poll_lease_write(ms(1000)).expect("at once");
    request(&mut server, ms(1000), 2);
    request(&mut server, ms(1000), 3);
    assert!(server.poll_lease_write(ms(1000)).is_none(), "one in flight");
    server.handle_lease_durable(ms(1001), first.id);
    let second = server.poll_lease_write(ms(1001)).expect("the rest");
    assert_eq!(second.records.len(), 2, "gathered during the first write");
}

#[test]
fn releases_and_declines_are_gathered_too() {
    let mut server = server(gather_config(10), &[]);
    request(&mut server, ms(1000), 1);
    commit(&mut server, ms(1000));
    let ip = Ipv4Addr::new(10, 0, 0, 101);
    let release = Req::new(MessageType::Release, mac(1))
        .server_id(VIP)
        .ciaddr(ip);
    exchange(&mut server, ms(2000), &release);
    assert!(server.poll_lease_write(ms(2009)).is_none());
    let write = server.poll_lease_write(ms(2010)).expect("release record");
    assert_eq!(write.records.len(), 1);
    assert_eq!(write.records[0].ip, ip);
}
