//! A store node's software in the simulator: the real store on its
//! simulated disk ([`MemStorage`], kept across restarts), the real
//! replication driver over the seam's simulated TCP, in the role the
//! scenario scripts, and on the primary a writer that records every
//! acknowledged write in the ledger.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironroot_net::turmoil_backend::{Segment, SimRuntime};
use ironroot_net::{Clock, Instant, Runtime};
use ironroot_store::journal::Lease;
use ironroot_store::model::{Meta, Timestamp};
use ironroot_store::replication::driver::{
    run_secondary, spawn_primary, DriverConfig, PrimaryHandle, SharedStore,
};
use ironroot_store::replication::{
    Event, ReplicationConfig, ReplicationPrimary, ReplicationSecondary, Winner,
};
use ironroot_store::stage::{store_content, Staged, StagedKind};
use ironroot_store::storage::MemStorage;
use ironroot_store::store::{Store, StoreError};
use rand::Rng;
use tokio::sync::mpsc;

use super::check::{content_digest, Acked, Written};
use super::config::StoreFile;
use super::{Role, StoreShared};
use crate::world::{host_seed, Log};

/// TCP port of the replication secondary on every node.
pub const REPLICATION_PORT: u16 = 7100;
/// The image the writer publishes generations of.
pub const IMAGE: &str = "img";
/// How often a node looks at the role the scenario gives it.
const ROLE_POLL: Duration = Duration::from_millis(5);
/// Replication events buffered per node.
const EVENTS_MAX: usize = 1024;

/// What one node's software needs; cloned into every incarnation.
#[derive(Clone)]
pub struct NodeContext {
    pub name: String,
    pub peer: String,
    pub node_id: u32,
    pub config: StoreFile,
    pub segment: Segment,
    pub log: Log,
    pub shared: StoreShared,
    pub disk: Arc<MemStorage>,
}

/// Register store node `ctx.name`.
pub fn add_node(sim: &mut turmoil::Sim<'_>, ctx: NodeContext, seed: u64) {
    let starts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let name = ctx.name.clone();
    sim.host(name.as_str(), move || {
        let ctx = ctx.clone();
        let incarnation = starts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let seed = host_seed(seed, &ctx.name, incarnation);
        async move {
            run_node(ctx, seed).await?;
            Ok(())
        }
    });
}

fn replication_config(ctx: &NodeContext) -> ReplicationConfig {
    let mut config = ReplicationConfig::new(ctx.node_id);
    config.split_brain = ctx.config.split_brain.policy();
    config.degraded = ctx.config.degraded.policy();
    config.response_timeout_ms = ctx.config.response_timeout_ms;
    config
}

fn driver_config() -> DriverConfig {
    DriverConfig {
        connect_timeout_ms: 300,
        reconnect_delay_ms: 200,
        write_timeout_ms: 2_000,
        ..DriverConfig::default()
    }
}

async fn run_node(ctx: NodeContext, seed: u64) -> std::io::Result<()> {
    let rt = SimRuntime::start(ctx.segment.clone(), &ctx.name, seed).await?;
    let disk: Arc<dyn ironroot_store::storage::Storage> = ctx.disk.clone();
    let (store, report) = Store::open(disk).map_err(|error| {
        std::io::Error::other(format!("the store does not open after a restart: {error}"))
    })?;
    ctx.log.push(
        rt.now(),
        &ctx.name,
        "store.open",
        format!(
            "last seq {}, {} entries replayed, torn tails cut: journal {} B, packs {} B, corrupt pack bytes {}",
            store.state().last_seq(),
            report.entries_replayed,
            report.journal_truncated_bytes,
            report.pack.truncated_bytes,
            report.pack.corrupt_bytes
        ),
    );
    ctx.shared.opened(
        &ctx.name,
        report.journal_truncated_bytes + report.pack.truncated_bytes,
        report.pack.corrupt_bytes,
    );
    let store: SharedStore = Arc::new(Mutex::new(store));
    ctx.shared.set_store(&ctx.name, Some(Arc::clone(&store)));
    loop {
        match ctx.shared.role(&ctx.name) {
            Role::Secondary => serve_secondary(&rt, &ctx, &store).await?,
            Role::Primary => serve_primary(&rt, &ctx, &store).await,
        }
    }
}

