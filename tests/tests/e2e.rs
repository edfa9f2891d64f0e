//! End to end in network namespaces: two `ironrootd` nodes and a witness on
//! one segment, and a client namespace that gets its address by DHCP
//! (busybox udhcpc), fetches a boot file by TFTP (atftp) and reads its root
//! by NFS (libnfs) through the VIP, and two clients that get pool
//! addresses. Then the active node dies: the survivor keeps the pool lease.

// Real processes over real links: this test measures real time.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ironroot_tests::{
    have, is_root, require, wait_for, wait_output, workspace_bin, Daemon, Netns, Segment,
};

const VIP: &str = "10.77.0.10";
const CLIENT_MAC: &str = "52:54:00:00:77:42";
const CLIENT_IP: &str = "10.77.0.50";
/// Two clients without a reservation, served from the dynamic pool.
const POOL_MACS: [&str; 2] = ["52:54:00:00:77:61", "52:54:00:00:77:62"];
const POOL_START: &str = "10.77.0.100";
const KEY: &str = "8d3c0b7e1f2a4d5c6b7a8998a7b6c5d4e3f201f2e3d4c5b6a79881726354a5b6";

/// The two-node + witness cluster of this test; per-node paths under `node_dir`.
fn config(dir: &Path, node_dir: &Path) -> String {
    ironrootd::config::TwoNodeLayout {
        cluster_id: 7,
        key_hex: KEY.to_owned(),
        nodes: [
            ("a".into(), [10, 77, 0, 1].into()),
            ("b".into(), [10, 77, 0, 2].into()),
        ],
        witness: Some([10, 77, 0, 3].into()),
        vip: VIP.parse().expect("VIP"),
        prefix_len: 24,
        interface: "eth0".into(),
        dead_ms: 1500,
        store_dir: node_dir.join("store"),
        replication_port: 7790,
        handle_key_file: dir.join("handle.key"),
        admin_socket: node_dir.join("admin.sock"),
        metrics_listen: "0.0.0.0:9450".into(),
        extra: format!("[dhcp.pool]\nstart = \"{POOL_START}\"\nend = \"10.77.0.103\"\n"),
    }
    .render()
}

struct Node {
    name: &'static str,
    host: usize,
    dir: PathBuf,
    daemon: Option<Daemon>,
}

impl Node {
    fn socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }
}

