//! SIGHUP: read the configuration file again and apply what can change on
//! a running node; say in the log what was applied and what needs a
//! restart.
//!
//! Only the log filter (`log.level`) is applied live. Everything else is
//! wired into sockets, the cluster manager's timing, the VIP, the store or
//! the NFS handle MAC at start, and changing it under a running pair could
//! break the invariants the cluster manager keeps (both nodes must agree on
//! timing and keys): those changes are reported as needing a restart, key
//! by key. An invalid file changes nothing and is reported with the same
//! one-line error a start would give. The client registry lives in the
//! replicated store and is changed through `ironroot`, not the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::IronrootFile;

/// Applies a new log filter to the running subscriber.
pub type LogControl = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What one reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Keys applied live.
    pub reloaded: Vec<String>,
    /// Keys (or key files) that changed and need a restart to apply.
    pub restart_needed: Vec<String>,
    /// Why nothing was applied.
    pub error: Option<String>,
}

/// The configuration a process runs with, and how to reload it.
pub struct Reloader {
    path: PathBuf,
    /// `Some(name)` for a node, `None` for the witness.
    node: Option<String>,
    running: toml::Value,
    key_files: BTreeMap<String, Option<Vec<u8>>>,
    log: LogControl,
    /// `IRONROOT_LOG` was set at start: it keeps precedence over the file.
    env_filter: bool,
}

fn key_files(file: &IronrootFile) -> BTreeMap<String, Option<Vec<u8>>> {
    let path = &file.nfs.handle_key_file;
    BTreeMap::from([(
        format!("nfs.handle_key_file ({})", path.display()),
        std::fs::read(path).ok(),
    )])
}

impl Reloader {
    /// The state at start (`text` is the file as the process read it).
    pub fn new(
        path: &Path,
        node: Option<String>,
        text: &str,
        log: LogControl,
        env_filter: bool,
    ) -> Result<Reloader, String> {
        let display = path.display().to_string();
        let running: toml::Value = toml::from_str(text).map_err(|e| format!("{display}: {e}"))?;
        let file = IronrootFile::parse(text, &display).map_err(|e| e.to_string())?;
        Ok(Reloader {
            path: path.to_owned(),
            node,
            running,
            key_files: key_files(&file),
            log,
            env_filter,
        })
    }

    /// Read the file again and apply what can be applied.
    pub fn reload(&mut self) -> ReloadReport {
        let display = self.path.display().to_string();
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) => return failed(format!("{display}: {error}")),
        };
        let file = match IronrootFile::parse(&text, &display) {
            Ok(file) => file,
            Err(error) => return failed(error.to_string()),
        };
        let valid = match &self.node {
            Some(name) => file.node(name, &display).map(|s| s.log),
            None => file.witness(&display).map(|s| s.log),
        };
        let log = match valid {
            Ok(log) => log,
            Err(error) => return failed(error.to_string()),
        };
        let Ok(new) = toml::from_str::<toml::Value>(&text) else {
            return failed(format!("{display}: does not parse as TOML"));
        };
        let mut report = ReloadReport::default();
        for key in changed_keys(&self.running, &new) {
            if key == "log.level" && !self.env_filter {
                if let Err(error) = (self.log)(log.filter()) {
                    return failed(format!("{display}: log.level: {error}"));
                }
                report.reloaded.push(key);
            } else if key == "log.level" {
                report
                    .restart_needed
                    .push("log.level (IRONROOT_LOG is set and wins)".to_owned());
            } else {
                report.restart_needed.push(key);
            }
        }
        let key_files = key_files(&file);
        for (name, content) in &key_files {
            if self.key_files.get(name) != Some(content) {
                report.restart_needed.push(name.clone());
            }
        }
        self.running = new;
        self.key_files = key_files;
        report
    }
}

fn failed(error: String) -> ReloadReport {
    ReloadReport {
        error: Some(error),
        ..ReloadReport::default()
    }
}

/// A section absent on one side compares as an empty one.
fn table<'a>(
    value: Option<&'a toml::Value>,
    empty: &'a toml::value::Table,
) -> Option<&'a toml::value::Table> {
    match value {
        None => Some(empty),
        Some(toml::Value::Table(table)) => Some(table),
        Some(_) => None,
    }
}

/// Dotted paths of the keys that differ, down to the second level
/// (`cluster.timing`, `log.level`), sorted.
pub fn changed_keys(old: &toml::Value, new: &toml::Value) -> Vec<String> {
    let empty = toml::value::Table::new();
    let (old, new) = (
        old.as_table().unwrap_or(&empty),
        new.as_table().unwrap_or(&empty),
    );
    let mut keys: Vec<String> = Vec::new();
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        match (old.get(name), new.get(name)) {
            (a, b) if a == b => {}
            (a, b) if table(a, &empty).is_some() && table(b, &empty).is_some() => {
                let (a, b) = (
                    table(a, &empty).unwrap_or(&empty),
                    table(b, &empty).unwrap_or(&empty),
                );
                let inner: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for key in inner {
                    if a.get(key) != b.get(key) {
                        keys.push(format!("{name}.{key}"));
                    }
                }
            }
            _ => keys.push(name.clone()),
        }
    }
    keys
}

