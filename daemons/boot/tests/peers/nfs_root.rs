//! The whole client boot after the boot loader: the produced kernel and
//! initramfs under QEMU get a DHCP lease from busybox udhcpd, mount `VIP:/`
//! read-only over NFSv3/TCP from ironroot's own NFS server (in a network
//! namespace), mount tmpfs on /run, /tmp and /var, switch root and run the
//! image's /sbin/init, which tries to write to the root and reports.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::lab::{Lab, LAB_SERVER, LAB_TAP};
use super::qemu::{assert_lines, boot};
use super::{busybox_binary, peer, real_artifacts};

const IMAGE_INIT: &str = "#!/bin/busybox sh
B=/bin/busybox
$B echo \"image: init running as pid $$\"
if $B touch /ironroot-write-test 2>/tmp/err; then
	$B echo 'image: WRITE SUCCEEDED'
else
	$B echo \"image: write refused: $($B cat /tmp/err)\"
fi
$B echo 'probe' >/var/log/probe && $B echo 'image: /var is writable'
$B grep -E ' / nfs | /(var|tmp|run) tmpfs ' /proc/mounts | $B sed 's/^/image: mount: /'
$B poweroff -f
";

/// A minimal image: busybox and an /sbin/init script.
fn image_root(dir: &Path) -> Option<std::path::PathBuf> {
    let root = dir.join("image");
    for sub in [
        "bin", "sbin", "dev", "proc", "sys", "run", "tmp", "var/log", "etc",
    ] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    let busybox = busybox_binary(dir)?;
    fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    fs::write(root.join("sbin/init"), IMAGE_INIT).unwrap();
    fs::set_permissions(root.join("sbin/init"), fs::Permissions::from_mode(0o755)).unwrap();
    Some(root)
}

#[test]
fn boots_to_image_init_on_read_only_nfs_root() {
    if real_artifacts().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(root) = image_root(dir.path()) else {
        return;
    };
    let Some(lab) = peer(
        "network namespace with tap and NFS server (root, iproute2)",
        Lab::create(dir.path(), Some(&root)),
    ) else {
        return;
    };
    let append = format!(
        "console=ttyS0 loglevel=1 ironroot.server={LAB_SERVER} ironroot.client=qemu-test \
         ironroot.image=test ironroot.onfail=poweroff ironroot.mount_tries=3 panic=-1"
    );
    let netdev = format!("tap,ifname={LAB_TAP},script=no,downscript=no");
    let wrapper = ["ip", "netns", "exec", lab.netns.as_str()];
    let Some((console, elapsed_ms)) = boot(&append, &netdev, &wrapper) else {
        return;
    };
    eprintln!("nfs root: guest powered off after ~{elapsed_ms} ms (TCG)");
    for line in console.lines().filter(|l| l.starts_with("image:")) {
        eprintln!("console: {line}");
    }
    assert_lines(
        &console,
        &[
            format!("ironroot: mount: root mounted read-only from {LAB_SERVER}"),
            "ironroot: tmpfs: /run /tmp /var ready".into(),
            "ironroot: switch root: exec /sbin/init".into(),
            "image: init running as pid 1".into(),
            "image: write refused: touch: /ironroot-write-test: Read-only file system".into(),
            "image: /var is writable".into(),
            format!("image: mount: {LAB_SERVER}:/ / nfs ro,"),
            "image: mount: tmpfs /var tmpfs".into(),
        ],
    );
    assert!(!console.contains("WRITE SUCCEEDED"), "{console}");
    assert!(!console.contains("FAILED"), "{console}");
}
