//! Boots the produced kernel + initramfs under QEMU (TCG: this machine's
//! KVM cannot run guests) and reads /init's messages on the serial console.
//! - On a QEMU hub with no other port (nothing leaves the VM):
//!   `ironroot.break=modules` proves the planned modules load into the real
//!   kernel and the NIC's link comes up; without a DHCP server the failed
//!   step is named.
//! - On a tap in a network namespace the test creates, with busybox udhcpd
//!   (from Debian's busybox-static) as the DHCP server: the lease is
//!   applied, and the NFS mount is attempted with our options against an
//!   address where nothing listens, so the real kernel parses every option.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::lab::{Lab, LAB_SERVER, LAB_TAP};
use super::{peer, real_artifacts};

/// Longest wait for the guest to power off (TCG on a shared 2-core host).
const BOOT_SECS_MAX: u64 = 300;
const POLL_INTERVAL_MS: u64 = 250;
const QEMU: &str = "qemu-system-x86_64";

/// QEMU's arguments: a pure function so the command line can be read in
/// one place. `netdev` is the backend of the guest's one virtio NIC.
fn qemu_args(
    kernel: &Path,
    initrd: &Path,
    console_log: &Path,
    append: &str,
    netdev: &str,
) -> Vec<String> {
    let fixed = [
        "-accel",
        "tcg",
        "-m",
        "512",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-device",
        "virtio-net-pci,netdev=n0,romfile=",
    ];
    fixed
        .iter()
        .map(|s| s.to_string())
        .chain([
            "-netdev".into(),
            format!("{netdev},id=n0"),
            "-serial".into(),
            format!("file:{}", console_log.display()),
            "-kernel".into(),
            kernel.display().to_string(),
            "-initrd".into(),
            initrd.display().to_string(),
            "-append".into(),
            append.to_string(),
        ])
        .collect()
}

/// A process we started, killed by PID whatever happens to the test.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_program(name: &str, package: &str) -> Result<PathBuf, String> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{name} not installed (apt-get install {package})"))
}

/// Boots the real artifacts with `append`, QEMU run through `wrapper`
/// (e.g. `ip netns exec NS`); returns (console, elapsed ms). Panics if QEMU
/// does not exit by itself within the bound.
pub(super) fn boot(append: &str, netdev: &str, wrapper: &[&str]) -> Option<(String, u64)> {
    boot_watching(append, netdev, wrapper, |_| {})
}