/// Reload on every SIGHUP, logging the outcome, for as long as the
/// process runs.
pub async fn serve_sighup(mut reloader: Reloader) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot listen for SIGHUP: configuration reload is off");
        return;
    };
    while hangups.recv().await.is_some() {
        let report = reloader.reload();
        log_report(&report);
    }
}

fn log_report(report: &ReloadReport) {
    if let Some(error) = &report.error {
        tracing::error!(%error, "SIGHUP: configuration not reloaded, nothing changed");
        return;
    }
    if report.reloaded.is_empty() && report.restart_needed.is_empty() {
        tracing::info!("SIGHUP: configuration unchanged");
        return;
    }
    if !report.reloaded.is_empty() {
        tracing::info!(keys = ?report.reloaded, "SIGHUP: reloaded");
        // Shows only if the new filter lets debug through: proof it is live.
        tracing::debug!("SIGHUP: debug logging is on");
    }
    if !report.restart_needed.is_empty() {
        tracing::warn!(keys = ?report.restart_needed, "SIGHUP: changed, needs a restart to apply");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn layout(dir: &Path, extra: &str) -> String {
        crate::config::TwoNodeLayout {
            cluster_id: 1,
            key_hex: "11".repeat(32),
            nodes: [
                ("a".into(), [192, 0, 2, 1].into()),
                ("b".into(), [192, 0, 2, 2].into()),
            ],
            witness: None,
            vip: "192.0.2.10".parse().expect("vip"),
            prefix_len: 24,
            interface: "eth0".into(),
            dead_ms: 1500,
            store_dir: dir.join("store"),
            replication_port: 7790,
            handle_key_file: dir.join("handle.key"),
            admin_socket: dir.join("admin.sock"),
            metrics_listen: "127.0.0.1:9450".into(),
            extra: extra.to_owned(),
        }
        .render()
    }

    fn reloader(dir: &Path, text: &str, env: bool) -> (Reloader, Arc<Mutex<Vec<String>>>) {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let log: LogControl = {
            let applied = Arc::clone(&applied);
            Box::new(move |filter| {
                applied.lock().expect("lock").push(filter.to_owned());
                Ok(())
            })
        };
        let path = dir.join("ironroot.toml");
        std::fs::write(&path, text).expect("write");
        let reloader = Reloader::new(&path, Some("a".into()), text, log, env).expect("reloader");
        (reloader, applied)
    }

    #[test]
    fn the_log_level_reloads_and_the_rest_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("handle.key"), "22".repeat(32)).expect("key");
        let text = layout(dir.path(), "[log]\nlevel = \"info\"\n");
        let (mut reloader, applied) = reloader(dir.path(), &text, false);
        let path = dir.path().join("ironroot.toml");

        assert_eq!(reloader.reload(), ReloadReport::default(), "unchanged");

        let debug = layout(
            dir.path(),
            "[log]\nlevel = \"debug,ironroot_cluster=info\"\n",
        )
        .replace("dead_ms = 1500", "dead_ms = 2000");
        std::fs::write(&path, &debug).expect("write");
        std::fs::write(dir.path().join("handle.key"), "33".repeat(32)).expect("key");
        let report = reloader.reload();
        assert_eq!(report.error, None);
        assert_eq!(report.reloaded, ["log.level"]);
        let handle_key = format!(
            "nfs.handle_key_file ({})",
            dir.path().join("handle.key").display()
        );
        assert_eq!(
            report.restart_needed,
            ["cluster.timing", handle_key.as_str()]
        );
        assert_eq!(
            *applied.lock().expect("lock"),
            ["debug,ironroot_cluster=info"]
        );

        // An invalid file changes nothing and says why in one line.
        let bad = debug.replace("level = \"debug,ironroot_cluster=info\"", "level = \"=[\"");
        std::fs::write(&path, bad).expect("write");
        let report = reloader.reload();
        let error = report.error.expect("refused");
        assert!(error.contains("log.level"), "{error}");
        assert!(!error.contains('\n'), "{error}");
        assert!(report.reloaded.is_empty());
        assert_eq!(applied.lock().expect("lock").len(), 1);
        std::fs::write(&path, "[cluster\n").expect("write");
        assert!(reloader
            .reload()
            .error
            .is_some_and(|e| e.contains("line 1")));
    }

    #[test]
    fn a_section_added_or_removed_names_its_keys() {
        let old: toml::Value = toml::from_str("[store]\ndir = \"/a\"\n").expect("toml");
        let new: toml::Value =
            toml::from_str("[store]\ndir = \"/a\"\n[log]\nlevel = \"debug\"\njson = true\n")
                .expect("toml");
        assert_eq!(changed_keys(&old, &new), ["log.json", "log.level"]);
        assert_eq!(changed_keys(&new, &old), ["log.json", "log.level"]);
        assert!(changed_keys(&new, &new).is_empty());
    }

    #[test]
    fn the_environment_filter_wins_over_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("handle.key"), "22".repeat(32)).expect("key");
        let (mut reloader, applied) = reloader(dir.path(), &layout(dir.path(), ""), true);
        let path = dir.path().join("ironroot.toml");
        std::fs::write(&path, layout(dir.path(), "[log]\nlevel = \"debug\"\n")).expect("write");
        let report = reloader.reload();
        assert_eq!(
            report.restart_needed,
            ["log.level (IRONROOT_LOG is set and wins)"]
        );
        assert!(applied.lock().expect("lock").is_empty());
    }
}
