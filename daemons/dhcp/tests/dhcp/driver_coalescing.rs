//! The driver's receive coalescing under the simulator (virtual time): the
//! first datagram is answered at once; datagrams that arrive during the
//! pause after it wait in the socket and are all answered when the pause
//! ends; none is lost.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dhcproto::v4::MessageType;
use ironroot_dhcp::{serve, DhcpServer, DriverOptions, MemoryLeaseLog, MemoryRegistry};
use ironroot_net::turmoil_backend::{Segment, SimRuntime};
use ironroot_net::{Clock, Runtime, UdpBind, UdpSocket, VipControl, VipSpec};

use crate::support::*;

const PAUSE_MS: u64 = 50;
const BURST: u8 = 20;

#[test]
fn datagrams_arriving_during_the_pause_are_answered_after_it() {
    let mut sim = turmoil::Builder::new()
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(1))
        .simulation_duration(Duration::from_secs(10))
        .rng_seed(3)
        .build();
    let segment = Segment::new();
    let seg = segment.clone();
    sim.host("server", move || {
        let seg = seg.clone();
        async move {
            let rt = SimRuntime::start(seg, "server", 21).await?;
            rt.vip().claim(&VipSpec::new(VIP, 24, "sim0")).await?;
            let mut config = pool_config(100, 199);
            config.limits.receive_coalesce_ms = PAUSE_MS;
            let server = DhcpServer::new(config, MemoryRegistry::new(4))?;
            let log = Arc::new(MemoryLeaseLog::default());
            let options = DriverOptions::standard(false, None);
            serve(rt, server, log, options, std::future::pending()).await?;
            Ok(())
        }
    });
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    sim.client("client", async move {
        let rt = SimRuntime::start(segment, "client", 22).await?;
        let socket = rt
            .bind_udp(UdpBind {
                broadcast: true,
                ..UdpBind::any(68)
            })
            .await?;
        rt.sleep(Duration::from_millis(100)).await;
        let broadcast = SocketAddr::from((Ipv4Addr::BROADCAST, 67));
        let started = rt.now();
        // One DISCOVER wakes the server, the burst follows while it pauses.
        for last in 0..=BURST {
            socket
                .send_to(
                    &Req::new(MessageType::Discover, mac(last)).bytes(),
                    broadcast,
                )
                .await?;
        }
        let mut offered_after_ms: BTreeMap<u8, u64> = BTreeMap::new();
        let mut buf = vec![0u8; 1500];
        let collect = async {
            while offered_after_ms.len() <= usize::from(BURST) {
                let meta = socket.recv_from(&mut buf).await?;
                let reply = parse_bytes(&buf[..meta.len]);
                assert_eq!(reply.kind(), OFFER);
                let elapsed = rt.now().saturating_duration_since(started);
                let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
                offered_after_ms.insert(reply.message.chaddr()[5], millis);
            }
            Ok::<_, std::io::Error>(())
        };
        ironroot_net::timeout(&rt, Duration::from_secs(2), collect).await??;
        done_tx.send(offered_after_ms).expect("report");
        Ok(())
    });
    sim.run().expect("simulation");
    let offered_after_ms = done_rx.recv().expect("every DISCOVER answered");
    assert_eq!(offered_after_ms.len(), usize::from(BURST) + 1);
    assert!(
        offered_after_ms[&0] < PAUSE_MS,
        "the first is answered at once: {offered_after_ms:?}"
    );
    for last in 1..=BURST {
        assert!(
            offered_after_ms[&last] >= PAUSE_MS,
            "client {last} answered after the pause: {offered_after_ms:?}"
        );
    }
}