struct Cluster {
    segment: Segment,
    nodes: Vec<Node>,
    witness: Option<Daemon>,
    client: usize,
    pool_clients: [usize; 2],
    ironrootd: PathBuf,
    ironroot: PathBuf,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Result<Cluster> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("handle.key"), "42".repeat(32))?;
        let mut segment = Segment::new("ire2e")?;
        let a = segment.add_host("a", Some("10.77.0.1/24"), None)?;
        let b = segment.add_host("b", Some("10.77.0.2/24"), None)?;
        let w = segment.add_host("w", Some("10.77.0.3/24"), None)?;
        let client = segment.add_host("c", None, Some(CLIENT_MAC))?;
        let pool_clients = [
            segment.add_host("p1", None, Some(POOL_MACS[0]))?,
            segment.add_host("p2", None, Some(POOL_MACS[1]))?,
        ];
        let ironrootd = workspace_bin("ironrootd")?;
        let ironroot = workspace_bin("ironroot")?;
        let mut nodes = Vec::new();
        for (name, host) in [("a", a), ("b", b)] {
            let node_dir = dir.path().join(name);
            std::fs::create_dir_all(&node_dir)?;
            std::fs::write(
                node_dir.join("ironroot.toml"),
                config(dir.path(), &node_dir),
            )?;
            nodes.push(Node {
                name,
                host,
                dir: node_dir,
                daemon: None,
            });
        }
        let mut cluster = Cluster {
            segment,
            nodes,
            witness: None,
            client,
            pool_clients,
            ironrootd,
            ironroot,
            _dir: dir,
        };
        let witness_cfg = cluster.nodes[0].dir.join("ironroot.toml");
        let witness = Daemon::spawn(
            cluster.segment.host(w),
            "witness",
            &cluster.ironrootd,
            &[
                "--config",
                &witness_cfg.display().to_string(),
                "--role",
                "witness",
            ],
            cluster.nodes[0].dir.join("witness.log"),
        )?;
        cluster.witness = Some(witness);
        for i in 0..2 {
            cluster.start_node(i)?;
        }
        Ok(cluster)
    }

    fn start_node(&mut self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        let config = node.dir.join("ironroot.toml").display().to_string();
        let log = node.dir.join(format!("{}.log", node.name));
        let daemon = Daemon::spawn(
            self.segment.host(node.host),
            node.name,
            &self.ironrootd,
            &["--config", &config, "--node", node.name],
            log,
        )?;
        self.nodes[i].daemon = Some(daemon);
        Ok(())
    }

    /// `ironroot --json ARGS` against node `i`.
    fn cli(&self, i: usize, args: &[&str]) -> Result<serde_json::Value> {
        let socket = self.nodes[i].socket().display().to_string();
        let mut all = vec!["--socket", socket.as_str(), "--json"];
        all.extend_from_slice(args);
        let output = std::process::Command::new(&self.ironroot)
            .args(&all)
            .output()?;
        serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "ironroot {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }

    fn role(&self, i: usize) -> Option<String> {
        let status = self.cli(i, &["status"]).ok()?;
        status["data"]["role"].as_str().map(str::to_owned)
    }

    fn wait_active(&self, candidates: &[usize], limit: Duration) -> Result<usize> {
        wait_for("an active node", limit, || {
            candidates
                .iter()
                .copied()
                .find(|i| self.role(*i).as_deref() == Some("active"))
        })
    }

    fn client(&self) -> &Netns {
        self.segment.host(self.client)
    }

    fn nfs_cat(&self, path: &str) -> Result<Vec<u8>> {
        let url = format!("nfs://{VIP}/{path}?version=3");
        let output = self
            .client()
            .output("nfs-cat", &[&url], Duration::from_secs(20))?;
        if !output.status.success() {
            bail!(
                "nfs-cat {url}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(output.stdout)
    }

    /// busybox udhcpc in the client namespace; what its script printed.
    fn udhcpc(&self, script: &str) -> Result<String> {
        self.udhcpc_in(self.client, script)
    }

    /// busybox udhcpc in the namespace of host `host`.
    fn udhcpc_in(&self, host: usize, script: &str) -> Result<String> {
        let args = [
            "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", script,
        ];
        let output = self
            .segment
            .host(host)
            .output("busybox", &args, Duration::from_secs(30))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The address a pool client was given (udhcpc script output).
    fn pool_address(&self, which: usize, script: &str) -> Result<String> {
        let out = self.udhcpc_in(self.pool_clients[which], script)?;
        out.lines()
            .find_map(|line| line.strip_prefix("ip="))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
            .with_context(|| format!("pool client {which} got no address: {out}\n{}", self.logs()))
    }

    /// atftp fetches `file` from the VIP in the client namespace.
    fn tftp_get(&self, file: &str) -> Result<Vec<u8>> {
        let local = self._dir.path().join(format!("tftp-{file}"));
        let args = ["-g", "-r", file, "-l", &local.display().to_string(), VIP];
        let output = self
            .client()
            .output("atftp", &args, Duration::from_secs(20))?;
        if !output.status.success() {
            bail!(
                "atftp {file}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(std::fs::read(&local)?)
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

fn write_image(root: &Path) -> Result<()> {
    std::fs::create_dir_all(root.join("etc"))?;
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::write(root.join("etc/motd"), "read-only root\n")?;
    std::fs::copy("/bin/ls", root.join("bin/ls"))?;
    Ok(())
}

/// udhcpc prints what the server offered; the script also configures eth0.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    echo "ip=$ip serverid=$serverid siaddr=$siaddr boot_file=$boot_file"
    ;;
esac
exit 0
"#;

#[test]
fn two_nodes_and_a_witness_serve_a_client_through_the_vip() -> Result<()> {
    let ready = is_root()
        && ["udhcpc", "atftp", "nfs-cat"]
            .iter()
            .all(|p| have(p) || (*p == "udhcpc" && have("busybox")));
    if !require(ready, "needs root, busybox udhcpc, atftp and libnfs-utils")? {
        return Ok(());
    }
    let cluster = Cluster::start()?;
    let first = cluster
        .wait_active(&[0, 1], Duration::from_secs(20))
        .with_context(|| cluster.logs())?;

    let image = cluster._dir.path().join("image");
    write_image(&image)?;
    let imported = cluster.cli(
        first,
        &[
            "image",
            "import",
            "debian",
            "--from",
            &image.display().to_string(),
        ],
    )?;
    assert_eq!(imported["ok"], true, "{imported}");
    // The boot tree is the image named `boot`: replicated like any other.
    let boot = cluster._dir.path().join("boot");
    std::fs::create_dir_all(&boot)?;
    std::fs::write(boot.join("hello.txt"), "boot file\n")?;
    let imported = cluster.cli(
        first,
        &[
            "image",
            "import",
            "boot",
            "--from",
            &boot.display().to_string(),
        ],
    )?;
    assert_eq!(imported["ok"], true, "{imported}");
    let added = cluster.cli(
        first,
        &[
            "client", "add", "c1", "--mac", CLIENT_MAC, "--ip", CLIENT_IP, "--image", "debian",
        ],
    )?;
    assert_eq!(added["ok"], true, "{added}");
    let standby = 1 - first;
    let refused = cluster.cli(standby, &["client", "remove", "c1"])?;
    assert_eq!(refused["ok"], false);
    let refusal = refused["error"].as_str().unwrap_or_default();
    assert!(
        refusal.starts_with("this node is standby; the active node is"),
        "{refusal}"
    );

    // DHCP: the reservation, with the VIP as server identifier and next-server.
    let script = cluster._dir.path().join("udhcpc.sh");
    std::fs::write(&script, UDHCPC_SCRIPT)?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let script = script.display().to_string();
    let dhcp_out = cluster.udhcpc(&script)?;
    assert!(
        dhcp_out.contains(&format!("ip={CLIENT_IP} serverid={VIP} siaddr={VIP}")),
        "{dhcp_out}\n{}",
        cluster.logs()
    );

    // A pool lease: ACKed only once the standby's journal holds it.
    let pool_ip = cluster.pool_address(0, &script)?;
    assert_eq!(pool_ip, POOL_START);

    // TFTP from the VIP.
    assert_eq!(cluster.tftp_get("hello.txt")?, b"boot file\n");

    // NFS through the VIP: the root's files, byte for byte.
    assert_eq!(cluster.nfs_cat("etc/motd")?, b"read-only root\n");
    assert_eq!(cluster.nfs_cat("bin/ls")?, std::fs::read("/bin/ls")?);

    // Host death of the active node: every process of its namespace killed
    // and its link cut. The standby takes over with the replicated image.
    let mut cluster = cluster;
    let died = Instant::now();
    cluster.segment.host(cluster.nodes[first].host).kill_all()?;
    cluster.segment.cut(cluster.nodes[first].host)?;
    cluster.nodes[first].daemon = None;
    cluster
        .wait_active(&[standby], Duration::from_secs(20))
        .with_context(|| cluster.logs())?;
    let served = wait_for(
        "NFS through the VIP after failover",
        Duration::from_secs(30),
        || cluster.nfs_cat("etc/motd").ok(),
    )?;
    assert_eq!(served, b"read-only root\n");
    eprintln!(
        "NFS answered through the VIP {:?} after the host death",
        died.elapsed()
    );
    assert_eq!(cluster.nfs_cat("bin/ls")?, std::fs::read("/bin/ls")?);
    let dhcp_out = cluster.udhcpc(&script)?;
    assert!(
        dhcp_out.contains(&format!("ip={CLIENT_IP} serverid={VIP}")),
        "{dhcp_out}"
    );
    assert_eq!(cluster.tftp_get("hello.txt")?, b"boot file\n");
    // The survivor's DHCP server started from the replicated leases: a new
    // client does not get the first pool client's address (the lowest free
    // one, had the lease been lost), and its owner keeps it.
    let other_ip = cluster.pool_address(1, &script)?;
    assert_ne!(other_ip, pool_ip, "the pool lease was lost in the failover");
    assert_eq!(cluster.pool_address(0, &script)?, pool_ip);
    let status = cluster.cli(standby, &["status"])?;
    assert_eq!(status["data"]["role"], "active", "{status}");
    assert_eq!(status["data"]["peer"]["state"], "dead", "{status}");
    // Active with the peer dead: its own vote and the witness's.
    assert_eq!(status["data"]["quorum"]["mode"], "witness", "{status}");
    assert_eq!(status["data"]["quorum"]["votes"], "2 of 3", "{status}");
    assert_eq!(status["data"]["quorum"]["has_quorum"], true, "{status}");
    // With its peer dead the survivor refuses a switchover, and says why.
    let refused = cluster.cli(standby, &["switchover"])?;
    assert_eq!(refused["ok"], false, "{refused}");
    let why = refused["error"].as_str().unwrap_or_default();
    assert!(why.starts_with("switchover refused"), "{why}");
    // The client asked the survivor for its reservation and a file.
    let latest = status["data"]["clients_seen"]["latest"].as_array();
    assert!(
        latest.is_some_and(|clients| clients.iter().any(|c| c["name"] == "c1")),
        "{status}"
    );
    let human = std::process::Command::new(&cluster.ironroot)
        .args([
            "--socket",
            &cluster.nodes[standby].socket().display().to_string(),
            "status",
        ])
        .output()?;
    eprintln!(
        "ironroot status on the survivor:\n{}",
        String::from_utf8_lossy(&human.stdout)
    );

    // A write while the peer is away, then the old node comes back: it
    // rejoins as standby and resyncs to the same content.
    let image2 = cluster._dir.path().join("image2");
    write_image(&image2)?;
    std::fs::write(image2.join("etc/motd"), "second generation\n")?;
    let imported = cluster.cli(
        standby,
        &[
            "image",
            "import",
            "debian",
            "--from",
            &image2.display().to_string(),
        ],
    )?;
    assert_eq!(imported["ok"], true, "{imported}");
    cluster.segment.repair(cluster.nodes[first].host)?;
    cluster.start_node(first)?;
    let hash = |cluster: &Cluster, i: usize| {
        cluster
            .cli(i, &["status"])
            .ok()
            .map(|s| s["data"]["store"]["content_hash"].clone())
    };
    wait_for(
        "the restarted node to resync",
        Duration::from_secs(30),
        || {
            let (a, b) = (hash(&cluster, first)?, hash(&cluster, standby)?);
            (a == b && cluster.role(first).as_deref() == Some("standby")).then_some(())
        },
    )
    .with_context(|| cluster.logs())?;

    // Planned switchover back: the services move, the new generation stays.
    let moved = Instant::now();
    let switched = cluster.cli(standby, &["switchover"])?;
    assert_eq!(switched["ok"], true, "{switched}");
    cluster
        .wait_active(&[first], Duration::from_secs(20))
        .with_context(|| cluster.logs())?;
    let served = wait_for("NFS after the switchover", Duration::from_secs(30), || {
        cluster.nfs_cat("etc/motd").ok()
    })?;
    assert_eq!(served, b"second generation\n");
    eprintln!(
        "switchover: NFS answered from the other node after {:?}",
        moved.elapsed()
    );

    // SIGTERM hands over: the daemon stops its services, releases the VIP
    // and exits 0; the other node takes over and serves the same files.
    let stopped = Instant::now();
    let exit = cluster.nodes[first]
        .daemon
        .as_mut()
        .context("the active daemon")?
        .terminate(Duration::from_secs(15))?;
    assert!(exit.success(), "SIGTERM: {exit:?}\n{}", cluster.logs());
    cluster.nodes[first].daemon = None;
    cluster
        .wait_active(&[standby], Duration::from_secs(20))
        .with_context(|| cluster.logs())?;
    let served = wait_for("NFS after SIGTERM", Duration::from_secs(30), || {
        cluster.nfs_cat("etc/motd").ok()
    })?;
    assert_eq!(served, b"second generation\n");
    eprintln!(
        "SIGTERM: exit {exit}, NFS answered from the other node after {:?}",
        stopped.elapsed()
    );
    Ok(())
}

#[test]
fn after_kill_9_the_guardian_removes_the_vip_and_the_standby_resets_the_clients() -> Result<()> {
    if !require(is_root(), "needs root for network namespaces")? {
        return Ok(());
    }
    let mut cluster = Cluster::start()?;
    let first = cluster
        .wait_active(&[0, 1], Duration::from_secs(20))
        .with_context(|| cluster.logs())?;
    let host = cluster.nodes[first].host;
    let holds_vip = |cluster: &Cluster| {
        cluster
            .segment
            .host(host)
            .ip(&["-4", "addr", "show", "dev", "eth0"])
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("inet {VIP}/")))
            .unwrap_or(false)
    };
    wait_for("the VIP on the active node", Duration::from_secs(5), || {
        holds_vip(&cluster).then_some(())
    })?;
    // A client on the segment probes the VIP (the metrics endpoint answers
    // on every address, so an answer means "someone holds the VIP and its
    // daemon lives").
    cluster
        .client()
        .ip(&["addr", "add", "10.77.0.60/24", "dev", "eth0"])?;
    let probe = |cluster: &Cluster| {
        let url = format!("http://{VIP}:9450/metrics");
        cluster
            .client()
            .output("curl", &["-sf", "-m", "0.2", &url], Duration::from_secs(2))
            .is_ok_and(|o| {
                o.status.success()
                    && String::from_utf8_lossy(&o.stdout)
                        .contains("ironroot_role{role=\"active\"} 1")
            })
    };
    wait_for("the VIP to answer", Duration::from_secs(5), || {
        probe(&cluster).then_some(())
    })?;
    // An idle client connection to the NFS port through the VIP, and
    // the standby told about it (takeover hints).
    let connection = cluster
        .client()
        .command("bash")
        .args([
            "-c",
            &format!(
                "exec 3<>/dev/tcp/{VIP}/2049 || exit 3; read -r -t 30 -u 3 line; echo \"read ended: $?\""
            ),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let standby_ip = format!("10.77.0.{}", 2 - first);
    let hints_received = |cluster: &Cluster| {
        let url = format!("http://{standby_ip}:9450/metrics");
        cluster
            .client()
            .output("curl", &["-sf", "-m", "0.5", &url], Duration::from_secs(2))
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("ironroot_takeover_hints_received_total "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .filter(|n| *n > 0.0)
    };
    wait_for(
        "the standby to hear of the connection",
        Duration::from_secs(10),
        || hints_received(&cluster),
    )
    .with_context(|| cluster.logs())?;
    let killed = Instant::now();
    if let Some(daemon) = cluster.nodes[first].daemon.as_mut() {
        daemon.kill();
    }
    // valid_lft is 1 s; the kernel checks lifetimes about once a second.
    wait_for("the kernel to drop the VIP", Duration::from_secs(4), || {
        (!holds_vip(&cluster)).then_some(())
    })?;
    let gone_after = killed.elapsed();
    // Within the address's lifetime (1 s) plus the kernel's once-a-second
    // lifetime check, whoever removes it (the guardian takes ~30 ms).
    assert!(
        gone_after <= Duration::from_secs(2),
        "the VIP stayed {gone_after:?} after kill -9\n{}",
        cluster.logs()
    );
    wait_for(
        "an answer through the VIP from the standby",
        Duration::from_secs(15),
        || probe(&cluster).then_some(()),
    )
    .with_context(|| cluster.logs())?;
    let answered_after = killed.elapsed();
    let second = cluster
        .wait_active(&[1 - first], Duration::from_secs(5))
        .with_context(|| cluster.logs())?;
    // The dead daemon's guardian removed the VIP before its sockets closed,
    // so the client saw no FIN (which Linux NFS clients answer with an
    // immediate reconnect, refused while the old host holds the VIP, then a
    // 3 s back-off); the new active's tickle ACK reset the connection.
    let ended = wait_output(connection, Duration::from_secs(20))?;
    let (out, err) = (
        String::from_utf8_lossy(&ended.stdout),
        String::from_utf8_lossy(&ended.stderr),
    );
    let reset_after = killed.elapsed();
    assert!(
        err.contains("Connection reset by peer") && out.contains("read ended: 1"),
        "the idle connection did not end in a reset: stdout {out:?}, stderr {err:?}\n{}",
        cluster.logs()
    );
    eprintln!(
        "kill -9 of {}: VIP gone from its host after {gone_after:?}; the client reached {} through the VIP after {answered_after:?}; its idle NFS connection was reset by {reset_after:?}",
        cluster.nodes[first].name, cluster.nodes[second].name
    );
    Ok(())
}
