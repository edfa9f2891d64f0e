//! The seam under turmoil: the echo service (the same code the tokio tests
//! run on loopback) answers through a VIP on the simulated segment, replies
//! leave from the VIP, and after the owner dies the VIP reaches the new one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ironroot_net::echo::{self, serve_tcp, serve_udp};
use ironroot_net::turmoil_backend::{Segment, SimRuntime};
use ironroot_net::{Clock, Runtime, UdpBind, VipControl, VipSpec};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
const PORT: u16 = 7;

fn spec() -> VipSpec {
    VipSpec::new(VIP, 24, "sim0")
}

fn world(seed: u64) -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .epoch(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(2))
        .simulation_duration(Duration::from_secs(60))
        .rng_seed(seed)
        .build()
}

/// A node that serves echo and claims the VIP after `claim_after`.
fn echo_node(
    sim: &mut turmoil::Sim<'static>,
    name: &'static str,
    segment: &Segment,
    claim_after: Duration,
) {
    let segment = segment.clone();
    sim.host(name, move || {
        let segment = segment.clone();
        async move {
            let rt = SimRuntime::start(segment, name, 1).await?;
            tokio::spawn(serve_udp(rt.clone(), PORT));
            tokio::spawn(serve_tcp(rt.clone(), PORT));
            rt.sleep(claim_after).await;
            rt.vip().claim(&spec()).await?;
            loop {
                rt.sleep(Duration::from_secs(1)).await;
                rt.vip().renew(&spec()).await?;
            }
        }
    });
}

#[test]
fn echo_through_the_vip_replies_from_the_vip() {
    let mut sim = world(1);
    let segment = Segment::new();
    echo_node(&mut sim, "a", &segment, Duration::from_millis(10));
    let seg = segment.clone();
    sim.client("client", async move {
        let rt = SimRuntime::start(seg, "client", 2).await?;
        rt.sleep(Duration::from_millis(100)).await;
        let target = SocketAddr::from((VIP, PORT));
        let (reply, from) = echo::udp_request(
            &rt,
            UdpBind::any(9000),
            target,
            b"ping",
            Duration::from_secs(3),
        )
        .await?;
        assert_eq!(reply, b"ping");
        assert_eq!(
            from, target,
            "the reply must come from the VIP, not the host address"
        );
        let lines =
            echo::tcp_request_lines(&rt, target, &["one", "two"], Duration::from_secs(3)).await?;
        assert_eq!(lines, ["one", "two"]);
        Ok(())
    });
    sim.run().expect("simulation");
    let now = ironroot_net::Instant::from_origin(sim.elapsed());
    assert_eq!(segment.holders(VIP, now).len(), 1);
}

#[test]
fn after_the_owner_dies_the_vip_reaches_the_new_owner() {
    let mut sim = world(2);
    let segment = Segment::new();
    echo_node(&mut sim, "a", &segment, Duration::from_millis(10));
    echo_node(&mut sim, "b", &segment, Duration::from_millis(1500));
    let seg = segment.clone();
    sim.client("client", async move {
        let rt = SimRuntime::start(seg, "client", 3).await?;
        rt.sleep(Duration::from_millis(100)).await;
        let target = SocketAddr::from((VIP, PORT));
        let lines =
            echo::tcp_request_lines(&rt, target, &["before"], Duration::from_secs(1)).await?;
        assert_eq!(lines, ["before"]);
        // a dies at 1 s (below); b claims at 1.5 s. Retry until b answers.
        rt.sleep(Duration::from_millis(1400)).await;
        let mut answered = None;
        for _ in 0..50 {
            if let Ok(lines) =
                echo::tcp_request_lines(&rt, target, &["after"], Duration::from_millis(200)).await
            {
                answered = Some(lines);
                break;
            }
            rt.sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(answered.expect("b answers through the VIP"), ["after"]);
        Ok(())
    });
    let a: IpAddr = sim.lookup("a");
    while sim.elapsed() < Duration::from_secs(1) {
        sim.step().expect("step");
    }
    segment.host_died(a, ironroot_net::Instant::from_origin(sim.elapsed()));
    sim.crash("a");
    sim.partition("a", "client");
    sim.partition("a", "b");
    sim.run().expect("simulation");
    let now = ironroot_net::Instant::from_origin(sim.elapsed());
    assert_eq!(segment.holders(VIP, now), vec![sim.lookup("b")]);
}

#[test]
fn an_address_expires_when_renewals_stop() {
    let mut sim = world(3);
    let segment = Segment::new();
    let seg = segment.clone();
    sim.client("a", async move {
        let rt = SimRuntime::start(seg.clone(), "a", 4).await?;
        let mut short = spec();
        short.lifetime = Duration::from_secs(2);
        rt.vip().claim(&short).await?;
        assert!(rt.vip().holds(&short).await?);
        rt.sleep(Duration::from_millis(1500)).await;
        rt.vip().renew(&short).await?;
        rt.sleep(Duration::from_millis(1500)).await;
        assert!(
            rt.vip().holds(&short).await?,
            "renewed at 1.5 s: valid until 3.5 s"
        );
        rt.sleep(Duration::from_millis(600)).await;
        assert!(!rt.vip().holds(&short).await?, "expired at 3.5 s");
        assert!(
            rt.vip().renew(&short).await.is_err(),
            "an expired address cannot be renewed"
        );
        Ok(())
    });
    sim.run().expect("simulation");
}
