//! Measures what the mount options are chosen for: how long a client that
//! is reading its NFS root stalls when the server host dies and the VIP
//! moves to another node. Topology, all in namespaces this test creates: a
//! bridge (with the guest's tap and busybox udhcpd) and two node namespaces
//! on veths. Node A holds the VIP and serves; "host death" is A's link cut,
//! then its server stopped (its FINs go nowhere) and its namespace deleted;
//! node B then takes the VIP, starts a server over the same tree and key
//! (same file handles) and sends a gratuitous ARP. The guest's image init
//! opens a file on the NFS root in a loop (close-to-open: one GETATTR per
//! open) and prints its uptime after each; the longest gap is the stall.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ironroot_net::tokio_backend::TokioRuntime;
use ironroot_net::Clock;

use super::lab::{ip, start_nfs, start_udhcpd, NfsServer, Owned, LAB_SERVER, LAB_TAP};
use super::qemu::{assert_lines, boot_watching};
use super::{busybox_binary, peer, real_artifacts};

const PROBE_INIT: &str = "#!/bin/busybox sh
B=/bin/busybox
$B echo 'image: probe loop started'
i=0
while [ $i -lt 200 ]; do
	$B cat /etc/probe >/dev/null || $B echo 'image: probe read FAILED'
	$B echo \"image: tick $($B cut -d' ' -f1 /proc/uptime)\"
	$B usleep 100000
	i=$((i + 1))
done
$B poweroff -f
";

struct FailoverLab {
    names: Vec<String>,
    dhcpd: Option<Owned>,
    node_a: Option<NfsServer>,
    node_b: Option<NfsServer>,
}

