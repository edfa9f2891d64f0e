//! The driver under the simulator (turmoil backend): a client gets a pool
//! lease from node a; a dies; node b takes the VIP, rebuilds its leases
//! from the shared lease log (standing in for the replicated journal) and
//! renews the client's address, and gives it to nobody else.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dhcproto::v4::MessageType;
use ironroot_dhcp::{serve, DhcpServer, DriverOptions, LeaseLog, MemoryLeaseLog, MemoryRegistry};
use ironroot_net::turmoil_backend::{Segment, SimRuntime};
use ironroot_net::{Clock, Runtime, UdpBind, UdpSocket, VipControl, VipSpec};

use crate::support::*;

fn vip_spec(addr: Ipv4Addr) -> VipSpec {
    VipSpec::new(addr, 24, "sim0")
}

/// A DHCP node that waits `start_after`, claims the VIP and serves.
fn node(
    sim: &mut turmoil::Sim<'static>,
    name: &'static str,
    segment: &Segment,
    log: &Arc<MemoryLeaseLog>,
    start_after: Duration,
) {
    let (segment, log) = (segment.clone(), Arc::clone(log));
    sim.host(name, move || {
        let (segment, log) = (segment.clone(), Arc::clone(&log));
        async move {
            let rt = SimRuntime::start(segment, name, 11).await?;
            rt.sleep(start_after).await;
            rt.vip().claim(&vip_spec(VIP)).await?;
            let server = DhcpServer::new(pool_config(100, 110), MemoryRegistry::new(4))?;
            let options = DriverOptions::standard(false, None);
            let renew_rt = rt.clone();
            let renewing = async move {
                loop {
                    renew_rt.sleep(Duration::from_secs(1)).await;
                    if renew_rt.vip().renew(&vip_spec(VIP)).await.is_err() {
                        return;
                    }
                }
            };
            serve(rt.clone(), server, log, options, renewing).await?;
            Ok(())
        }
    });
}

/// Send `req` to `to` and wait (bounded) for the reply with our xid.
async fn ask(
    rt: &SimRuntime,
    socket: &impl UdpSocket,
    req: &Req,
    to: SocketAddr,
) -> std::io::Result<Reply> {
    socket.send_to(&req.bytes(), to).await?;
    let mut buf = vec![0u8; 1500];
    let wait = async {
        loop {
            let meta = socket.recv_from(&mut buf).await?;
            let reply = parse_bytes(&buf[..meta.len]);
            if reply.message.xid() == req.message.xid() {
                assert_eq!(
                    meta.peer.ip(),
                    std::net::IpAddr::V4(VIP),
                    "reply from the VIP"
                );
                return Ok::<_, std::io::Error>(reply);
            }
        }
    };
    ironroot_net::timeout(rt, Duration::from_secs(2), wait).await?
}

#[test]
fn lease_survives_failover_through_the_log() {
    let mut sim = turmoil::Builder::new()
        .epoch(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(2))
        .simulation_duration(Duration::from_secs(60))
        .rng_seed(5)
        .build();
    let segment = Segment::new();
    let log = Arc::new(MemoryLeaseLog::default());
    node(&mut sim, "a", &segment, &log, Duration::from_millis(10));
    node(&mut sim, "b", &segment, &log, Duration::from_secs(5));
    let seg = segment.clone();
    let (leased_tx, leased_rx) = std::sync::mpsc::channel::<Ipv4Addr>();
    sim.client("client", async move {
        let rt = SimRuntime::start(seg, "client", 12).await?;
        let socket = rt
            .bind_udp(UdpBind {
                broadcast: true,
                ..UdpBind::any(68)
            })
            .await?;
        rt.sleep(Duration::from_millis(200)).await;
        let broadcast = SocketAddr::from((Ipv4Addr::BROADCAST, 67));
        let offer = ask(
            &rt,
            &socket,
            &Req::new(MessageType::Discover, mac(1)),
            broadcast,
        )
        .await?;
        let ip = offer.message.yiaddr();
        let request = Req::new(MessageType::Request, mac(1))
            .server_id(VIP)
            .requested(ip);
        let ack = ask(&rt, &socket, &request, broadcast).await?;
        assert_eq!(ack.kind(), ACK);
        // Configure the address, as the client's kernel would.
        let mut address = vip_spec(ip);
        address.lifetime = Duration::from_secs(3600);
        rt.vip().claim(&address).await?;
        leased_tx.send(ip).expect("report");
        // Node a dies at 3 s; b serves from 5 s on and tidies its table
        // at 10 s (the purge interval) and 20 s.
        rt.sleep(Duration::from_secs(21)).await;
        let mut steal = Req::new(MessageType::Request, mac(2)).requested(ip);
        steal.message.set_xid(8);
        let nak = ask(&rt, &socket, &steal, broadcast).await?;
        assert_eq!(nak.kind(), NAK, "b learned the lease from the log");
        let mut renew = Req::new(MessageType::Request, mac(1)).ciaddr(ip);
        renew.message.set_xid(7);
        let ack = ask(&rt, &socket, &renew, SocketAddr::from((VIP, 67))).await?;
        assert_eq!(
            (ack.kind(), ack.message.yiaddr()),
            (ACK, ip),
            "b renews a's lease"
        );
        Ok(())
    });
    while sim.elapsed() < Duration::from_secs(3) {
        sim.step().expect("simulation step");
    }
    sim.crash("a");
    sim.run().expect("simulation");
    let ip = leased_rx.recv().expect("client got a lease");
    let records = log.records();
    assert!(records.iter().any(|record| record.ip == ip));
    assert!(log.writes() >= 2, "a wrote the lease, b the renewal");
}
