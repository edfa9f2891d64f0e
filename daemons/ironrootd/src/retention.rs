//! Retention on the active node: every `store.gc_interval_secs` it expires
//! the generations the policy lets go (a journal entry, replicated, so both
//! nodes drop the same ones) and collects the objects nothing retained
//! reaches (local). Only the active node collects: its object writes and
//! their journal entry happen under one hold of the store lock, so a
//! collection never sees a write's objects before the entry that refers to
//! them; on the standby, objects arriving ahead of their entry would look
//! unreferenced. The standby collects once it is active.

use std::sync::Arc;
use std::time::Duration;

use ironroot_net::Runtime;
use ironroot_store::gc::Retention;

use crate::services::Replication;
use crate::storefs::SharedStore;

/// What retention does and how often.
#[derive(Clone, Copy, Debug)]
pub struct RetentionSettings {
    pub interval: Duration,
    pub retention: Retention,
}

/// Run until the process ends (nothing when the interval is 0).
pub async fn run<R: Runtime>(
    rt: R,
    store: SharedStore,
    replication: Replication,
    settings: RetentionSettings,
    is_active: Arc<dyn Fn() -> bool + Send + Sync>,
) {
    if settings.interval.is_zero() {
        return;
    }
    loop {
        rt.sleep(settings.interval).await;
        if !is_active() {
            continue;
        }
        let Some(primary) = replication.primary() else {
            continue;
        };
        let now = crate::handler::now_timestamp();
        let retention = settings.retention;
        let due = store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expired_generations(retention, now);
        if !due.is_empty() {
            match primary.write(move |s| s.expiry_entry(retention, now)).await {
                Ok(seq) => tracing::info!(seq, generations = ?due, "generations expired"),
                Err(error) => {
                    tracing::warn!(%error, "expiring generations failed");
                    continue;
                }
            }
        }
        let store = Arc::clone(&store);
        let collected = tokio::task::spawn_blocking(move || {
            store
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .collect_garbage()
        })
        .await;
        match collected {
            Ok(Ok(report)) if report.bytes_freed > 0 => {
                tracing::info!(?report, "objects collected");
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "collecting objects failed"),
            Err(error) => tracing::warn!(%error, "collecting objects panicked"),
        }
    }
}