impl Drop for FailoverLab {
    fn drop(&mut self) {
        self.dhcpd.take();
        self.node_a.take();
        self.node_b.take();
        for name in self.names.iter().rev() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

fn setup(dir: &Path, root: &Path) -> Result<FailoverLab, String> {
    let busybox = busybox_binary(dir).ok_or("busybox-static unavailable")?;
    let pid = std::process::id();
    let (lan, a, b) = (
        format!("irfl{pid}"),
        format!("irfa{pid}"),
        format!("irfb{pid}"),
    );
    let mut lab = FailoverLab {
        names: Vec::new(),
        dhcpd: None,
        node_a: None,
        node_b: None,
    };
    for name in [&lan, &a, &b] {
        ip(&["netns", "add", name])?;
        lab.names.push(name.clone());
        ip(&["-n", name, "link", "set", "lo", "up"])?;
    }
    ip(&["-n", &lan, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &lan, "tuntap", "add", "dev", LAB_TAP, "mode", "tap"])?;
    ip(&["-n", &lan, "link", "set", LAB_TAP, "master", "br0"])?;
    for (node, port, address) in [(&a, "va", "192.0.2.1/24"), (&b, "vb", "192.0.2.4/24")] {
        ip(&[
            "-n", &lan, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", node,
        ])?;
        ip(&["-n", &lan, "link", "set", port, "master", "br0"])?;
        ip(&["-n", &lan, "link", "set", port, "up"])?;
        ip(&["-n", node, "addr", "add", address, "dev", "eth0"])?;
        ip(&["-n", node, "link", "set", "eth0", "up"])?;
    }
    ip(&["-n", &lan, "addr", "add", "192.0.2.3/24", "dev", "br0"])?;
    ip(&["-n", &lan, "link", "set", "br0", "up"])?;
    ip(&["-n", &lan, "link", "set", LAB_TAP, "up"])?;
    lab.dhcpd = Some(start_udhcpd(&lan, "br0", &busybox, dir)?);
    lab.node_a = Some(start_nfs(&a, root)?);
    Ok(lab)
}

/// Dead time plus takeover in the cluster manager: 1 s by default, other
/// values by hand with IRONROOT_FAILOVER_DEAD_MS.
fn dead_time() -> Duration {
    let millis = std::env::var("IRONROOT_FAILOVER_DEAD_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    Duration::from_millis(millis)
}

/// Host death of A, VIP to B. Returns how long the switch itself took.
fn fail_over(lab: &mut FailoverLab, root: &Path, busybox: &Path) -> Result<Duration, String> {
    let clock = TokioRuntime::with_seed(1);
    let started = clock.now();
    let (a, b) = (lab.names[1].clone(), lab.names[2].clone());
    ip(&["-n", &a, "link", "set", "eth0", "down"])?;
    lab.node_a.take();
    ip(&["netns", "del", &a])?;
    lab.names.retain(|n| *n != a);
    // No node holds the VIP for the dead time before the standby takes it.
    std::thread::sleep(dead_time());
    ip(&[
        "-n",
        &b,
        "addr",
        "add",
        &format!("{LAB_SERVER}/24"),
        "dev",
        "eth0",
    ])?;
    lab.node_b = Some(start_nfs(&b, root)?);
    let status = Command::new("ip")
        .args(["netns", "exec", &b])
        .arg(busybox)
        .args(["arping", "-U", "-c", "1", "-I", "eth0", LAB_SERVER])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("arping: {e}"))?;
    if !status.success() {
        return Err(format!("arping: {status}"));
    }
    Ok(clock.now() - started)
}

/// Gaps between consecutive ticks, in seconds, sorted.
fn tick_gaps(console: &str) -> Vec<f64> {
    let ticks: Vec<f64> = console
        .lines()
        .filter_map(|l| l.strip_prefix("image: tick ")?.trim().parse().ok())
        .collect();
    let mut gaps: Vec<f64> = ticks.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_by(f64::total_cmp);
    gaps
}

#[test]
fn client_rides_through_vip_move() {
    if real_artifacts().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("image");
    for sub in [
        "bin", "sbin", "dev", "proc", "sys", "run", "tmp", "var", "etc",
    ] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    let Some(busybox) = busybox_binary(dir.path()) else {
        return;
    };
    fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    fs::write(root.join("etc/probe"), b"probe\n").unwrap();
    fs::write(root.join("sbin/init"), PROBE_INIT).unwrap();
    fs::set_permissions(root.join("sbin/init"), fs::Permissions::from_mode(0o755)).unwrap();
    let Some(mut lab) = peer("failover lab (root, iproute2)", setup(dir.path(), &root)) else {
        return;
    };
    // Other options can be compared by hand: IRONROOT_FAILOVER_NFSOPTS=...
    let nfsopts = std::env::var("IRONROOT_FAILOVER_NFSOPTS")
        .unwrap_or_else(|_| ironroot_boot::nfs_root_mount_options());
    let append = format!(
        "console=ttyS0 loglevel=1 ironroot.server={LAB_SERVER} ironroot.client=qemu-test \
         ironroot.image=test ironroot.onfail=poweroff ironroot.nfsopts={nfsopts} panic=-1"
    );
    let netdev = format!("tap,ifname={LAB_TAP},script=no,downscript=no");
    let lan = lab.names[0].clone();
    let wrapper = ["ip", "netns", "exec", lan.as_str()];
    let mut switch = None;
    let Some((console, _)) = boot_watching(&append, &netdev, &wrapper, |console| {
        // Fail over once the probe loop has run for a while.
        if switch.is_none() && console.matches("image: tick").count() >= 20 {
            switch = Some(fail_over(&mut lab, &root, &busybox).expect("fail over"));
        }
    }) else {
        return;
    };
    let switch = switch.expect("probe loop never started");
    let gaps = tick_gaps(&console);
    let (median, second, longest) = match gaps.as_slice() {
        [] | [_] => (0.0, 0.0, 0.0),
        all => (all[all.len() / 2], all[all.len() - 2], all[all.len() - 1]),
    };
    eprintln!(
        "failover ({nfsopts}): VIP gone for {} ms; client stall {longest:.2} s \
         (next longest gap {second:.2} s, median {median:.2} s)",
        switch.as_millis()
    );
    assert_lines(&console, &["image: probe loop started".into()]);
    assert!(!console.contains("probe read FAILED"), "{console}");
    assert!(
        console.matches("image: tick").count() >= 200,
        "probe loop did not finish"
    );
}
