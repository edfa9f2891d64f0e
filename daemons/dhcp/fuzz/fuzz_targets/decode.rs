//! Untrusted datagrams through the decoder and the whole server: no input
//! may panic, and every datagram is either handled or counted as dropped.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ironroot_dhcp::{Config, DhcpServer, Incoming, MemoryRegistry, PoolConfig, SERVER_PORT};
use ironroot_net::Instant;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ironroot_dhcp::decode_request(data, 1500);
    let mut config = Config::new(Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(255, 255, 255, 0));
    config.pool = Some(PoolConfig {
        start: Ipv4Addr::new(10, 0, 0, 100),
        end: Ipv4Addr::new(10, 0, 0, 110),
        lease_secs: 600,
        offer_hold_secs: 30,
        decline_quarantine_secs: 300,
    });
    let Ok(mut server) = DhcpServer::new(config, MemoryRegistry::new(4)) else {
        return;
    };
    let incoming = Incoming {
        bytes: data,
        peer: SocketAddr::from(([0, 0, 0, 0], 68)),
        local_ip: IpAddr::V4(Ipv4Addr::BROADCAST),
        local_port: SERVER_PORT,
    };
    let _ = server.handle(Instant::ZERO, incoming);
    while let Some(write) = server.poll_lease_write() {
        server.handle_lease_durable(Instant::ZERO, write.id);
    }
    assert_eq!(server.counters().received, 1);
});
