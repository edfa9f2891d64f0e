//! The ironroot server side: two `ironrootd` nodes and a witness, each in
//! its own namespace on the lab bridge, the VIP on the same segment. The
//! client root, the kernel and the clients go in through the `ironroot`
//! CLI on the active node, as an operator would put them in; nothing is
//! written into a store directly.
//!
//! Failures are made from outside, as they happen on real hosts: a host
//! death kills every process in the node's namespace (by PID, from `ip
//! netns pids`) and cuts its bridge port; a daemon crash is `kill -9` of
//! `ironrootd` alone.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ironroot_net::Clock;

use crate::error::LabError;
use crate::host::COMMAND_SECS_MAX;
use crate::host::{check_interrupted, kill_pid, run_bounded, run_capture, ChildGuard};
use crate::net::{LabNet, PREFIX_LEN};

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
pub const NODE_NAMES: [&str; 2] = ["a", "b"];
/// Node a lives in the lab's server namespace (10.99.0.1).
pub const NODE_ADDRS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 2)];
pub const WITNESS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);
/// A fixed lab key (the lab's segment is private to its namespaces).
const CLUSTER_KEY_HEX: &str = "8d3c0b7e1f2a4d5c6b7a8998a7b6c5d4e3f201f2e3d4c5b6a79881726354a5b6";
/// Longest wait for a node to become active (start-up or failover).
pub const ACTIVE_SECS_MAX: u64 = 60;
/// Longest wait for one admin command; `boot import-kernel` unpacks a
/// ~70 MB kernel package and builds an initramfs.
pub const ADMIN_SECS_MAX: u64 = 600;
/// Longest wait for a restarted node to rejoin and resync.
pub const RESYNC_SECS_MAX: u64 = 120;
const POLL_MS: u64 = 100;

/// Where the workspace binaries are: `IRONROOT_BIN_DIR`, else next to this
/// executable or one directory up (a test executable lives in `deps/`).
pub fn find_binary(name: &str) -> Result<PathBuf, String> {
    let mut searched = Vec::new();
    if let Some(dir) = std::env::var_os("IRONROOT_BIN_DIR") {
        searched.push(PathBuf::from(dir));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            searched.push(dir.to_path_buf());
            if let Some(up) = dir.parent() {
                searched.push(up.to_path_buf());
            }
        }
    }
    searched
        .iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            let dirs: Vec<String> = searched.iter().map(|d| d.display().to_string()).collect();
            format!(
                "{name} not found in {} (build it: cargo build -p ironrootd -p ironroot, \
                 or set IRONROOT_BIN_DIR)",
                dirs.join(", ")
            )
        })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    pub ironrootd: PathBuf,
    pub ironroot: PathBuf,
}

impl Binaries {
    pub fn find() -> Result<Binaries, String> {
        Ok(Binaries {
            ironrootd: find_binary("ironrootd")?,
            ironroot: find_binary("ironroot")?,
        })
    }
}

/// One process's configuration: the same cluster for everyone, its own
/// store directory and admin socket (all processes share one file system).
pub fn config_text(dir: &Path, handle_key: &Path) -> String {
    let [a, b] = NODE_ADDRS;
    ironrootd::config::TwoNodeLayout {
        cluster_id: 99,
        key_hex: CLUSTER_KEY_HEX.to_owned(),
        nodes: [
            (NODE_NAMES[0].to_owned(), a.into()),
            (NODE_NAMES[1].to_owned(), b.into()),
        ],
        witness: Some(WITNESS_ADDR.into()),
        vip: VIP,
        prefix_len: PREFIX_LEN,
        interface: "lab0".into(),
        dead_ms: 1500,
        store_dir: dir.join("store"),
        replication_port: 7790,
        handle_key_file: handle_key.to_owned(),
        admin_socket: dir.join("admin.sock"),
        metrics_listen: "127.0.0.1:9450".into(),
        extra: format!(
            "[dhcp.boot]\nipxe_script = \"tftp://{{vip}}/ipxe/clients/{{mac}}.ipxe\"\n\
             [boot]\nkernel_extra = [\"{}\"]\n",
            crate::bootsrc::TCG_KERNEL_ARG
        ),
    }
    .render()
}

pub struct IronrootNode {
    pub name: &'static str,
    pub netns: String,
    /// Its switch-side bridge port (cut on host death).
    pub port: String,
    pub dir: PathBuf,
    daemon: Option<ChildGuard>,
    /// The log of its last daemon that was killed (kept for reports).
    last_log: String,
}

