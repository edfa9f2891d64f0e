//! The node's services as cluster resources: each start binds its sockets
//! (so a port in use fails the start with a clear error) and spawns the
//! serving task; stop aborts it; monitor reports a task that ended.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ironroot_net::resource::BoxFuture;
use ironroot_net::tokio_backend::TokioRuntime;
use ironroot_net::{Health, Resource, ResourceError, Runtime};
use ironroot_store::replication::driver::{
    run_secondary_controlled, spawn_primary, DriverConfig, PrimaryHandle, SecondaryControl,
};
use ironroot_store::replication::{ReplicationConfig, ReplicationPrimary, ReplicationSecondary};

use crate::replstatus::SharedReplicationState;
use crate::storefs::SharedStore;

/// Binds, then returns the future that serves until it fails.
pub type Starter = Box<
    dyn Fn() -> BoxFuture<'static, io::Result<BoxFuture<'static, io::Result<()>>>> + Send + Sync,
>;

/// A network service run as a task.
pub struct Service {
    name: &'static str,
    starter: Starter,
    task: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl Service {
    pub fn new(name: &'static str, starter: Starter) -> Service {
        Service {
            name,
            starter,
            task: None,
        }
    }
}

fn failed(resource: &str, operation: &'static str, error: io::Error) -> ResourceError {
    ResourceError::Failed {
        resource: resource.to_owned(),
        operation,
        source: Box::new(error),
    }
}

impl Resource for Service {
    fn name(&self) -> &str {
        self.name
    }

    fn start(&mut self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(async move {
            if self.task.as_ref().is_some_and(|task| !task.is_finished()) {
                return Ok(());
            }
            let serve = (self.starter)()
                .await
                .map_err(|e| failed(self.name, "start", e))?;
            self.task = Some(tokio::spawn(serve));
            tracing::info!(service = self.name, "started");
            Ok(())
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(async move {
            if let Some(task) = self.task.take() {
                task.abort();
                let _ = task.await;
                tracing::info!(service = self.name, "stopped");
            }
            Ok(())
        })
    }

    fn monitor(&mut self) -> BoxFuture<'_, Health> {
        Box::pin(async move {
            match &self.task {
                Some(task) if task.is_finished() => {
                    Health::Failed(format!("{} stopped serving", self.name))
                }
                Some(_) => Health::Healthy,
                None => Health::Failed(format!("{} is not running", self.name)),
            }
        })
    }
}

/// The running replication role of this node's store, and what its
/// events told so far.
#[derive(Clone, Default)]
pub struct Replication {
    inner: Arc<Mutex<ReplicationRole>>,
    state: SharedReplicationState,
}

#[derive(Default)]
enum ReplicationRole {
    #[default]
    Stopped,
    Secondary(tokio::task::JoinHandle<()>, SecondaryControl),
    Primary(PrimaryHandle),
}

impl Replication {
    /// The handle writes go through while this node is primary.
    pub fn primary(&self) -> Option<PrimaryHandle> {
        match &*self.inner.lock().unwrap_or_else(|p| p.into_inner()) {
            ReplicationRole::Primary(handle) => Some(handle.clone()),
            _ => None,
        }
    }

    /// The operator's control of the secondary while this node is one.
    pub fn secondary(&self) -> Option<SecondaryControl> {
        match &*self.inner.lock().unwrap_or_else(|p| p.into_inner()) {
            ReplicationRole::Secondary(_, control) => Some(control.clone()),
            _ => None,
        }
    }

    /// What the replication events told so far.
    pub fn state(&self) -> crate::replstatus::ReplicationState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, role: ReplicationRole) {
        let old = std::mem::replace(
            &mut *self.inner.lock().unwrap_or_else(|p| p.into_inner()),
            role,
        );
        if let ReplicationRole::Secondary(task, _) = old {
            task.abort();
        }
        // An aborted driver reports nothing more; a divergence stays known
        // until a connection shows otherwise.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !state.needs_resolution() {
            state.link = crate::replstatus::Link::Disconnected;
        }
        // A dropped PrimaryHandle ends its driver.
    }
}

/// Where and how the store replicates.
#[derive(Clone)]
pub struct ReplicationSettings {
    pub node_id: u32,
    pub listen: SocketAddr,
    pub peer: SocketAddr,
    pub split_brain: ironroot_store::replication::SplitBrainPolicy,
    pub degraded: ironroot_store::replication::DegradedPolicy,
}

