//! Harness for end-to-end tests across crates: network namespaces joined by
//! a bridge, processes started inside them and killed by PID, and the
//! workspace's binaries. Everything a test creates is removed when its
//! guard drops, also when the test fails.

// This harness drives real processes over real links: it measures real time.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Whether tests that need root or a real peer must fail instead of skip.
pub fn peers_required() -> bool {
    std::env::var("IRONROOT_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// `Ok(false)` (skip, with a line on stderr) when `ready` is false and peers
/// are optional; an error when they are required.
pub fn require(ready: bool, what: &str) -> Result<bool> {
    match (ready, peers_required()) {
        (true, _) => Ok(true),
        (false, true) => bail!("{what} (IRONROOT_REQUIRE_PEERS=1)"),
        (false, false) => {
            eprintln!("skipped: {what}");
            Ok(false)
        }
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A workspace binary: next to the test executable's `deps/` directory.
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target dir")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the workspace binaries first (cargo build --workspace --bins)",
            path.display()
        );
    }
    Ok(path)
}

/// Run a command to completion, failing on a non-zero exit.
pub fn run(program: &str, args: &[&str]) -> Result<Output> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("{program} {args:?}"))?;
    if !output.status.success() {
        bail!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

/// One network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Result<Netns> {
        run("ip", &["netns", "add", name])?;
        let ns = Netns {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NS ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// A command inside the namespace, as `ip netns exec` runs it.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Run to completion inside the namespace with a time limit.
    pub fn output(&self, program: &str, args: &[&str], limit: Duration) -> Result<Output> {
        let mut command = self.command(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = command
            .spawn()
            .with_context(|| format!("{program} in {}", self.name))?;
        wait_output(child, limit).with_context(|| format!("{program} {args:?} in {}", self.name))
    }

    /// Kill every process in the namespace (host death of a node).
    pub fn kill_all(&self) -> Result<()> {
        let pids = run("ip", &["netns", "pids", &self.name])?;
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.kill_all();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Wait for a child with a time limit, draining its output as it runs
/// (a full pipe would block it); kill it (by PID) when the limit passes.
pub fn wait_output(child: Child, limit: Duration) -> Result<Output> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => Ok(output?),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let output = rx
                .recv_timeout(Duration::from_secs(5))
                .ok()
                .and_then(|o| o.ok());
            let stderr = output
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default();
            bail!("timed out after {limit:?}; stderr: {}", stderr.trim());
        }
    }
}

/// A segment: a bridge inside its own namespace, and hosts (namespaces)
/// attached to it by veth pairs. Names carry the test's PID.
pub struct Segment {
    pub bridge: Netns,
    hosts: Vec<Netns>,
    tag: String,
}

impl Segment {
    pub fn new(tag: &str) -> Result<Segment> {
        static SEGMENTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let serial = SEGMENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{tag}{}x{serial}", std::process::id() % 100_000);
        let bridge = Netns::new(&format!("{tag}-br"))?;
        bridge.ip(&["link", "add", "br0", "type", "bridge"])?;
        bridge.ip(&["link", "set", "br0", "up"])?;
        Ok(Segment {
            bridge,
            hosts: Vec::new(),
            tag,
        })
    }

    /// Add host `name` with `cidr` (e.g. `10.77.0.1/24`) on interface
    /// `eth0`; returns the index to pass to [`Segment::host`].
    pub fn add_host(&mut self, name: &str, cidr: Option<&str>, mac: Option<&str>) -> Result<usize> {
        let ns = Netns::new(&format!("{}-{name}", self.tag))?;
        let outer = format!("{}{}", &name[..name.len().min(6)], self.hosts.len());
        run(
            "ip",
            &[
                "link",
                "add",
                &outer,
                "netns",
                &self.bridge.name,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns.name,
            ],
        )?;
        self.bridge.ip(&["link", "set", &outer, "master", "br0"])?;
        self.bridge.ip(&["link", "set", &outer, "up"])?;
        if let Some(mac) = mac {
            ns.ip(&["link", "set", "eth0", "address", mac])?;
        }
        if let Some(cidr) = cidr {
            ns.ip(&["addr", "add", cidr, "dev", "eth0"])?;
        }
        ns.ip(&["link", "set", "eth0", "up"])?;
        self.hosts.push(ns);
        Ok(self.hosts.len() - 1)
    }

    pub fn host(&self, index: usize) -> &Netns {
        &self.hosts[index]
    }

    fn port(&self, index: usize) -> String {
        let name = &self.hosts[index].name;
        let short = name.rsplit('-').next().unwrap_or(name);
        format!("{}{}", &short[..short.len().min(6)], index)
    }

    /// Cut a host's link (its bridge port goes down).
    pub fn cut(&self, index: usize) -> Result<()> {
        self.bridge
            .ip(&["link", "set", &self.port(index), "down"])?;
        Ok(())
    }

    /// Reconnect a host cut by [`Segment::cut`].
    pub fn repair(&self, index: usize) -> Result<()> {
        self.bridge.ip(&["link", "set", &self.port(index), "up"])?;
        Ok(())
    }
}

/// A long-running process inside a namespace, killed by PID on drop.
pub struct Daemon {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(
        ns: &Netns,
        name: &str,
        program: &Path,
        args: &[&str],
        log: PathBuf,
    ) -> Result<Daemon> {
        let out = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
        let err = out.try_clone()?;
        let child = ns
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Daemon {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL the process (kill -9 of the daemon alone).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait up to `limit`.
    pub fn terminate(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("{} is not running", self.name)
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                bail!("{} did not stop within {limit:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Poll `check` every 20 ms until it returns `Some` or `limit` passes.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
