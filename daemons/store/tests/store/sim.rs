//! The replication drivers under turmoil (the simulator's backend): a
//! partition stalls the TCP stream, the primary notices through its
//! deadline, outdates the peer, keeps writing, and resyncs after healing.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ironroot_net::turmoil_backend::{Segment, SimRuntime};
use ironroot_net::Runtime;
use ironroot_store::journal::Lease;
use ironroot_store::replication::driver::{
    run_secondary, spawn_primary, DriverConfig, PrimaryHandle, SharedStore,
};
use ironroot_store::replication::{
    Event, ReplicationConfig, ReplicationPrimary, ReplicationSecondary,
};
use ironroot_store::storage::MemStorage;
use ironroot_store::store::Store;

const PORT: u16 = 7_000;
type Slot = Arc<Mutex<Option<SharedStore>>>;

async fn lease(handle: &PrimaryHandle, i: u8) -> u64 {
    let lease = Lease {
        ipv4: [10, 0, 0, i],
        expires_unix_secs: u64::from(i),
    };
    handle
        .write(move |store| store.record_lease([2, 0, 0, 0, 0, i], lease))
        .await
        .expect("acknowledged")
}

async fn wait_for(
    events: &mut tokio::sync::mpsc::Receiver<Event>,
    mut wanted: impl FnMut(&Event) -> bool,
) {
    while let Some(event) = events.recv().await {
        if wanted(&event) {
            return;
        }
    }
    panic!("driver ended");
}

fn add_secondary(sim: &mut turmoil::Sim<'_>, segment: &Segment, slot: &Slot) {
    let (segment, slot) = (segment.clone(), slot.clone());
    let mem = Arc::new(MemStorage::new());
    sim.host("b", move || {
        let (segment, slot, mem) = (segment.clone(), slot.clone(), mem.clone());
        async move {
            let rt = SimRuntime::start(segment, "b", 2).await?;
            let store = Arc::new(Mutex::new(Store::open(mem).expect("open").0));
            *slot.lock().unwrap() = Some(store.clone());
            let listener = rt
                .listen_tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT)))
                .await?;
            let (events, _keep) = tokio::sync::mpsc::channel(64);
            let machine = ReplicationSecondary::new(ReplicationConfig::new(2));
            let config = DriverConfig::default();
            run_secondary(rt, store, machine, listener, config, events).await;
            Ok(())
        }
    });
}

#[test]
fn a_partitioned_peer_is_outdated_then_resynced() {
    let mut builder = turmoil::Builder::new();
    builder
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .simulation_duration(Duration::from_secs(120))
        .rng_seed(11);
    let mut sim = builder.build();
    let segment = Segment::new();
    let (a_slot, b_slot): (Slot, Slot) = (Slot::default(), Slot::default());
    add_secondary(&mut sim, &segment, &b_slot);
    let slot = a_slot.clone();
    sim.client("a", async move {
        let rt = SimRuntime::start(segment, "a", 1).await?;
        let (mut store, _) = Store::open(Arc::new(MemStorage::new())).expect("open");
        store.promote(1, 0);
        let store = Arc::new(Mutex::new(store));
        *slot.lock().unwrap() = Some(store.clone());
        let mut repl = ReplicationConfig::new(1);
        repl.response_timeout_ms = 1_000;
        let config = DriverConfig {
            reconnect_delay_ms: 200,
            connect_timeout_ms: 500,
            ..DriverConfig::default()
        };
        let peer = SocketAddr::new(turmoil::lookup("b"), PORT);
        let machine = ReplicationPrimary::new(repl);
        let (handle, mut events) = spawn_primary(rt, store, machine, peer, config);
        for i in 1..=3 {
            lease(&handle, i).await;
        }
        turmoil::partition("a", "b");
        let during = tokio::spawn({
            let handle = handle.clone();
            async move { lease(&handle, 4).await }
        });
        wait_for(&mut events, |e| *e == Event::PeerUnresponsive).await;
        handle.peer_outdated().await.expect("driver");
        assert_eq!(during.await.expect("task"), 4);
        // Outdating wrote a PeerOutdated entry (seq 5) first.
        assert_eq!(lease(&handle, 5).await, 6, "degraded mode goes on");
        turmoil::repair("a", "b");
        wait_for(&mut events, |e| *e == Event::InSync { seq: 6 }).await;
        assert_eq!(lease(&handle, 6).await, 7);
        Ok(())
    });
    sim.run().expect("simulation");
    let hash = |slot: &Slot| {
        let store = slot.lock().unwrap().clone().expect("started");
        let hash = store.lock().unwrap().state().content_hash();
        hash
    };
    assert_eq!(hash(&a_slot), hash(&b_slot));
}