impl ReplicationSettings {
    fn config(&self) -> ReplicationConfig {
        let mut config = ReplicationConfig::new(self.node_id);
        config.split_brain = self.split_brain;
        config.degraded = self.degraded;
        config
    }
}

/// Serve the secondary side: accept the primary's connection and apply its
/// entries. Started at boot and whenever this node stops being primary.
pub async fn start_secondary(
    rt: &TokioRuntime,
    store: &SharedStore,
    replication: &Replication,
    settings: &ReplicationSettings,
) -> io::Result<()> {
    let listener = rt.listen_tcp(settings.listen).await?;
    serve_secondary(rt, store, replication, settings, listener);
    Ok(())
}

/// [`start_secondary`] on a listener bound already.
pub fn serve_secondary(
    rt: &TokioRuntime,
    store: &SharedStore,
    replication: &Replication,
    settings: &ReplicationSettings,
    listener: <TokioRuntime as Runtime>::Listener,
) {
    let machine = ReplicationSecondary::new(settings.config());
    let (events_tx, events) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(crate::replstatus::track(
        "secondary",
        events,
        Arc::clone(&replication.state),
    ));
    let control = SecondaryControl::default();
    let task = tokio::spawn(run_secondary_controlled(
        rt.clone(),
        Arc::clone(store),
        machine,
        listener,
        DriverConfig::default(),
        events_tx,
        control.clone(),
    ));
    replication.set(ReplicationRole::Secondary(task, control));
}

/// Generations this node gave up in a split brain become replicated
/// `branch/<image>/<seq>` refs once it is primary: the peer learns them in
/// the resync that follows, so both replicas hold them.
fn publish_branches(store: &mut ironroot_store::store::Store) {
    if store.branches().is_empty() {
        return;
    }
    match store.publish_branches() {
        Ok(records) => tracing::info!(
            published = records.len(),
            "generations kept from a split brain published as branches"
        ),
        Err(error) => {
            tracing::error!(%error, "publishing kept branches failed; retried at the next promotion")
        }
    }
}

/// The store as a resource: on start it stops serving as secondary, is
/// promoted (a new epoch) and replicates to the peer; on stop it is demoted
/// and serves as secondary again.
pub struct StoreResource {
    rt: TokioRuntime,
    store: SharedStore,
    replication: Replication,
    settings: ReplicationSettings,
    /// Whether the peer is known down when we promote: then it is
    /// Outdated (the witness lease or fencing made us active without it).
    peer_alive: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl StoreResource {
    pub fn new(
        rt: TokioRuntime,
        store: SharedStore,
        replication: Replication,
        settings: ReplicationSettings,
        peer_alive: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> StoreResource {
        StoreResource {
            rt,
            store,
            replication,
            settings,
            peer_alive,
        }
    }
}

impl Resource for StoreResource {
    fn name(&self) -> &str {
        "store"
    }

    fn start(&mut self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(async move {
            if self.replication.primary().is_some() {
                return Ok(());
            }
            self.replication.set(ReplicationRole::Stopped);
            let epoch = {
                let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
                let epoch = store.promote(self.settings.node_id, 0);
                publish_branches(&mut store);
                epoch
            };
            tracing::info!(?epoch, "store promoted");
            let machine = ReplicationPrimary::new(self.settings.config());
            let (handle, events) = spawn_primary(
                self.rt.clone(),
                Arc::clone(&self.store),
                machine,
                self.settings.peer,
                DriverConfig::default(),
            );
            tokio::spawn(crate::replstatus::track(
                "primary",
                events,
                Arc::clone(&self.replication.state),
            ));
            if !(self.peer_alive)() {
                handle
                    .peer_outdated()
                    .await
                    .map_err(|e| failed("store", "start", io::Error::other(e)))?;
                tracing::warn!("peer is down: recorded Outdated, writes go on degraded");
            }
            self.replication.set(ReplicationRole::Primary(handle));
            Ok(())
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(async move {
            self.replication.set(ReplicationRole::Stopped);
            self.store
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .demote();
            tracing::info!("store demoted");
            start_secondary(&self.rt, &self.store, &self.replication, &self.settings)
                .await
                .map_err(|e| failed("store", "stop", e))
        })
    }

    fn monitor(&mut self) -> BoxFuture<'_, Health> {
        Box::pin(async move {
            let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
            match store.unreadable_trees() {
                0 => Health::Healthy,
                n => Health::Degraded(format!("{n} trees failed their hash")),
            }
        })
    }
}
