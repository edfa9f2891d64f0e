//! The module resolver and initramfs builder against the real bookworm
//! kernel package, with the archive unpacked by the real busybox.

use std::collections::BTreeSet;
use std::process::Command;

use super::{busybox_binary, real_artifacts};

/// From LAB-NOTES.md: the order that booted a bookworm VM to an NFS root.
const LAB_ORDER: [&str; 16] = [
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "netfs",
    "fscache",
    "sunrpc",
    "grace",
    "lockd",
    "nfs",
    "nfs_acl",
    "nfsv3",
];

#[test]
fn module_order_from_real_kernel_metadata() {
    let Some(artifacts) = real_artifacts() else {
        return;
    };
    assert!(artifacts.kernel_version.starts_with("6.1.0-"));
    let names: Vec<&'static str> = artifacts.modules.iter().map(|m| m.name.as_str()).collect();
    // Every module after everything it depends on.
    for (position, module) in artifacts.modules.iter().enumerate() {
        for dependency in &module.depends {
            let at = names.iter().position(|n| n == dependency);
            assert!(
                at.is_some_and(|at| at < position),
                "{} loaded before its dependency {dependency}: {names:?}",
                module.name
            );
        }
    }
    // Same set as the lab's working order, plus the extra NIC drivers.
    let expected: BTreeSet<&str> = LAB_ORDER
        .iter()
        .copied()
        .chain(["e1000", "e1000e"])
        .collect();
    assert_eq!(names.iter().copied().collect::<BTreeSet<_>>(), expected);
    // Requests are honoured in order: NIC side, extra NICs, then NFS.
    let set = |slice: &[&'static str]| slice.iter().copied().collect::<BTreeSet<_>>();
    assert_eq!(set(&names[..8]), set(&LAB_ORDER[..8]));
    assert_eq!(names[8..10], ["e1000", "e1000e"]);
    assert_eq!(set(&names[10..]), set(&LAB_ORDER[8..]));
    let total: usize = artifacts.modules.iter().map(|m| m.bytes).sum();
    eprintln!(
        "kernel {}: {} modules, {} bytes uncompressed, initramfs {} bytes gzip'd",
        artifacts.kernel_version,
        names.len(),
        total,
        artifacts.initramfs.len()
    );
    insta::assert_snapshot!(names.join("\n"));
}

#[test]
fn initramfs_unpacks_with_real_busybox() {
    let Some(artifacts) = real_artifacts() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(busybox) = busybox_binary(dir.path()) else {
        return;
    };
    let image = dir.path().join("initrd.img");
    std::fs::write(&image, &artifacts.initramfs).unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    // Unprivileged-safe: no device nodes are created by cpio -t.
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{bb} zcat {img} | {bb} cpio -t",
            bb = busybox.display(),
            img = image.display()
        ))
        .output()
        .unwrap();
    assert!(listing.status.success(), "{listing:?}");
    let listing = String::from_utf8(listing.stdout).unwrap();
    for path in [
        "init",
        "bin/busybox",
        "dev/console",
        "etc/ironroot/modules",
        "lib/modules/nfsv3.ko",
    ] {
        assert!(
            listing.lines().any(|l| l == path),
            "{path} not in {listing}"
        );
    }
    let extract = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {root} && {bb} zcat {img} | {bb} cpio -i -d init etc/ironroot/modules lib/modules/sunrpc.ko",
            root = root.display(),
            bb = busybox.display(),
            img = image.display()
        ))
        .output()
        .unwrap();
    assert!(extract.status.success(), "{extract:?}");
    let modules = std::fs::read_to_string(root.join("etc/ironroot/modules")).unwrap();
    let names: Vec<&str> = artifacts.modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(modules.lines().collect::<Vec<_>>(), names);
    let sunrpc = std::fs::read(root.join("lib/modules/sunrpc.ko")).unwrap();
    assert_eq!(&sunrpc[..4], b"\x7fELF");
    let init = std::fs::read_to_string(root.join("init")).unwrap();
    assert!(init.contains(&artifacts.kernel_version));
    // The script parses under the busybox shell that will run it.
    let syntax = Command::new(&busybox)
        .args(["sh", "-n"])
        .arg(root.join("init"))
        .output()
        .unwrap();
    assert!(syntax.status.success(), "{syntax:?}");
}
