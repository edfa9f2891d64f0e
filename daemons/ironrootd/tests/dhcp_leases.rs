//! Two nodes' stores replicating over loopback TCP, each with the DHCP
//! server the node runs: a pool lease granted on node a is ACKed only once
//! node b's journal holds it; after a switchover (a demoted, b promoted, as
//! the cluster manager does it) b's new DHCP server starts from the
//! replicated leases: it gives that address to nobody else and renews it
//! for its owner, through b's journal back to a. On the same two stores:
//! the active node's retention task expires generations on both.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use ironroot_dhcp::{
    Config, DhcpServer, Incoming, LeaseLog, MemoryRegistry, Outgoing, PoolConfig, SERVER_PORT,
};
use ironroot_net::tokio_backend::TokioRuntime;
use ironroot_net::{Instant, Resource, Runtime, TcpListener};
use ironroot_store::journal::PoolLeaseState;
use ironroot_store::storage::MemStorage;
use ironroot_store::store::Store;
use ironrootd::leaselog::StoreLeaseLog;
use ironrootd::services::{serve_secondary, Replication, ReplicationSettings, StoreResource};
use ironrootd::storefs::SharedStore;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 10);
const LEASED: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 100);
const WALL_BASE: u64 = 1_800_000_000;

struct Node {
    store: SharedStore,
    replication: Replication,
    resource: StoreResource,
    log: StoreLeaseLog,
}

async fn node(
    rt: &TokioRuntime,
    id: u32,
    listener: <TokioRuntime as Runtime>::Listener,
    peer: SocketAddr,
) -> Node {
    let store: SharedStore = Arc::new(Mutex::new(
        Store::open(Arc::new(MemStorage::new())).expect("open").0,
    ));
    let replication = Replication::default();
    let settings = ReplicationSettings {
        node_id: id,
        listen: listener.local_addr().expect("addr"),
        peer,
        split_brain: Default::default(),
        degraded: Default::default(),
    };
    serve_secondary(rt, &store, &replication, &settings, listener);
    let resource = StoreResource::new(
        rt.clone(),
        Arc::clone(&store),
        replication.clone(),
        settings,
        Arc::new(|| true),
    );
    let log = StoreLeaseLog::new(Arc::clone(&store), replication.clone());
    Node {
        store,
        replication,
        resource,
        log,
    }
}

fn dhcp_server(now: Instant) -> DhcpServer<MemoryRegistry> {
    let mut config = Config::new(VIP, Ipv4Addr::new(255, 255, 255, 0));
    config.pool = Some(PoolConfig {
        start: LEASED,
        end: Ipv4Addr::new(10, 9, 0, 107),
        lease_secs: 600,
        offer_hold_secs: 30,
        decline_quarantine_secs: 300,
    });
    let mut server = DhcpServer::new(config, MemoryRegistry::new(4)).expect("config");
    server.set_wall_clock(
        now,
        WALL_BASE + now.saturating_duration_since(Instant::ZERO).as_secs(),
    );
    server
}

