//! The async driver end to end under turmoil: two control nodes and a
//! witness run the real `run_node`/`run_witness` over the simulated network
//! and L2 segment; the VIP owner is read from the segment, not from what the
//! nodes believe.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironroot_cluster::driver::Hooks;
use ironroot_cluster::{
    run_node, run_witness, ClusterEvent, ClusterFile, EventKind, MemoryIncarnationStore,
    MemoryOutdatedStore, Role, SimFence,
};
use ironroot_net::resource::BoxFuture;
use ironroot_net::turmoil_backend::{Segment, SimRuntime};
use ironroot_net::{Clock, Health, Instant, Resource, ResourceError};
use tokio::sync::mpsc;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);

fn cluster_file() -> ClusterFile {
    let addr = |host: &str| turmoil::lookup(host);
    let text = format!(
        r#"
cluster_id = 3
key_hex = "000102030405060708090a0b0c0d0e0f"
[[nodes]]
name = "a"
id = 1
links = ["{}:694"]
[[nodes]]
name = "b"
id = 2
links = ["{}:694"]
[witness]
addr = "{}:695"
[vip]
addr = "{VIP}"
prefix_len = 24
interface = "sim0"
"#,
        addr("a"),
        addr("b"),
        addr("w")
    );
    toml::from_str(&text).expect("config")
}

struct Service {
    name: &'static str,
    rt: SimRuntime,
}

impl Resource for Service {
    fn name(&self) -> &str {
        self.name
    }
    fn start(&mut self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(async move {
            self.rt.sleep(Duration::from_millis(5)).await;
            Ok(())
        })
    }
    fn stop(&mut self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(async { Ok(()) })
    }
    fn monitor(&mut self) -> BoxFuture<'_, Health> {
        Box::pin(async { Health::Healthy })
    }
}

type Events = Arc<Mutex<Vec<(String, ClusterEvent)>>>;

fn add_node(sim: &mut turmoil::Sim<'_>, name: &'static str, segment: &Segment, events: &Events) {
    let (segment, events) = (segment.clone(), events.clone());
    let incarnations = MemoryIncarnationStore::new();
    sim.host(name, move || {
        let (segment, events, incarnations) =
            (segment.clone(), events.clone(), incarnations.clone());
        async move {
            let rt = SimRuntime::start(segment, name, 1).await?;
            let config = cluster_file().validate(name)?;
            let resources: Vec<Box<dyn Resource>> = ["store", "nfs", "tftp", "dhcp"]
                .into_iter()
                .map(|n| {
                    Box::new(Service {
                        name: n,
                        rt: rt.clone(),
                    }) as Box<dyn Resource>
                })
                .collect();
            let (tx, mut rx) = mpsc::channel(1024);
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    events
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((name.to_string(), event));
                }
            });
            let hooks = Hooks {
                events: Some(tx),
                admin: None,
                peer_current: None,
            };
            let fence = SimFence::new(|_| false);
            run_node(rt, config, incarnations, resources, fence, hooks).await?;
            Ok(())
        }
    });
}

fn became_active(events: &Events, host: &str) -> Option<Instant> {
    let events = events.lock().unwrap_or_else(|p| p.into_inner());
    events
        .iter()
        .filter(|(h, e)| {
            h == host
                && matches!(
                    e.kind,
                    EventKind::StateChanged {
                        to: Role::Active,
                        ..
                    }
                )
        })
        .map(|(_, e)| e.at)
        .next_back()
}

#[test]
fn host_death_of_the_active_node_moves_the_vip_once() {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(30))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(1))
        .rng_seed(7)
        .build();
    let segment = Segment::new();
    let events: Events = Arc::default();
    add_node(&mut sim, "a", &segment, &events);
    add_node(&mut sim, "b", &segment, &events);
    let witness_segment = segment.clone();
    sim.host("w", move || {
        let segment = witness_segment.clone();
        async move {
            let rt = SimRuntime::start(segment, "w", 1).await?;
            let config = cluster_file().validate_witness()?;
            run_witness(rt, config, MemoryOutdatedStore::default()).await?;
            Ok(())
        }
    });
    let mut dual = Vec::new();
    let step_until = |sim: &mut turmoil::Sim<'_>, until: Duration, dual: &mut Vec<Instant>| {
        while sim.elapsed() < until {
            sim.step().expect("simulation step");
            let now = Instant::from_origin(sim.elapsed());
            if segment.holders(VIP, now).len() > 1 {
                dual.push(now);
            }
        }
    };
    step_until(&mut sim, Duration::from_secs(5), &mut dual);
    let a_ip = sim.lookup("a");
    let now = Instant::from_origin(sim.elapsed());
    assert_eq!(
        segment.holders(VIP, now),
        vec![a_ip],
        "a (lower id) owns the VIP after cold start"
    );
    // Host death: software gone, links cut, kernel addresses gone.
    let died = now;
    sim.crash("a");
    sim.partition("a", "b");
    sim.partition("a", "w");
    segment.host_died(a_ip, died);
    step_until(&mut sim, Duration::from_secs(9), &mut dual);
    let holders = segment.holders(VIP, Instant::from_origin(sim.elapsed()));
    assert_eq!(holders, vec![sim.lookup("b")], "b owns the VIP");
    assert!(dual.is_empty(), "two VIP holders at {dual:?}");
    let failover = became_active(&events, "b").expect("b became active") - died;
    assert!(
        failover <= Duration::from_millis(1200 + 300),
        "failover {failover:?} > dead time + 300 ms"
    );
    eprintln!("failover after host death: {failover:?}");
}

mod command_fence {
    use std::time::Duration;

    use ironroot_cluster::driver::{CommandFence, Fence, FenceError};
    use ironroot_net::tokio_backend::TokioRuntime;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn success_failure_and_node_substitution() {
        let ok = CommandFence::new(argv(&["sh", "-c", "test \"$0\" = b", "{node}"]));
        assert!(ok.fence("b").await.is_ok());
        assert!(matches!(ok.fence("a").await, Err(FenceError::Exit(_))));
        let missing = CommandFence::new(argv(&["/nonexistent/power-switch"]));
        assert!(matches!(
            missing.fence("b").await,
            Err(FenceError::Spawn { .. })
        ));
    }

    #[tokio::test]
    async fn a_hung_command_is_bounded_by_the_timeout() {
        let rt = TokioRuntime::with_seed(1);
        let hung = CommandFence::new(argv(&["sleep", "30"]));
        let result = ironroot_net::timeout(&rt, Duration::from_millis(100), hung.fence("b")).await;
        assert!(
            result.is_err(),
            "timed out, and the child is killed on drop"
        );
    }
}
