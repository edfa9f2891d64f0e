//! The replication drivers over real loopback TCP (tokio backend).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironroot_net::tokio_backend::TokioRuntime;
use ironroot_net::Runtime;
use ironroot_store::model::Timestamp;
use ironroot_store::replication::driver::{run_secondary, spawn_primary, DriverConfig};
use ironroot_store::replication::{
    Event, ReplicationConfig, ReplicationPrimary, ReplicationSecondary,
};
use ironroot_store::storage::MemStorage;
use ironroot_store::store::Store;

fn store() -> Store {
    Store::open(Arc::new(MemStorage::new())).unwrap().0
}

#[tokio::test]
async fn writes_replicate_over_loopback_and_survive_a_peer_restart() {
    let rt = TokioRuntime::with_seed(7);
    let listener = rt.listen_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = ironroot_net::TcpListener::local_addr(&listener).unwrap();
    let secondary_store = Arc::new(Mutex::new(store()));
    let (events_tx, _events_rx) = tokio::sync::mpsc::channel(64);
    let config = DriverConfig {
        reconnect_delay_ms: 50,
        ..DriverConfig::default()
    };
    let secondary = tokio::spawn(run_secondary(
        rt.clone(),
        secondary_store.clone(),
        ReplicationSecondary::new(ReplicationConfig::new(2)),
        listener,
        config.clone(),
        events_tx,
    ));
    let mut primary_store = store();
    primary_store.promote(1, 0);
    let primary_store = Arc::new(Mutex::new(primary_store));
    let mut repl = ReplicationConfig::new(1);
    repl.response_timeout_ms = 300;
    let (handle, mut events) = spawn_primary(
        rt.clone(),
        primary_store.clone(),
        ReplicationPrimary::new(repl),
        addr,
        config,
    );
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("f"), vec![3u8; 200_000]).unwrap();
    let path = tree.path().to_owned();
    let write = move |store: &mut Store| store.import_dir("img", &path, Timestamp::default(), "m");
    let seq = tokio::time::timeout(Duration::from_secs(20), handle.write(write.clone()))
        .await
        .expect("acknowledged in time")
        .unwrap();
    assert_eq!(seq, 1);
    let hash = primary_store.lock().unwrap().state().content_hash();
    assert_eq!(secondary_store.lock().unwrap().state().content_hash(), hash);

    // The peer dies: the next write times out, the owner outdates the peer,
    // and the write is acknowledged in degraded mode.
    secondary.abort();
    let _ = secondary.await;
    let pending = tokio::spawn({
        let handle = handle.clone();
        let write = write.clone();
        async move { handle.write(write).await }
    });
    let unresponsive = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.recv().await {
                Some(Event::PeerUnresponsive) => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(unresponsive, Ok(true));
    handle.peer_outdated().await.unwrap();
    let seq = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seq, 2);
}