fn request(kind: MessageType, last: u8, ciaddr: Ipv4Addr, requested: Option<Ipv4Addr>) -> Vec<u8> {
    let mac = [0x52, 0x54, 0, 0, 0, last];
    let mut message = Message::new_with_id(
        u32::from(last),
        ciaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    message.set_opcode(Opcode::BootRequest);
    message.opts_mut().insert(DhcpOption::MessageType(kind));
    if let Some(ip) = requested {
        message
            .opts_mut()
            .insert(DhcpOption::RequestedIpAddress(ip));
        message.opts_mut().insert(DhcpOption::ServerIdentifier(VIP));
    }
    let mut bytes = Vec::new();
    message
        .encode(&mut Encoder::new(&mut bytes))
        .expect("encodes");
    bytes
}

fn deliver(server: &mut DhcpServer<MemoryRegistry>, now: Instant, bytes: &[u8]) -> Vec<Outgoing> {
    server.handle(
        now,
        Incoming {
            bytes,
            peer: SocketAddr::from(([0, 0, 0, 0], 68)),
            local_ip: IpAddr::V4(Ipv4Addr::BROADCAST),
            local_port: SERVER_PORT,
        },
    )
}

fn kind_and_address(outgoing: &Outgoing) -> (MessageType, Ipv4Addr) {
    let message = Message::decode(&mut Decoder::new(&outgoing.bytes)).expect("reply decodes");
    let kind = match message.opts().get(dhcproto::v4::OptionCode::MessageType) {
        Some(DhcpOption::MessageType(kind)) => *kind,
        other => panic!("no message type: {other:?}"),
    };
    (kind, message.yiaddr())
}

/// Write the server's pending batch through `log` once its gather window
/// is over and return the ACKs it released.
async fn commit(
    server: &mut DhcpServer<MemoryRegistry>,
    log: &StoreLeaseLog,
    now: Instant,
) -> Vec<Outgoing> {
    let gather = Duration::from_millis(server.config().limits.lease_gather_ms);
    let write = server
        .poll_lease_write(now + gather)
        .expect("a lease batch");
    let id = write.id;
    let written = tokio::time::timeout(Duration::from_secs(10), log.append(write))
        .await
        .expect("the journal answers in time");
    written.expect("durable on both nodes");
    server.handle_lease_durable(now + gather, id);
    std::iter::from_fn(|| server.poll_transmit()).collect()
}

async fn wait_primary(node: &Node) {
    for _ in 0..200 {
        if node.replication.primary().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never became primary");
}

/// Nodes a and b replicating over loopback, a promoted to primary.
async fn two_nodes(rt: &TokioRuntime) -> (Node, Node) {
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let (listener_a, listener_b) = (
        rt.listen_tcp(loopback).await.expect("listen a"),
        rt.listen_tcp(loopback).await.expect("listen b"),
    );
    let (addr_a, addr_b) = (
        listener_a.local_addr().expect("a"),
        listener_b.local_addr().expect("b"),
    );
    let mut a = node(rt, 1, listener_a, addr_b).await;
    let b = node(rt, 2, listener_b, addr_a).await;
    a.resource.start().await.expect("a promoted");
    wait_primary(&a).await;
    (a, b)
}

#[tokio::test]
async fn pool_lease_granted_on_a_is_kept_by_b_after_switchover() {
    let rt = TokioRuntime::with_seed(7);
    let (mut a, mut b) = two_nodes(&rt).await;

    // Node a grants a pool lease; the ACK waits for the journal.
    let t0 = Instant::from_millis(1_000);
    let mut dhcp_a = dhcp_server(t0);
    dhcp_a.restore(t0, &a.log.records());
    let req = request(MessageType::Request, 1, Ipv4Addr::UNSPECIFIED, Some(LEASED));
    assert!(
        deliver(&mut dhcp_a, t0, &req).is_empty(),
        "no ACK before the lease is durable"
    );
    let acks = commit(&mut dhcp_a, &a.log, t0).await;
    assert_eq!(acks.len(), 1);
    assert_eq!(kind_and_address(&acks[0]), (MessageType::Ack, LEASED));
    // Protocol C: when the write resolved, b's journal had it.
    let on_b = b.log.records();
    assert_eq!(on_b.len(), 1, "{on_b:?}");
    assert_eq!(on_b[0].ip, LEASED);
    assert_eq!(
        b.store.lock().unwrap().state().pool_leases()[0].state,
        PoolLeaseState::Bound
    );

    // Group commit: three REQUESTs gathered while no write is in flight
    // become one journal entry, on both nodes.
    let seq = |node: &Node| node.store.lock().unwrap().state().last_seq();
    let before = (seq(&a), seq(&b));
    for (last, ip) in [(3u8, 101u8), (4, 102), (5, 103)] {
        let wanted = Ipv4Addr::new(10, 9, 0, ip);
        let req = request(
            MessageType::Request,
            last,
            Ipv4Addr::UNSPECIFIED,
            Some(wanted),
        );
        assert!(deliver(&mut dhcp_a, t0, &req).is_empty());
    }
    let acks = commit(&mut dhcp_a, &a.log, t0).await;
    assert_eq!(acks.len(), 3);
    assert_eq!((seq(&a), seq(&b)), (before.0 + 1, before.1 + 1));
    assert_eq!(b.log.records().len(), 4);

    // Switchover: a demoted and secondary again, b promoted.
    drop(dhcp_a);
    a.resource.stop().await.expect("a demoted");
    b.resource.start().await.expect("b promoted");
    wait_primary(&b).await;
    assert!(a.replication.primary().is_none());

    // b's DHCP server starts from its store, with its own clock origin.
    let t1 = Instant::from_millis(50_000);
    let mut dhcp_b = dhcp_server(t1);
    dhcp_b.restore(t1, &b.log.records());
    for last in 2..6u8 {
        let discover = request(MessageType::Discover, last, Ipv4Addr::UNSPECIFIED, None);
        for reply in deliver(&mut dhcp_b, t1, &discover) {
            let (_, offered) = kind_and_address(&reply);
            assert_ne!(
                offered, LEASED,
                "b offered the leased address to another client"
            );
        }
    }
    let steal = request(MessageType::Request, 9, Ipv4Addr::UNSPECIFIED, Some(LEASED));
    let naks = deliver(&mut dhcp_b, t1, &steal);
    assert_eq!(kind_and_address(&naks[0]).0, MessageType::Nak);

    // The owner renews (unicast, ciaddr) and b answers through its journal.
    let renew = request(MessageType::Request, 1, LEASED, None);
    assert!(deliver(&mut dhcp_b, t1, &renew).is_empty());
    let acks = commit(&mut dhcp_b, &b.log, t1).await;
    assert_eq!(kind_and_address(&acks[0]), (MessageType::Ack, LEASED));
    let on_a = a.log.records();
    let renewed = on_a.iter().find(|r| r.ip == LEASED).expect("on a");
    assert!(
        renewed.until_unix_secs >= WALL_BASE + 50 + 600,
        "the renewal reached a: {renewed:?}"
    );
    let hash = |node: &Node| node.store.lock().unwrap().state().content_hash();
    assert_eq!(hash(&a), hash(&b));
}

#[tokio::test]
async fn append_without_a_primary_is_refused() {
    let store: SharedStore = Arc::new(Mutex::new(
        Store::open(Arc::new(MemStorage::new())).expect("open").0,
    ));
    let log = StoreLeaseLog::new(store, Replication::default());
    let write = ironroot_dhcp::LeaseWrite {
        id: ironroot_dhcp::LeaseWriteId(1),
        records: vec![ironroot_dhcp::LeaseRecord {
            ip: LEASED,
            client: ironroot_dhcp::ClientKey(vec![1, 2, 3]),
            kind: ironroot_dhcp::LeaseRecordKind::Bound,
            until_unix_secs: 5,
        }],
    };
    assert_eq!(
        log.append(write).await,
        Err(ironroot_dhcp::LeaseLogError::NotPrimary)
    );
    assert!(log.records().is_empty());
}

#[tokio::test]
async fn retention_on_the_active_expires_generations_on_both_nodes() {
    let rt = TokioRuntime::with_seed(9);
    let (a, b) = two_nodes(&rt).await;
    let primary = a.replication.primary().expect("primary");
    let tree = tempfile::tempdir().expect("tempdir");
    for version in 0..3u8 {
        std::fs::write(tree.path().join("file"), vec![version; 4096]).expect("write");
        let path = tree.path().to_owned();
        let time = ironroot_store::model::Timestamp {
            secs: 1_000 + i64::from(version),
            nanos: 0,
        };
        primary
            .write(move |s| s.import_dir("img", &path, time, "version"))
            .await
            .expect("import");
    }
    let generations = |node: &Node| {
        let store = node.store.lock().expect("store");
        store
            .state()
            .generations
            .keys()
            .copied()
            .collect::<Vec<_>>()
    };
    assert_eq!(generations(&b).len(), 3);
    let task = tokio::spawn(ironrootd::retention::run(
        rt.clone(),
        Arc::clone(&a.store),
        a.replication.clone(),
        ironrootd::retention::RetentionSettings {
            interval: Duration::from_millis(20),
            retention: ironroot_store::gc::Retention {
                generations_per_image_min: 1,
                age_min_secs: 0,
            },
        },
        Arc::new(|| true),
    ));
    for _ in 0..500 {
        if generations(&b).len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    // The newest generation (the image's ref) stays, on both nodes.
    let kept = generations(&a);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(generations(&b), kept);
    let store = a.store.lock().expect("store");
    assert_eq!(store.state().refs.get("image/img"), kept.first());
}