fn record_event(rt: &SimRuntime, ctx: &NodeContext, role: &str, event: &Event) {
    if matches!(
        event,
        Event::Acknowledged { .. } | Event::PeerProgress { .. }
    ) {
        return;
    }
    ctx.log
        .push(rt.now(), &ctx.name, role, format!("{event:?}"));
    ctx.shared.event(rt.now(), &ctx.name, event.clone());
}

async fn serve_secondary(
    rt: &SimRuntime,
    ctx: &NodeContext,
    store: &SharedStore,
) -> std::io::Result<()> {
    let listener = rt
        .listen_tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, REPLICATION_PORT)))
        .await?;
    let (events_tx, mut events) = mpsc::channel(EVENTS_MAX);
    let task = tokio::spawn(run_secondary(
        rt.clone(),
        Arc::clone(store),
        ReplicationSecondary::new(replication_config(ctx)),
        listener,
        driver_config(),
        events_tx,
    ));
    while ctx.shared.role(&ctx.name) == Role::Secondary {
        while let Ok(event) = events.try_recv() {
            record_event(rt, ctx, "repl.secondary", &event);
        }
        rt.sleep(ROLE_POLL).await;
    }
    task.abort();
    let _ = task.await;
    while let Ok(event) = events.try_recv() {
        record_event(rt, ctx, "repl.secondary", &event);
    }
    Ok(())
}

async fn serve_primary(rt: &SimRuntime, ctx: &NodeContext, store: &SharedStore) {
    let epoch = store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .promote(ctx.node_id, 0);
    ctx.log.push(
        rt.now(),
        &ctx.name,
        "store.promote",
        format!("epoch term {} node {}", epoch.term, epoch.node),
    );
    let peer = SocketAddr::new(turmoil::lookup(ctx.peer.as_str()), REPLICATION_PORT);
    let machine = ReplicationPrimary::new(replication_config(ctx));
    let (handle, mut events) = spawn_primary(
        rt.clone(),
        Arc::clone(store),
        machine,
        peer,
        driver_config(),
    );
    ctx.shared.set_handle(&ctx.name, Some(handle.clone()));
    let writer = tokio::spawn(write_loop(rt.clone(), ctx.clone(), handle.clone()));
    while ctx.shared.role(&ctx.name) == Role::Primary {
        match ironroot_net::timeout(rt, ROLE_POLL, events.recv()).await {
            Ok(Some(event)) => {
                record_event(rt, ctx, "repl.primary", &event);
                match event {
                    // The scenarios stand for a witness that always
                    // records the peer Outdated when asked.
                    Event::PeerUnresponsive => {
                        ctx.shared.set_outdated(&ctx.peer, true);
                        let _ = handle.peer_outdated().await;
                    }
                    Event::InSync { .. } => ctx.shared.set_outdated(&ctx.peer, false),
                    Event::SplitBrain {
                        winner: Winner::Peer,
                        ..
                    } => ctx.shared.request_swap(&ctx.name),
                    _ => {}
                }
            }
            Ok(None) => rt.sleep(ROLE_POLL).await,
            Err(_) => {}
        }
    }
    writer.abort();
    let _ = writer.await;
    ctx.shared.set_handle(&ctx.name, None);
    drop(handle);
    store.lock().unwrap_or_else(|p| p.into_inner()).demote();
    ctx.log.push(rt.now(), &ctx.name, "store.demote", "");
}

