//! The node's services as cluster resources: each start binds its sockets
//! (so a port in use fails the start with a clear error) and spawns the
//! serving task; stop aborts it; monitor reports a task that ended.

use std::io;
use std::sync::{Arc, RwLock};

use ironroot_net::resource::BoxFuture;
use ironroot_net::{Health, Resource, ResourceError};

use crate::storefs::SharedStore;

/// Binds, then returns the future that serves until it fails.
pub type Starter =
    Box<dyn Fn() -> BoxFuture<'static, io::Result<BoxFuture<'static, io::Result<()>>>> + Send + Sync>;

/// A network service run as a task.
pub struct Service {
    name: &'static str,
    starter: Starter,
    task: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl Service {
    pub fn new(name: &'static str, starter: Starter) -> Service {
        Service { name, starter, task: None }
    }
}

fn failed(resource: &str, operation: &'static str, error: io::Error) -> ResourceError {
    ResourceError::Failed { resource: resource.to_owned(), operation, source: Box::new(error) }
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
            let serve = (self.starter)().await.map_err(|e| failed(self.name, "start", e))?;
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
                Some(task) if task.is_finished() => Health::Failed(format!("{} stopped serving", self.name)),
                Some(_) => Health::Healthy,
                None => Health::Failed(format!("{} is not running", self.name)),
            }
        })
    }
}

/// The store as a resource: promoted to primary on start (a new epoch),
/// demoted on stop.
pub struct StoreResource {
    store: SharedStore,
    node_id: u32,
    promoted: Arc<RwLock<bool>>,
}

impl StoreResource {
    pub fn new(store: SharedStore, node_id: u32, promoted: Arc<RwLock<bool>>) -> StoreResource {
        StoreResource { store, node_id, promoted }
    }
}

impl Resource for StoreResource {
    fn name(&self) -> &str {
        "store"
    }

    fn start(&mut self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(async move {
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            if store.epoch().is_none() {
                let epoch = store.promote(self.node_id, 0);
                tracing::info!(?epoch, "store promoted");
            }
            *self.promoted.write().unwrap_or_else(|p| p.into_inner()) = true;
            Ok(())
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, Result<(), ResourceError>> {
        Box::pin(async move {
            self.store.write().unwrap_or_else(|p| p.into_inner()).demote();
            *self.promoted.write().unwrap_or_else(|p| p.into_inner()) = false;
            tracing::info!("store demoted");
            Ok(())
        })
    }

    fn monitor(&mut self) -> BoxFuture<'_, Health> {
        Box::pin(async move {
            let store = self.store.read().unwrap_or_else(|p| p.into_inner());
            match store.unreadable_trees() {
                0 => Health::Healthy,
                n => Health::Degraded(format!("{n} trees failed their hash")),
            }
        })
    }
}
