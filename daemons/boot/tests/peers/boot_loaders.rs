//! Boot loaders taken from Debian's ipxe, pxelinux and syslinux-common
//! packages into the boot tree, and an image's kernel and initramfs next
//! to them.

use std::fs;

use ironroot_boot::layout::{install_boot_loaders, BOOT_LOADERS};
use ironroot_boot::packages::default_cache;

use super::{peer, real_artifacts};

#[test]
fn boot_loaders_from_debian_packages() {
    let tree = tempfile::tempdir().unwrap();
    let Some(sums) = peer(
        "ipxe/pxelinux/syslinux-common packages",
        install_boot_loaders(&default_cache(), tree.path()),
    ) else {
        return;
    };
    assert_eq!(sums.len(), BOOT_LOADERS.len());
    for (path, _, _) in BOOT_LOADERS {
        let bytes = fs::read(tree.path().join(path)).unwrap();
        assert!(bytes.len() > 10_000, "{path} is only {} bytes", bytes.len());
        if path.ends_with(".efi") {
            assert_eq!(&bytes[..2], b"MZ", "{path} is not a PE image");
        }
    }
    let listing = fs::read_to_string(tree.path().join("SHA256SUMS")).unwrap();
    assert!(listing.contains("  ipxe/undionly.kpxe\n"), "{listing}");
    assert!(listing.contains("  pxelinux.0\n"), "{listing}");
}

#[test]
fn image_artifacts_land_in_the_tree() {
    let Some(artifacts) = real_artifacts() else {
        return;
    };
    let tree = tempfile::tempdir().unwrap();
    artifacts.write_to_tree(tree.path(), "bookworm").unwrap();
    let dir = tree.path().join("images/bookworm");
    assert_eq!(fs::read(dir.join("vmlinuz")).unwrap(), artifacts.kernel);
    let sums = fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    assert!(sums.contains(&format!("{}  initrd.img\n", artifacts.sha256["initrd.img"])));
    assert!(sums.contains(&format!("{}  vmlinuz\n", artifacts.sha256["vmlinuz"])));
    let order = fs::read_to_string(dir.join("modules.txt")).unwrap();
    assert_eq!(order.lines().last(), Some("nfsv3"));
}
