//! `ironroot image shell` against a real node: one `ironrootd` active alone
//! (`unsafe_unfenced`, its peer never started) in a network namespace, an
//! image made of busybox and the libraries it links, and shells run with
//! `--command`: a change becomes a new generation, a read-only session
//! commits nothing, a failing command is discarded unless
//! `--commit-on-failure`.

// Real processes: this test measures real time.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ironroot_tests::{is_root, require, wait_for, workspace_bin, Daemon, Segment};

const KEY: &str = "6b3c0b7e1f2a4d5c6b7a8998a7b6c5d4e3f201f2e3d4c5b6a79881726354a5b6";

/// busybox, `sh` linked to it, the shared libraries it needs, `/etc/motd`.
fn busybox_tree(root: &Path) -> Result<()> {
    let busybox = Path::new("/usr/bin/busybox");
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(root.join("etc"))?;
    std::fs::copy(busybox, root.join("bin/busybox"))?;
    for applet in ["sh", "cat", "echo", "rm"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    let ldd = std::process::Command::new("ldd").arg(busybox).output()?;
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line
            .split_whitespace()
            .find(|word| word.starts_with('/'))
            .map(PathBuf::from);
        let Some(path) = path else { continue };
        let inside = root.join(path.strip_prefix("/")?);
        std::fs::create_dir_all(inside.parent().context("library dir")?)?;
        std::fs::copy(&path, &inside).with_context(|| path.display().to_string())?;
    }
    std::fs::write(root.join("etc/motd"), "before\n")?;
    Ok(())
}

struct Node {
    _segment: Segment,
    daemon: Daemon,
    dir: tempfile::TempDir,
    ironroot: PathBuf,
}

