//! The `witness` role: the cluster's third vote.

use anyhow::Context;
use ironroot_cluster::FileOutdatedStore;
use ironroot_net::tokio_backend::TokioRuntime;

use crate::config::WitnessSettings;

/// Run the witness until SIGTERM or a fatal error.
pub async fn run(
    settings: WitnessSettings,
    reloader: crate::reload::Reloader,
) -> anyhow::Result<()> {
    tokio::spawn(crate::reload::serve_sighup(reloader));
    std::fs::create_dir_all(&settings.state_dir)
        .with_context(|| format!("store.dir {}", settings.state_dir.display()))?;
    let rt = TokioRuntime::new().context("seeding the runtime")?;
    let outdated = FileOutdatedStore::new(settings.state_dir.join("outdated"));
    tokio::select! {
        result = ironroot_cluster::run_witness(rt, settings.witness, outdated) => result.context("witness"),
        () = crate::shutdown_signal() => Ok(()),
    }
}
