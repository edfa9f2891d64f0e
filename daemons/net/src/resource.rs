//! A service the cluster manager starts, stops and watches, in order, each
//! step bounded by a timeout (store promotion, NFS, TFTP, DHCP, the VIP).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, so heterogeneous resources fit in one ordered list.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What [`Resource::monitor`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Running and serving.
    Healthy,
    /// Running but impaired; the reason goes to logs and metrics. Does not
    /// trigger failover by itself.
    Degraded(String),
    /// Not serving: on the active node this triggers failover.
    Failed(String),
}

/// Bounds on each operation; the cluster manager enforces them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceTimeouts {
    pub start: Duration,
    pub stop: Duration,
    pub monitor: Duration,
}

impl Default for ResourceTimeouts {
    fn default() -> ResourceTimeouts {
        ResourceTimeouts {
            start: Duration::from_secs(5),
            stop: Duration::from_secs(5),
            monitor: Duration::from_secs(2),
        }
    }
}

/// Why a resource operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("{resource}: {operation} timed out after {after:?}")]
    TimedOut {
        resource: String,
        operation: &'static str,
        after: Duration,
    },
    #[error("{resource}: {operation} failed: {source}")]
    Failed {
        resource: String,
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A unit the cluster manager orders. Implementations must be idempotent:
/// `start` on a started resource and `stop` on a stopped one succeed.
pub trait Resource: Send {
    /// Stable name for logs, metrics and ordering checks (`store`, `nfs`, ...).
    fn name(&self) -> &str;
    /// Bounds the manager applies to each call.
    fn timeouts(&self) -> ResourceTimeouts {
        ResourceTimeouts::default()
    }
    /// Bring the resource up on this node.
    fn start(&mut self) -> BoxFuture<'_, Result<(), ResourceError>>;
    /// Take it down; must leave nothing serving.
    fn stop(&mut self) -> BoxFuture<'_, Result<(), ResourceError>>;
    /// Check it.
    fn monitor(&mut self) -> BoxFuture<'_, Health>;
}
