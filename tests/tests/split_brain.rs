//! A split brain made for real and resolved by the operator, in network
//! namespaces: two `ironrootd` nodes with `unsafe_unfenced` (no witness, no
//! fencing: the only configuration that can split), one node cut off, both
//! write, the link comes back. The default policy leaves them
//! disconnected; `ironroot status` says what to run; `ironroot split-brain
//! resolve --discard-local` on the standby makes both replicas identical
//! with the loser's generation kept, and a switchover publishes it as a
//! branch on both nodes.

// Real processes over real links: this test measures real time.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ironroot_tests::{is_root, require, wait_for, workspace_bin, Daemon, Segment};

const KEY: &str = "5a3c0b7e1f2a4d5c6b7a8998a7b6c5d4e3f201f2e3d4c5b6a79881726354a5b6";

struct Node {
    name: &'static str,
    host: usize,
    dir: PathBuf,
    daemon: Option<Daemon>,
}

struct Pair {
    segment: Segment,
    nodes: Vec<Node>,
    ironroot: PathBuf,
    dir: tempfile::TempDir,
}

impl Pair {
    fn start() -> Result<Pair> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("handle.key"), "24".repeat(32))?;
        let mut segment = Segment::new("irsb")?;
        let ironrootd = workspace_bin("ironrootd")?;
        let mut nodes = Vec::new();
        for (name, ip) in [("a", [10, 78, 0, 1]), ("b", [10, 78, 0, 2])] {
            let host = segment.add_host(name, Some(&format!("10.78.0.{}/24", ip[3])), None)?;
            let node_dir = dir.path().join(name);
            std::fs::create_dir_all(&node_dir)?;
            let config = ironrootd::config::TwoNodeLayout {
                cluster_id: 8,
                key_hex: KEY.to_owned(),
                nodes: [
                    ("a".into(), [10, 78, 0, 1].into()),
                    ("b".into(), [10, 78, 0, 2].into()),
                ],
                witness: None,
                vip: "10.78.0.10".parse()?,
                prefix_len: 24,
                interface: "eth0".into(),
                dead_ms: 1500,
                store_dir: node_dir.join("store"),
                replication_port: 7791,
                handle_key_file: dir.path().join("handle.key"),
                admin_socket: node_dir.join("admin.sock"),
                metrics_listen: "0.0.0.0:9451".into(),
                extra: String::new(),
            }
            .render();
            let config_path = node_dir.join("ironroot.toml");
            std::fs::write(&config_path, config)?;
            let daemon = Daemon::spawn(
                segment.host(host),
                name,
                &ironrootd,
                &[
                    "--config",
                    &config_path.display().to_string(),
                    "--node",
                    name,
                ],
                node_dir.join(format!("{name}.log")),
            )?;
            nodes.push(Node {
                name,
                host,
                dir: node_dir,
                daemon: Some(daemon),
            });
        }
        Ok(Pair {
            segment,
            nodes,
            ironroot: workspace_bin("ironroot")?,
            dir,
        })
    }

    /// `ironroot --json ARGS` against node `i`, with its exit status.
    fn run_cli(&self, i: usize, args: &[&str]) -> Result<(Output, serde_json::Value)> {
        let socket = self.nodes[i].dir.join("admin.sock").display().to_string();
        let mut all = vec![
            "--socket",
            socket.as_str(),
            "--json",
            "--timeout-secs",
            "60",
        ];
        all.extend_from_slice(args);
        let output = std::process::Command::new(&self.ironroot)
            .args(&all)
            .output()?;
        let value = serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "ironroot {args:?} on {}: {}",
                self.nodes[i].name,
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
        Ok((output, value))
    }

    /// A command that must succeed; its data.
    fn cli(&self, i: usize, args: &[&str]) -> Result<serde_json::Value> {
        let (output, value) = self.run_cli(i, args)?;
        if !output.status.success() || value["ok"] != true {
            bail!("ironroot {args:?} on {}: {value}", self.nodes[i].name);
        }
        Ok(value["data"].clone())
    }

    fn status(&self, i: usize) -> Option<serde_json::Value> {
        self.cli(i, &["status"]).ok()
    }

    fn role(&self, i: usize) -> Option<String> {
        self.status(i)?["role"].as_str().map(str::to_owned)
    }

    fn wait_role(&self, i: usize, role: &str) -> Result<()> {
        wait_for(
            &format!("{} {role}", self.nodes[i].name),
            Duration::from_secs(30),
            || (self.role(i).as_deref() == Some(role)).then_some(()),
        )
    }

    fn hash(&self, i: usize) -> Option<String> {
        self.status(i)?["store"]["content_hash"]
            .as_str()
            .map(str::to_owned)
    }

    fn wait_identical(&self) -> Result<String> {
        wait_for("identical replicas", Duration::from_secs(30), || {
            let (a, b) = (self.hash(0)?, self.hash(1)?);
            (a == b).then_some(a)
        })
    }

    /// Import a one-file tree with `content` as a new generation of `img`.
    fn import(&self, i: usize, content: &str) -> Result<()> {
        let tree = self.dir.path().join(content);
        std::fs::create_dir_all(&tree)?;
        std::fs::write(tree.join("f"), content)?;
        self.cli(
            i,
            &[
                "image",
                "import",
                "img",
                "--from",
                &tree.display().to_string(),
            ],
        )?;
        Ok(())
    }

    /// The node's Prometheus metrics, scraped inside its namespace.
    fn metrics(&self, i: usize) -> Result<String> {
        let output = self.segment.host(self.nodes[i].host).output(
            "busybox",
            &["wget", "-qO-", "http://127.0.0.1:9451/metrics"],
            Duration::from_secs(10),
        )?;
        if !output.status.success() {
            bail!("metrics: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn logs(&self) -> String {
        let mut text = String::new();
        for node in &self.nodes {
            if let Some(daemon) = &node.daemon {
                text += &format!("--- {} ---\n{}\n", node.name, daemon.log_text());
            }
        }
        text
    }
}

fn messages(log: &serde_json::Value) -> Vec<String> {
    log.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|g| g["message"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn contains(messages: &[String], dir: &Path, name: &str) -> bool {
    let wanted = format!("import from {}", dir.join(name).display());
    messages.iter().any(|m| m.ends_with(&wanted))
}

#[test]
fn an_operator_resolves_a_split_brain_and_nothing_is_lost() -> Result<()> {
    if !require(is_root(), "needs root (network namespaces)")? {
        return Ok(());
    }
    let pair = Pair::start()?;
    let result = scenario(&pair);
    if result.is_err() {
        eprintln!("{}", pair.logs());
    }
    result
}

/// Who did what in a split brain made by [`split`].
struct Split {
    /// Active before the partition (the other node was cut off and
    /// promoted itself).
    first: usize,
    /// Active once the link is back.
    active: usize,
    standby: usize,
}

/// In-sync pair, then a partition in which both nodes write (`tag` names
/// the trees they import), then the link back with one node active.
fn split(pair: &Pair, tag: &str) -> Result<Split> {
    let first = wait_for("an active node", Duration::from_secs(30), || {
        (0..2).find(|i| pair.role(*i).as_deref() == Some("active"))
    })?;
    let other = 1 - first;
    pair.wait_role(other, "standby")?;
    pair.import(first, &format!("{tag}-common"))?;
    pair.wait_identical()?;

    // Partition: the standby is cut off, promotes itself (unsafe_unfenced)
    // and both sides write.
    pair.segment.cut(pair.nodes[other].host)?;
    pair.wait_role(other, "active")?;
    wait_for("the peer dead", Duration::from_secs(30), || {
        let status = pair.status(first)?;
        (status["peer"]["state"] == "dead").then_some(())
    })?;
    pair.import(first, &format!("{tag}-by-first"))?;
    pair.import(other, &format!("{tag}-by-other"))?;

    // The link is back: one node steps down (dual active) and replication
    // finds divergent histories; the default policy waits for an operator.
    pair.segment.repair(pair.nodes[other].host)?;
    let (active, standby) = wait_for("one active node", Duration::from_secs(30), || {
        let roles = (pair.role(0)?, pair.role(1)?);
        match (roles.0.as_str(), roles.1.as_str()) {
            ("active", "standby") => Some((0, 1)),
            ("standby", "active") => Some((1, 0)),
            _ => None,
        }
    })?;
    for i in [active, standby] {
        wait_for("split brain reported", Duration::from_secs(30), || {
            let status = pair.status(i)?;
            (status["replication"]["link"] == "split-brain").then_some(())
        })?;
    }
    Ok(Split {
        first,
        active,
        standby,
    })
}

fn scenario(pair: &Pair) -> Result<()> {
    let Split {
        first,
        active,
        standby,
    } = split(pair, "one")?;
    let status = wait_for("split brain reported", Duration::from_secs(30), || {
        let status = pair.status(standby)?;
        (status["replication"]["link"] == "split-brain").then_some(status)
    })?;
    let advice = status["replication"]["split_brain"]["resolve"]
        .as_str()
        .context("status says what to run")?;
    assert!(
        advice.contains("ironroot split-brain resolve --discard-local"),
        "{advice}"
    );
    // Each side: the record that it outdated its peer, its write (and
    // whatever its promotion recorded).
    for side in ["local_entries", "peer_entries"] {
        let entries = status["replication"]["split_brain"][side]
            .as_u64()
            .context("entry count")?;
        assert!(entries >= 2, "{side}: {entries}");
    }
    let active_status = pair.status(active).context("active status")?;
    assert_eq!(active_status["replication"]["link"], "split-brain");
    assert_ne!(pair.hash(active), pair.hash(standby));
    let socket = pair.nodes[standby].dir.join("admin.sock");
    let human = std::process::Command::new(&pair.ironroot)
        .args(["--socket", &socket.display().to_string(), "status"])
        .output()?;
    let human = String::from_utf8_lossy(&human.stdout).into_owned();
    assert!(
        human.contains("link: split-brain") && human.contains("--discard-local"),
        "{human}"
    );
    eprintln!("ironroot status on the standby during the split brain:\n{human}");

    let metrics = pair.metrics(standby)?;
    assert!(
        metrics.contains("ironroot_replication_split_brain 1\n")
            && metrics.contains("ironroot_replication_link{state=\"split-brain\"} 1\n"),
        "{metrics}"
    );

    // The wrong flag on either side is refused with what to do instead.
    let (refused, value) = pair.run_cli(standby, &["split-brain", "resolve", "--keep-local"])?;
    assert!(!refused.status.success(), "{value}");
    assert!(
        value["error"]
            .as_str()
            .is_some_and(|e| e.contains("ironroot switchover")),
        "{value}"
    );
    let (refused, value) = pair.run_cli(active, &["split-brain", "resolve", "--discard-local"])?;
    assert!(!refused.status.success(), "{value}");

    // The resolution: the standby gives up its changes, kept as a branch.
    let resolved = pair.cli(standby, &["split-brain", "resolve", "--discard-local"])?;
    assert!(
        resolved["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("resolved")),
        "{resolved}"
    );
    assert_eq!(
        resolved["branches_kept"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0),
        1,
        "{resolved}"
    );
    pair.wait_identical()?;
    let status = pair.status(standby).context("standby status")?;
    assert_eq!(status["store"]["branches_unpublished"], 1);
    assert!(
        status["replication"].get("split_brain").is_none(),
        "{status}"
    );
    let log = messages(&pair.cli(standby, &["image", "log", "img"])?);
    let (winner_name, loser_name) = if active == first {
        ("one-by-first", "one-by-other")
    } else {
        ("one-by-other", "one-by-first")
    };
    assert!(contains(&log, pair.dir.path(), winner_name), "{log:?}");
    assert!(!contains(&log, pair.dir.path(), loser_name), "{log:?}");

    // Replication carries on after the resolution.
    pair.import(active, "after-resolution")?;
    pair.wait_identical()?;
    let metrics = pair.metrics(active)?;
    for line in [
        "ironroot_replication_split_brain 0\n",
        "ironroot_replication_link{state=\"in-sync\"} 1\n",
        "ironroot_replication_lag_entries 0\n",
        "ironroot_replication_split_brains_total 1\n",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }

    let after = pair.status(active).context("active status")?;
    assert_eq!(after["replication"]["link"], "in-sync", "{after}");
    assert_eq!(after["replication"]["lag_entries"], 0, "{after}");
    eprintln!(
        "ironroot status on the active node after the resolution:\n{}",
        serde_json::to_string_pretty(&after["replication"])?
    );

    // Once the loser is active it publishes the kept generation: both
    // replicas then hold it under a branch ref.
    pair.cli(active, &["switchover"])?;
    pair.wait_role(standby, "active")?;
    for i in [active, standby] {
        let status = wait_for("the branch on both nodes", Duration::from_secs(30), || {
            let status = pair.status(i)?;
            let has = status["branches"].as_array().is_some_and(|b| {
                b.iter().any(|b| {
                    b["branch"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("branch/img/"))
                })
            });
            has.then_some(status)
        })?;
        assert_eq!(status["store"]["branches_unpublished"], 0);
    }
    let log = messages(&pair.cli(active, &["image", "log", "img"])?);
    assert!(
        log.iter().any(|m| m.starts_with("kept from split brain")
            && m.ends_with(&format!(
                "import from {}",
                pair.dir.path().join(loser_name).display()
            ))),
        "{log:?}"
    );
    pair.wait_identical()?;
    Ok(())
}

#[test]
fn the_active_node_keeps_its_changes_with_keep_local() -> Result<()> {
    if !require(is_root(), "needs root (network namespaces)")? {
        return Ok(());
    }
    let pair = Pair::start()?;
    let result = keep_local(&pair);
    if result.is_err() {
        eprintln!("{}", pair.logs());
    }
    result
}

fn keep_local(pair: &Pair) -> Result<()> {
    let Split {
        first,
        active,
        standby,
    } = split(pair, "two")?;
    let resolved = pair.cli(active, &["split-brain", "resolve", "--keep-local"])?;
    assert!(
        resolved["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("resolved: this node's changes were kept")),
        "{resolved}"
    );
    pair.wait_identical()?;
    let status = pair.status(standby).context("standby status")?;
    assert_eq!(status["store"]["branches_unpublished"], 1, "{status}");
    assert_eq!(
        status["replication"]["last_discard"]["branches_kept"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "{status}"
    );
    let log = messages(&pair.cli(standby, &["image", "log", "img"])?);
    let kept = if active == first {
        "two-by-first"
    } else {
        "two-by-other"
    };
    let lost = if active == first {
        "two-by-other"
    } else {
        "two-by-first"
    };
    assert!(contains(&log, pair.dir.path(), kept), "{log:?}");
    assert!(!contains(&log, pair.dir.path(), lost), "{log:?}");
    // Nothing left to resolve: a second resolve is refused clearly.
    let (again, value) = pair.run_cli(active, &["split-brain", "resolve", "--keep-local"])?;
    assert!(!again.status.success());
    assert!(
        value["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("no split brain to resolve")),
        "{value}"
    );
    Ok(())
}