pub struct IronrootServer {
    pub bins: Binaries,
    pub nodes: Vec<IronrootNode>,
    witness: ChildGuard,
    /// The tree imported as the clients' image (what they must see).
    pub imported_root: PathBuf,
    /// Set-up steps and their durations.
    pub setup_ms: Vec<(&'static str, u64)>,
}

/// What the ironroot side is started with.
pub struct IronrootSpec<'a> {
    pub run_dir: &'a Path,
    pub image: &'a str,
    pub image_root: &'a Path,
    pub kernel_deb: &'a Path,
    /// (name, MAC, address) of each client.
    pub clients: Vec<(String, String, Ipv4Addr)>,
}

fn spawn_in(
    netns: &str,
    name: &str,
    program: &Path,
    args: &[&str],
) -> Result<ChildGuard, LabError> {
    let child = Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            program: name.to_string(),
            source,
        })?;
    Ok(ChildGuard::new(name.to_string(), child))
}

impl IronrootServer {
    pub fn start<C: Clock>(
        net: &mut LabNet,
        spec: &IronrootSpec,
        clock: &C,
    ) -> Result<IronrootServer, LabError> {
        let bins = Binaries::find().map_err(|reason| LabError::ServerUnavailable {
            server: "ironroot",
            reason,
        })?;
        let dir = spec.run_dir.join("ironroot");
        let key = dir.join("handle.key");
        std::fs::create_dir_all(&dir).map_err(LabError::io(&dir))?;
        std::fs::write(&key, "42".repeat(32)).map_err(LabError::io(&key))?;
        let b_ns = net.add_host('b', NODE_ADDRS[1])?;
        let w_ns = net.add_host('w', WITNESS_ADDR)?;
        let places = [
            (net.names.server_ns.clone(), net.names.server_port.clone()),
            (b_ns, net.names.host_port('b')),
        ];
        let mut nodes = Vec::new();
        for (name, (netns, port)) in NODE_NAMES.into_iter().zip(places) {
            let node_dir = dir.join(name);
            std::fs::create_dir_all(&node_dir).map_err(LabError::io(&node_dir))?;
            let config = node_dir.join("ironroot.toml");
            std::fs::write(&config, config_text(&node_dir, &key)).map_err(LabError::io(&config))?;
            nodes.push(IronrootNode {
                name,
                netns,
                port,
                dir: node_dir,
                daemon: None,
                last_log: String::new(),
            });
        }
        let w_dir = dir.join("witness");
        std::fs::create_dir_all(&w_dir).map_err(LabError::io(&w_dir))?;
        let w_config = w_dir.join("ironroot.toml");
        std::fs::write(&w_config, config_text(&w_dir, &key)).map_err(LabError::io(&w_config))?;
        let w_config = w_config.display().to_string();
        let witness = spawn_in(
            &w_ns,
            "ironrootd witness",
            &bins.ironrootd,
            &["--config", &w_config, "--role", "witness"],
        )?;
        let mut server = IronrootServer {
            bins,
            nodes,
            witness,
            imported_root: spec.image_root.to_path_buf(),
            setup_ms: Vec::new(),
        };
        let started = clock.now();
        for index in 0..NODE_NAMES.len() {
            server.start_node(index)?;
        }
        server.wait_active(&[0, 1], ACTIVE_SECS_MAX, clock)?;
        server.lap(clock, &started, "cluster-active");
        server.populate(spec, clock)?;
        Ok(server)
    }

    fn lap<C: Clock>(&mut self, clock: &C, since: &ironroot_net::Instant, step: &'static str) {
        let ms = clock.now().saturating_duration_since(*since).as_millis() as u64;
        self.setup_ms.push((step, ms));
    }

    /// The image, the kernel and the clients, through the CLI.
    fn populate<C: Clock>(&mut self, spec: &IronrootSpec, clock: &C) -> Result<(), LabError> {
        let root = spec.image_root.display().to_string();
        let t = clock.now();
        self.write(&["image", "import", spec.image, "--from", &root])?;
        self.lap(clock, &t, "image-import");
        let deb = spec.kernel_deb.display().to_string();
        let t = clock.now();
        self.write(&["boot", "import-kernel", spec.image, "--deb", &deb])?;
        self.lap(clock, &t, "boot-import-kernel");
        let t = clock.now();
        for (name, mac, addr) in &spec.clients {
            let addr = addr.to_string();
            self.write(&[
                "client", "add", name, "--mac", mac, "--ip", &addr, "--image", spec.image,
            ])?;
        }
        self.lap(clock, &t, "clients-add");
        Ok(())
    }