/// The workload: a write every interval until `writes_until_ms`, each
/// recorded in the ledger once the replication driver acknowledges it.
async fn write_loop(rt: SimRuntime, ctx: NodeContext, handle: PrimaryHandle) {
    let mut rng = rt.rng("store-writer");
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let interval = Duration::from_millis(ctx.config.interval_ms_of(&ctx.name));
    let until = Instant::from_millis(ctx.config.writes_until_ms);
    let leases_only = ctx.config.leases_only.contains(&ctx.name);
    loop {
        rt.sleep(interval).await;
        if rt.now() >= until {
            return;
        }
        let n = ctx.shared.next_write();
        let id = format!("w{n}");
        let pick = if leases_only { 9 } else { rng.gen_range(0..10) };
        let mac = mac_of(n);
        let started = rt.now();
        let (written, result) = match pick {
            0..=5 => {
                mutate_files(&mut rng, &mut files, &ctx.config);
                let digest = content_digest(files.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
                let time = wall_time(&rt);
                let (snapshot, message) = (files.clone(), id.clone());
                let result = handle
                    .write(move |store| write_generation(store, &snapshot, time, &message))
                    .await;
                (Written::Generation { digest }, result)
            }
            6..=7 => {
                let name = format!("client-{n}");
                let ipv4 = ipv4_of(n);
                let (client, image) = (name.clone(), IMAGE.to_owned());
                let result = handle
                    .write(move |store| store.upsert_client(mac, &client, ipv4, &image, None))
                    .await;
                (Written::Client { mac, name, ipv4 }, result)
            }
            _ => {
                let lease = Lease {
                    ipv4: ipv4_of(n),
                    expires_unix_secs: 1_767_225_600 + n,
                };
                let copy = lease.clone();
                let result = handle
                    .write(move |store| store.record_lease(mac, copy))
                    .await;
                (Written::Lease { mac, lease }, result)
            }
        };
        ctx.shared.answered(&id, rt.now() - started);
        match result {
            Ok(seq) => ctx.shared.acked(Acked {
                id,
                node: ctx.name.clone(),
                seq,
                at: rt.now(),
                written,
            }),
            Err(error) => {
                let message = error.to_string();
                ctx.log.push(
                    rt.now(),
                    &ctx.name,
                    "write.failed",
                    format!("{id}: {message}"),
                );
                ctx.shared.write_failed(message);
            }
        }
    }
}

/// A distinct MAC per write, so no write overwrites another's key.
fn mac_of(n: u64) -> [u8; 6] {
    let b = n.to_be_bytes();
    [0x02, 0x00, b[4], b[5], b[6], b[7]]
}

fn ipv4_of(n: u64) -> [u8; 4] {
    let b = n.to_be_bytes();
    [10, b[5], b[6], b[7]]
}

fn wall_time(rt: &SimRuntime) -> Timestamp {
    let since = rt
        .wall_clock()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        secs: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: since.subsec_nanos(),
    }
}

/// Change the image's files: rewrite some, add or drop one, keep the rest
/// (unchanged files are deduplicated by the store).
fn mutate_files(rng: &mut impl Rng, files: &mut BTreeMap<String, Vec<u8>>, config: &StoreFile) {
    let count = rng.gen_range(1..=config.files_per_generation);
    files.retain(|name, _| {
        name.strip_prefix('f')
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n < count)
    });
    for i in 0..count {
        let name = format!("f{i}");
        if files.contains_key(&name) && rng.gen_bool(0.5) {
            continue;
        }
        let len = rng.gen_range(1..=config.file_bytes_max) as usize;
        let mut bytes = vec![0u8; len];
        rng.fill(&mut bytes[..]);
        files.insert(name, bytes);
    }
}

fn write_generation(
    store: &mut Store,
    files: &BTreeMap<String, Vec<u8>>,
    time: Timestamp,
    message: &str,
) -> Result<ironroot_store::journal::Record, StoreError> {
    let mut entries = BTreeMap::new();
    for (name, bytes) in files {
        let (blob, size) = store_content(store.objects_mut(), bytes.as_slice())?;
        let meta = Meta {
            mode: 0o644,
            nlink: 1,
            mtime: time,
            ctime: time,
            atime: time,
            ..Meta::default()
        };
        entries.insert(
            name.as_bytes().to_vec(),
            Staged {
                kind: StagedKind::File { blob, size },
                meta,
                link_group: None,
            },
        );
    }
    let root = Staged {
        kind: StagedKind::Dir(entries),
        meta: Meta {
            mode: 0o755,
            nlink: 2,
            ..Meta::default()
        },
        link_group: None,
    };
    store.commit_staged(IMAGE, &root, time, message)
}
