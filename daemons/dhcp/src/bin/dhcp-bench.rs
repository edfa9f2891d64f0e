//! DHCP benchmarks.
//!
//! `dhcp-bench core [CLIENTS]`: full DORA exchanges through the sans-IO
//! server (pool leases, group-committed writes), no sockets: the protocol
//! cost alone.
//!
//! `dhcp-bench serve VIP PREFIX_LEN POOL_START POOL_END [DEVICE]`: the real
//! driver on port 67 with the tokio backend and an in-memory lease log, for
//! load generators such as perfdhcp (see `daemons/dhcp/bench/perfdhcp.sh`).

use std::error::Error;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use ironroot_dhcp::{
    serve, Config, DhcpServer, DriverOptions, Incoming, MemoryLeaseLog, MemoryRegistry, PoolConfig,
    SERVER_PORT,
};
use ironroot_net::tokio_backend::TokioRuntime;
use ironroot_net::Instant;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("core") => {
            let clients = args.get(1).map_or(Ok(50_000), |n| n.parse())?;
            core(clients)
        }
        Some("serve") if args.len() >= 5 => serve_cmd(&args[1..]),
        _ => Err(
            "usage: dhcp-bench core [CLIENTS] | serve VIP PREFIX_LEN POOL_START POOL_END [DEVICE]"
                .into(),
        ),
    }
}

fn mask(prefix_len: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix_len).unwrap_or(0))
}

fn pool_config(vip: Ipv4Addr, prefix_len: u32, start: Ipv4Addr, end: Ipv4Addr) -> Config {
    let mut config = Config::new(vip, mask(prefix_len));
    config.pool = Some(PoolConfig {
        start,
        end,
        lease_secs: 3600,
        offer_hold_secs: 60,
        decline_quarantine_secs: 600,
    });
    config.limits.leases_max = 1 << 20;
    config
}

/// A minimal client request (the same bytes a firmware would send).
fn incoming(bytes: &[u8]) -> Incoming<'_> {
    Incoming {
        bytes,
        peer: SocketAddr::from(([0, 0, 0, 0], 68)),
        local_ip: IpAddr::V4(Ipv4Addr::BROADCAST),
        local_port: SERVER_PORT,
    }
}

fn request(kind: u8, mac: [u8; 6], xid: u32, extra: &[(u8, [u8; 4])]) -> Vec<u8> {
    let mut bytes = vec![0u8; 240];
    bytes[..4].copy_from_slice(&[1, 1, 6, 0]);
    bytes[4..8].copy_from_slice(&xid.to_be_bytes());
    bytes[28..34].copy_from_slice(&mac);
    bytes[236..240].copy_from_slice(&[99, 130, 83, 99]);
    bytes.extend_from_slice(&[53, 1, kind]);
    for (code, value) in extra {
        bytes.extend_from_slice(&[*code, 4]);
        bytes.extend_from_slice(value);
    }
    bytes.push(255);
    bytes
}

#[allow(clippy::disallowed_methods)] // elapsed wall time is what a benchmark measures
fn core(clients: u32) -> Result<()> {
    let vip = Ipv4Addr::new(10, 0, 0, 10);
    let config = pool_config(
        vip,
        8,
        Ipv4Addr::new(10, 1, 0, 0),
        Ipv4Addr::new(10, 1, 255, 255),
    );
    let mut config = config;
    // Each tick of 64 exchanges stands for a gathered batch.
    config.limits.lease_gather_ms = 0;
    let mut server = DhcpServer::new(config, MemoryRegistry::new(1))?;
    let started = std::time::Instant::now();
    let mut acks = 0u64;
    // Ticks of 64 exchanges share one lease write, as the driver batches.
    for (tick, chunk) in (0..clients).collect::<Vec<_>>().chunks(64).enumerate() {
        let now = Instant::from_millis(tick as u64);
        for &n in chunk {
            let mac = [
                2,
                0,
                (n >> 24) as u8,
                (n >> 16) as u8,
                (n >> 8) as u8,
                n as u8,
            ];
            let offer = server.handle(now, incoming(&request(1, mac, n, &[])));
            let yiaddr = offer
                .first()
                .and_then(|o| o.bytes.get(16..20))
                .ok_or_else(|| format!("no offer for client {n}: {:?}", server.counters()))?;
            let yiaddr = [yiaddr[0], yiaddr[1], yiaddr[2], yiaddr[3]];
            let req = request(3, mac, n, &[(54, vip.octets()), (50, yiaddr)]);
            server.handle_datagram(now, incoming(&req));
        }
        while let Some(write) = server.poll_lease_write(now) {
            server.handle_lease_durable(now, write.id);
        }
        acks += std::iter::from_fn(|| server.poll_transmit()).count() as u64;
    }
    let elapsed = started.elapsed();
    let rate = f64::from(clients) / elapsed.as_secs_f64();
    let per_10k = elapsed.as_secs_f64() * 10_000.0 / f64::from(clients);
    println!(
        "core: {clients} DORA in {elapsed:?}: {rate:.0}/s, {per_10k:.3} s per 10,000 exchanges, {acks} ACKs, {} lease writes",
        server.counters().lease_writes
    );
    Ok(())
}

fn serve_cmd(args: &[String]) -> Result<()> {
    let vip: Ipv4Addr = args[0].parse()?;
    let prefix_len: u32 = args[1].parse()?;
    let start: Ipv4Addr = args[2].parse()?;
    let end: Ipv4Addr = args[3].parse()?;
    let device = args.get(4).cloned();
    let server = DhcpServer::new(
        pool_config(vip, prefix_len, start, end),
        MemoryRegistry::new(1),
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let server = runtime.block_on(async move {
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        serve(
            TokioRuntime::new()?,
            server,
            Arc::new(MemoryLeaseLog::default()),
            DriverOptions::standard(false, device),
            shutdown,
        )
        .await
    })?;
    println!("{:#?}", server.counters());
    Ok(())
}