    pub fn start_node(&mut self, index: usize) -> Result<(), LabError> {
        let node = &self.nodes[index];
        let config = node.dir.join("ironroot.toml").display().to_string();
        let daemon = spawn_in(
            &node.netns,
            &format!("ironrootd {}", node.name),
            &self.bins.ironrootd,
            &["--config", &config, "--node", node.name],
        )?;
        self.nodes[index].daemon = Some(daemon);
        Ok(())
    }

    /// `ironroot --json ARGS` against node `index`: the daemon's answer.
    pub fn cli(&self, index: usize, args: &[&str]) -> Result<serde_json::Value, LabError> {
        let socket = self.nodes[index].dir.join("admin.sock");
        let mut command = Command::new(&self.bins.ironroot);
        command
            .arg("--socket")
            .arg(&socket)
            .arg("--json")
            .args(args);
        let (_, stdout, stderr) = run_capture(&mut command, "ADMIN_SECS_MAX", ADMIN_SECS_MAX)?;
        serde_json::from_str(&stdout).map_err(|e| LabError::Admin {
            command: args.join(" "),
            detail: format!(
                "node {}: no JSON answer ({e}): {stderr}",
                self.nodes[index].name
            ),
        })
    }

    /// A write command on the active node; an error unless it answers ok.
    pub fn write(&self, args: &[&str]) -> Result<serde_json::Value, LabError> {
        let active = self.active().ok_or_else(|| LabError::Admin {
            command: args.join(" "),
            detail: "no node is active".into(),
        })?;
        let answer = self.cli(active, args)?;
        if answer["ok"] == true {
            Ok(answer)
        } else {
            Err(LabError::Admin {
                command: args.join(" "),
                detail: format!("node {}: {answer}", self.nodes[active].name),
            })
        }
    }

    pub fn role(&self, index: usize) -> Option<String> {
        // A node we killed has no daemon to ask.
        self.nodes[index].daemon.as_ref()?;
        let status = self.cli(index, &["status"]).ok()?;
        status["data"]["role"].as_str().map(str::to_owned)
    }

