mod boot_loaders;
mod failover;
mod kernel;
mod lab;
mod nfs_root;
mod qemu;

use std::path::PathBuf;
use std::sync::OnceLock;

use ironroot_boot::packages::{default_cache, peers_required, CachedDeb, BUSYBOX_PACKAGE};
use ironroot_boot::{import_kernel, BootArtifacts, ImportOptions, KernelSource};

/// Skip (or fail under IRONROOT_REQUIRE_PEERS=1) when a peer is missing.
pub fn peer<T>(what: &str, found: Result<T, impl std::fmt::Display>) -> Option<T> {
    match found {
        Ok(value) => Some(value),
        Err(e) if peers_required() => panic!("{what} is required (IRONROOT_REQUIRE_PEERS=1): {e}"),
        Err(e) => {
            eprintln!("skipping: {what} unavailable: {e}");
            None
        }
    }
}

pub fn kernel_deb() -> Option<CachedDeb> {
    peer("bookworm kernel package", default_cache().kernel())
}

pub fn busybox_deb() -> Option<CachedDeb> {
    peer(
        "busybox-static package",
        default_cache().get(BUSYBOX_PACKAGE),
    )
}

/// The real kernel imported once per test binary (unpacking ~400 MB).
pub fn real_artifacts() -> Option<&'static BootArtifacts> {
    static ARTIFACTS: OnceLock<Option<BootArtifacts>> = OnceLock::new();
    ARTIFACTS
        .get_or_init(|| {
            let kernel = kernel_deb()?;
            let busybox = busybox_deb()?;
            let mut options = ImportOptions::new(busybox.path);
            // Real hardware NICs next to virtio, as an operator would add.
            options.extra_nic_modules = vec!["e1000".into(), "e1000e".into()];
            Some(import_kernel(&KernelSource::Deb(kernel.path), &options).expect("import"))
        })
        .as_ref()
}

/// busybox from the package, unpacked to a scratch file, for use as a peer.
pub fn busybox_binary(dir: &std::path::Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let deb = busybox_deb()?;
    let deb = ironroot_boot::deb::DebPackage::open(&deb.path).expect("busybox deb");
    let mut files = deb.read_files(&["bin/busybox"]).expect("bin/busybox");
    let path = dir.join("busybox");
    std::fs::write(&path, files.remove("bin/busybox").unwrap()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(path)
}