/// As [`boot`], calling `watch` with the console so far on every poll.
pub(super) fn boot_watching(
    append: &str,
    netdev: &str,
    wrapper: &[&str],
    mut watch: impl FnMut(&str),
) -> Option<(String, u64)> {
    let artifacts = real_artifacts()?;
    let qemu = peer("QEMU", find_program(QEMU, "qemu-system-x86"))?;
    // One guest at a time: TCG guests on a shared 2-core host slow each
    // other down past the bounded waits inside /init.
    static ONE_GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinuz");
    let initrd = dir.path().join("initrd.img");
    let log = dir.path().join("console.log");
    fs::write(&kernel, &artifacts.kernel).unwrap();
    fs::write(&initrd, &artifacts.initramfs).unwrap();
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(qemu);
            command
        }
        None => Command::new(qemu),
    };
    let child = command
        .args(qemu_args(&kernel, &initrd, &log, append, netdev))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu");
    let mut guest = Owned(child);
    let polls_max = BOOT_SECS_MAX * 1000 / POLL_INTERVAL_MS;
    for poll in 0..polls_max {
        if let Some(status) = guest.0.try_wait().unwrap() {
            let console = fs::read_to_string(&log).unwrap_or_default();
            assert!(
                status.success(),
                "qemu failed: {status}; console:\n{console}"
            );
            for line in console
                .lines()
                .filter(|l| l.contains("ironroot:") || l.starts_with("mount:"))
            {
                eprintln!("console: {line}");
            }
            return Some((console, poll * POLL_INTERVAL_MS));
        }
        watch(&fs::read_to_string(&log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
    }
    let console = fs::read_to_string(&log).unwrap_or_default();
    panic!("guest did not power off within {BOOT_SECS_MAX} s; console:\n{console}")
}

pub(super) fn assert_lines(console: &str, lines: &[String]) {
    for line in lines {
        assert!(
            console.contains(line.as_str()),
            "no {line:?} on the console:\n{console}"
        );
    }
}

const ISOLATED_HUB: &str = "hubport,hubid=0";

#[test]
fn initramfs_loads_modules_in_real_kernel() {
    let append = "console=ttyS0 loglevel=1 ironroot.break=modules ironroot.onfail=poweroff \
                  ironroot.server=192.0.2.1 ironroot.client=qemu-test panic=-1";
    let Some((console, elapsed_ms)) = boot(append, ISOLATED_HUB, &[]) else {
        return;
    };
    eprintln!("break=modules: guest powered off after ~{elapsed_ms} ms (TCG)");
    let modules: Vec<&str> = real_artifacts()
        .unwrap()
        .modules
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_lines(
        &console,
        &[
            format!("ironroot: modules loaded: {}", modules.join(" ")),
            "ironroot: link up: eth0".into(),
            "ironroot: plan: modules=".into(),
            "ironroot: break=modules: powering off".into(),
        ],
    );
    assert!(!console.contains("FAILED"), "{console}");
}

/// No DHCP server on the hub: udhcpc really runs (its own messages appear)
/// and /init fails with a message naming the step, then powers off as the
/// command line asks instead of opening the rescue shell.
#[test]
fn initramfs_names_the_failed_step() {
    let append = "console=ttyS0 loglevel=1 ironroot.dhcp_tries=1 ironroot.onfail=poweroff \
                  ironroot.client=qemu-test panic=-1";
    let Some((console, _)) = boot(append, ISOLATED_HUB, &[]) else {
        return;
    };
    assert_lines(
        &console,
        &[
            "ironroot: link up: eth0".into(),
            "udhcpc: broadcasting discover".into(),
            "ironroot: FAILED: address: no DHCP lease on eth0 after 1 tries".into(),
            "ironroot: powering off".into(),
        ],
    );
}

/// DHCP through the udhcpc script, then two mount attempts with our options
/// against the lab address, where no NFS server listens: the kernel must
/// accept every option (a bad one is refused before any packet is sent)
/// and the mount fails only for want of a server.
#[test]
fn initramfs_configures_dhcp_lease_and_tries_the_mount() {
    if real_artifacts().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(lab) = peer(
        "network namespace with tap (root, iproute2)",
        Lab::create(dir.path(), None),
    ) else {
        return;
    };
    let append = "console=ttyS0 loglevel=1 ironroot.onfail=poweroff ironroot.mount_tries=2 \
                  ironroot.client=qemu-test ironroot.image=test panic=-1";
    let netdev = format!("tap,ifname={LAB_TAP},script=no,downscript=no");
    let wrapper = ["ip", "netns", "exec", lab.netns.as_str()];
    let Some((console, elapsed_ms)) = boot(append, &netdev, &wrapper) else {
        return;
    };
    eprintln!("dhcp+mount attempt: guest powered off after ~{elapsed_ms} ms (TCG)");
    assert_lines(
        &console,
        &[
            "ironroot: address: 192.0.2.10".into(),
            "/24 on eth0".into(),
            format!("ironroot: plan: server={LAB_SERVER} path=/ opts=ro,vers=3,proto=tcp,hard"),
            format!("ironroot: mount: {LAB_SERVER}:/ on /newroot, try 2/2"),
            // The kernel accepted the options and reached the network.
            format!("mount: mounting {LAB_SERVER}:/ on /newroot failed: Connection refused"),
            format!("ironroot: FAILED: mount: {LAB_SERVER}:/ failed 2 times"),
        ],
    );
    for refused in ["Unknown parameter", "bad mount option", "Invalid argument"] {
        assert!(
            !console.contains(refused),
            "kernel refused an option:\n{console}"
        );
    }
}