    pub fn active(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|i| self.role(*i).as_deref() == Some("active"))
    }

    pub fn content_hash(&self, index: usize) -> Option<String> {
        let status = self.cli(index, &["status"]).ok()?;
        status["data"]["store"]["content_hash"]
            .as_str()
            .map(str::to_owned)
    }

    /// Polls until one of `candidates` is active.
    pub fn wait_active<C: Clock>(
        &mut self,
        candidates: &[usize],
        secs: u64,
        clock: &C,
    ) -> Result<usize, LabError> {
        let deadline = clock.now() + Duration::from_secs(secs);
        loop {
            self.check_alive()?;
            check_interrupted()?;
            if let Some(found) = candidates
                .iter()
                .copied()
                .find(|i| self.role(*i).as_deref() == Some("active"))
            {
                return Ok(found);
            }
            if clock.now() >= deadline {
                return Err(LabError::ServerTimeout {
                    name: "ACTIVE_SECS_MAX",
                    secs,
                    what: format!("one of nodes {candidates:?} to become active"),
                });
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
    }

    /// Polls until node `index` is standby with the active node's content.
    pub fn wait_resynced<C: Clock>(&mut self, index: usize, clock: &C) -> Result<(), LabError> {
        let deadline = clock.now() + Duration::from_secs(RESYNC_SECS_MAX);
        loop {
            self.check_alive()?;
            check_interrupted()?;
            let other = 1 - index;
            let same = self.content_hash(index).is_some()
                && self.content_hash(index) == self.content_hash(other);
            if same && self.role(index).as_deref() == Some("standby") {
                return Ok(());
            }
            if clock.now() >= deadline {
                return Err(LabError::ServerTimeout {
                    name: "RESYNC_SECS_MAX",
                    secs: RESYNC_SECS_MAX,
                    what: format!(
                        "node {} to rejoin as standby and resync",
                        self.nodes[index].name
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
    }

    /// Host death: every process in the node's namespace killed by PID,
    /// then its bridge port taken down.
    pub fn host_death(&mut self, index: usize, net: &LabNet) -> Result<(), LabError> {
        let netns = self.nodes[index].netns.clone();
        let pids = run_bounded(
            Command::new("ip").args(["netns", "pids", &netns]),
            "ip_command",
            COMMAND_SECS_MAX,
        )?;
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            kill_pid(pid);
        }
        net.set_port(&self.nodes[index].port, false)?;
        if let Some(mut daemon) = self.nodes[index].daemon.take() {
            daemon.stop(0);
            self.nodes[index].last_log = daemon.stderr_text();
        }
        Ok(())
    }

    /// `kill -9` of the node's ironrootd alone: its namespace, address and
    /// link stay; the VIP leaves when its address lifetime runs out.
    pub fn kill_daemon(&mut self, index: usize) {
        if let Some(mut daemon) = self.nodes[index].daemon.take() {
            kill_pid(daemon.pid());
            daemon.stop(0);
            self.nodes[index].last_log = daemon.stderr_text();
        }
    }

    /// Brings a dead node back: link up, daemon started on its old store.
    pub fn revive(&mut self, index: usize, net: &LabNet) -> Result<(), LabError> {
        net.set_port(&self.nodes[index].port, true)?;
        self.start_node(index)
    }

    /// An error naming the daemon that died unexpectedly, with its stderr.
    pub fn check_alive(&mut self) -> Result<(), LabError> {
        let mut guards: Vec<(&str, &mut ChildGuard)> =
            vec![("ironrootd witness", &mut self.witness)];
        for node in &mut self.nodes {
            if let Some(daemon) = node.daemon.as_mut() {
                guards.push((node.name, daemon));
            }
        }
        for (name, guard) in guards {
            if let Some(status) = guard.try_exited() {
                return Err(LabError::ServerDied {
                    server: if name == "ironrootd witness" {
                        "ironrootd witness"
                    } else {
                        "ironrootd node"
                    },
                    status: format!("{status} (node {name})"),
                    stderr: guard.stderr_text(),
                });
            }
        }
        Ok(())
    }

    pub fn logs(&self) -> String {
        let mut text = format!("--- witness ---\n{}\n", tail(&self.witness.stderr_text()));
        for node in &self.nodes {
            if !node.last_log.is_empty() {
                text += &format!(
                    "--- node {} (killed) ---\n{}\n",
                    node.name,
                    tail(&node.last_log)
                );
            }
            if let Some(daemon) = &node.daemon {
                text += &format!(
                    "--- node {} ---\n{}\n",
                    node.name,
                    tail(&daemon.stderr_text())
                );
            }
        }
        text
    }
}

/// The last lines of a daemon's log (errors quote it).
fn tail(text: &str) -> String {
    const LINES: usize = 40;
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LINES)..].join("\n")
}

impl Drop for IronrootServer {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut daemon) = node.daemon.take() {
                daemon.stop(2_000);
            }
        }
        self.witness.stop(1_000);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_vip_the_lab_script_path_and_the_tcg_argument() {
        let text = config_text(Path::new("/run/lab/a"), Path::new("/run/lab/handle.key"));
        for wanted in [
            "addr = \"10.99.0.10\"",
            "vip = \"10.99.0.10\"",
            "interface = \"lab0\"",
            "links = [\"10.99.0.2:694\"]",
            "addr = \"10.99.0.3:695\"",
            "ipxe_script = \"tftp://{vip}/ipxe/clients/{mac}.ipxe\"",
            "kernel_extra = [\"no-timer-check\"]",
            "dir = \"/run/lab/a/store\"",
            "socket = \"/run/lab/a/admin.sock\"",
            "lifetime_ms = 1000",
        ] {
            assert!(text.contains(wanted), "missing {wanted}:\n{text}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("handle.key");
        std::fs::write(&key, "42".repeat(32)).expect("key");
        let text = config_text(dir.path(), &key);
        let file = ironrootd::config::IronrootFile::parse(&text, "lab.toml").expect("parses");
        for name in NODE_NAMES {
            let node = file.node(name, "lab.toml").expect("validates for the node");
            assert_eq!(node.boot_extra, vec!["no-timer-check".to_string()]);
        }
        file.witness("lab.toml").expect("validates for the witness");
    }
}