impl Node {
    fn start() -> Result<Node> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("handle.key"), "35".repeat(32))?;
        let mut segment = Segment::new("irsh")?;
        let host = segment.add_host("a", Some("10.79.0.1/24"), None)?;
        let config = ironrootd::config::TwoNodeLayout {
            cluster_id: 9,
            key_hex: KEY.to_owned(),
            nodes: [
                ("a".into(), [10, 79, 0, 1].into()),
                ("b".into(), [10, 79, 0, 2].into()),
            ],
            witness: None,
            vip: "10.79.0.10".parse()?,
            prefix_len: 24,
            interface: "eth0".into(),
            dead_ms: 1500,
            store_dir: dir.path().join("store"),
            replication_port: 7792,
            handle_key_file: dir.path().join("handle.key"),
            admin_socket: dir.path().join("admin.sock"),
            metrics_listen: "0.0.0.0:9452".into(),
            extra: String::new(),
        }
        .render();
        let config_path = dir.path().join("ironroot.toml");
        std::fs::write(&config_path, config)?;
        let daemon = Daemon::spawn(
            segment.host(host),
            "a",
            &workspace_bin("ironrootd")?,
            &[
                "--config",
                &config_path.display().to_string(),
                "--node",
                "a",
            ],
            dir.path().join("a.log"),
        )?;
        let node = Node {
            _segment: segment,
            daemon,
            dir,
            ironroot: workspace_bin("ironroot")?,
        };
        let active = wait_for("the node active", Duration::from_secs(30), || {
            let status = node.json(&["status"]).ok()?;
            (status["data"]["role"] == "active").then_some(())
        });
        if let Err(error) = active {
            bail!("{error}\n{}", node.daemon.log_text());
        }
        Ok(node)
    }

    fn ironroot(&self, args: &[&str]) -> Result<Output> {
        let socket = self.dir.path().join("admin.sock").display().to_string();
        let mut all = vec!["--socket", socket.as_str(), "--timeout-secs", "60"];
        all.extend_from_slice(args);
        Ok(std::process::Command::new(&self.ironroot)
            .args(&all)
            .output()?)
    }

    fn json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = self.ironroot(&all)?;
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    /// Generations of `img`, oldest first: (id, message).
    fn log(&self) -> Result<Vec<(u64, String)>> {
        let log = self.json(&["image", "log", "img"])?;
        Ok(log["data"]
            .as_array()
            .context("a list")?
            .iter()
            .map(|g| {
                (
                    g["generation"].as_u64().unwrap_or(0),
                    g["message"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect())
    }

    fn shell(&self, extra: &[&str]) -> Result<Output> {
        let mut args = vec!["image", "shell", "img"];
        args.extend_from_slice(extra);
        self.ironroot(&args)
    }

    fn work_entries(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("store/work")).map_or(0, |d| d.count())
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn image_shell_commits_changes_and_nothing_else() -> Result<()> {
    if !require(is_root(), "needs root (chroot, network namespaces)")? {
        return Ok(());
    }
    let node = Node::start()?;
    let result = scenario(&node);
    if result.is_err() {
        eprintln!("{}", node.daemon.log_text());
    }
    result
}

fn scenario(node: &Node) -> Result<()> {
    let tree = node.dir.path().join("tree");
    busybox_tree(&tree)?;
    let import = node.ironroot(&[
        "image",
        "import",
        "img",
        "--from",
        &tree.display().to_string(),
    ])?;
    if !import.status.success() {
        bail!("import: {}", text(&import.stderr));
    }
    let first = node.log()?;
    assert_eq!(first.len(), 1);

    // A change in the chroot becomes a new generation with its message.
    let changed = node.shell(&[
        "--command",
        "echo after > /etc/motd && rm /bin/rm",
        "--message",
        "motd says after",
    ])?;
    assert!(changed.status.success(), "{}", text(&changed.stderr));
    let log = node.log()?;
    assert_eq!(log.len(), 2, "{log:?}");
    let (generation, message) = &log[1];
    assert_eq!(message, "motd says after");
    assert!(
        text(&changed.stdout).contains(&format!("committed img generation {generation}")),
        "{}",
        text(&changed.stdout)
    );
    let diff = node.json(&[
        "image",
        "diff",
        "img",
        &first[0].0.to_string(),
        &generation.to_string(),
    ])?;
    let changes = diff["data"]["changes"].to_string();
    assert!(changes.contains("etc/motd"), "{changes}");
    assert!(changes.contains("bin/rm"), "{changes}");
    assert!(
        !changes.contains("bin/busybox"),
        "only what changed: {changes}"
    );
    assert_eq!(node.work_entries(), 0, "the working copy is removed");

    // A session that only reads sees the latest generation and commits
    // nothing.
    let read = node.shell(&["--command", "cat /etc/motd"])?;
    assert!(read.status.success(), "{}", text(&read.stderr));
    assert_eq!(text(&read.stdout).lines().next(), Some("after"));
    assert!(text(&read.stdout).contains("unchanged"));
    assert_eq!(node.log()?.len(), 2);

    // A failing command is discarded, with its exit code...
    let failed = node.shell(&["--command", "echo x > /etc/new; exit 3"])?;
    assert_eq!(failed.status.code(), Some(3), "{}", text(&failed.stderr));
    assert!(text(&failed.stdout).contains("discarded"));
    assert_eq!(node.log()?.len(), 2);
    assert_eq!(node.work_entries(), 0);

    // ... unless told to commit anyway, here into a working directory of
    // the operator's choosing.
    let workdir = node.dir.path().join("mine");
    let kept = node.shell(&[
        "--command",
        "echo x > /etc/new; exit 3",
        "--commit-on-failure",
        "--workdir",
        &workdir.display().to_string(),
    ])?;
    assert_eq!(kept.status.code(), Some(3));
    assert!(text(&kept.stdout).contains("committed img generation"));
    assert_eq!(node.log()?.len(), 3);
    assert!(!workdir.exists(), "removed once committed");

    // Bad input: an unknown image is one clear error line.
    let unknown = node.ironroot(&["image", "shell", "nope", "--command", "true"])?;
    assert!(!unknown.status.success());
    assert_eq!(
        text(&unknown.stderr).trim(),
        "ironroot: no image named nope; import it first"
    );
    Ok(())
}

/// SIGHUP on a running node: the log filter is applied live, a change that
/// needs a restart is named, an invalid file changes nothing, and the node
/// keeps serving throughout.
#[test]
fn sighup_reloads_the_log_level_and_names_what_needs_a_restart() -> Result<()> {
    if !require(is_root(), "needs root (network namespaces)")? {
        return Ok(());
    }
    let node = Node::start()?;
    let result = sighup(&node);
    if result.is_err() {
        eprintln!("{}", node.daemon.log_text());
    }
    result
}

fn sighup(node: &Node) -> Result<()> {
    let path = node.dir.path().join("ironroot.toml");
    let original = std::fs::read_to_string(&path)?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(node.daemon.pid().context("pid")?)?);
    let hup = || nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP);
    let wait_log = |what: &str, count: usize| {
        wait_for(what, Duration::from_secs(10), || {
            (node.daemon.log_text().matches(what).count() >= count).then_some(())
        })
    };
    assert!(!node.daemon.log_text().contains("DEBUG"), "info by default");

    std::fs::write(
        &path,
        format!("{original}[log]\nlevel = \"debug\"\n").replace("dead_ms = 1500", "dead_ms = 1600"),
    )?;
    hup()?;
    wait_log("SIGHUP: reloaded", 1)?;
    let log = node.daemon.log_text();
    assert!(log.contains("\"log.level\""), "{log}");
    assert!(log.contains("needs a restart"), "{log}");
    assert!(log.contains("\"cluster.timing\""), "{log}");
    // The new filter is live: debug lines appear without a restart.
    wait_log("SIGHUP: debug logging is on", 1)?;

    std::fs::write(&path, format!("{original}[log]\nlevel = \"=[\"\n"))?;
    hup()?;
    wait_log("configuration not reloaded", 1)?;

    let status = node.json(&["status"])?;
    assert_eq!(status["data"]["role"], "active", "still serving: {status}");
    Ok(())
}
