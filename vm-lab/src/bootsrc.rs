//! The one place where the lab gets its kernel, initramfs, boot loaders and
//! per-client iPXE scripts: from the product's boot-tree crate, exactly as
//! `ironroot boot import-kernel` produces them. The import (unpacking a
//! ~400 MB kernel package) is cached by the checksums of its inputs.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ironroot_boot::initramfs::{init_script, InitLimits};
use ironroot_boot::packages::{DebCache, BUSYBOX_PACKAGE};
use ironroot_boot::{import_kernel, ClientBoot, ImportOptions, KernelSource, Mac};
use sha2::{Digest, Sha256};

use crate::error::LabError;

/// Bumped when what is cached here changes shape.
const BOOT_CACHE_VERSION: &str = "vm-lab boot v1";
/// Image name in the boot tree and on the kernel command line.
pub const LAB_IMAGE: &str = "lab-busybox";

/// Kernel and initramfs of one import, on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    pub kernel_version: String,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
}

/// The package cache shared with the boot crate (IRONROOT_DEB_CACHE).
pub fn deb_cache() -> DebCache {
    ironroot_boot::packages::default_cache()
}

pub fn busybox_deb(cache: &DebCache) -> Result<PathBuf, LabError> {
    Ok(cache.get(BUSYBOX_PACKAGE)?.path)
}

/// Kernel + initramfs for `image_root` from the bookworm kernel package,
/// through `ironroot_boot::import_kernel`.
pub fn import_boot_files(
    debs: &DebCache,
    lab_cache: &Path,
    image_root: &Path,
) -> Result<BootFiles, LabError> {
    let kernel = debs.kernel()?;
    let busybox = debs.get(BUSYBOX_PACKAGE)?;
    let mut key = Sha256::new();
    key.update(BOOT_CACHE_VERSION);
    key.update(&kernel.sha256);
    key.update(&busybox.sha256);
    // The generated /init carries the mount options and retry limits: a
    // change in the boot crate's script gives a new key.
    key.update(init_script("", 0, &InitLimits::default()));
    let key: String = key
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = lab_cache.join(format!("boot-{key}"));
    let files = BootFiles {
        kernel_version: String::new(),
        vmlinuz: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
    };
    let version_file = dir.join("kernel-version");
    if let Ok(version) = fs::read_to_string(&version_file) {
        if files.vmlinuz.is_file() && files.initrd.is_file() {
            return Ok(BootFiles {
                kernel_version: version.trim().to_string(),
                ..files
            });
        }
    }
    let mut options = ImportOptions::new(busybox.path);
    options.image_root = Some(image_root.to_path_buf());
    let artifacts = import_kernel(&KernelSource::Deb(kernel.path), &options)?;
    fs::create_dir_all(&dir).map_err(LabError::io(&dir))?;
    // Write-then-rename, the version file last: a concurrent lab sees
    // either nothing or complete files.
    let put = |path: &Path, bytes: &[u8]| -> Result<(), LabError> {
        let partial = path.with_extension(format!("partial-{}", std::process::id()));
        fs::write(&partial, bytes).map_err(LabError::io(&partial))?;
        fs::rename(&partial, path).map_err(LabError::io(path))
    };
    put(&files.vmlinuz, &artifacts.kernel)?;
    put(&files.initrd, &artifacts.initramfs)?;
    put(&version_file, artifacts.kernel_version.as_bytes())?;
    Ok(BootFiles {
        kernel_version: artifacts.kernel_version,
        ..files
    })
}

/// Under TCG on a loaded host the kernel's IO-APIC timer check can miss
/// its window and panic ("IO-APIC + timer doesn't work!", seen here at load
/// 14 on 2 cores). The kernel matches `-` and `_` alike in parameter names;
/// the boot crate's command-line check admits no `_`.
pub const TCG_KERNEL_ARG: &str = "no-timer-check";

/// One client as the boot crate sees it.
pub fn client_boot(server: Ipv4Addr, client: &str) -> ClientBoot {
    ClientBoot {
        server,
        client: client.to_string(),
        image: LAB_IMAGE.to_string(),
        console: "ttyS0,115200".to_string(),
        extra: vec![TCG_KERNEL_ARG.to_string()],
    }
}

/// Writes a TFTP tree: the boot loaders, the image's kernel and initramfs
/// and each client's iPXE script; returns tree path -> SHA-256.
pub fn write_tftp_tree(
    debs: &DebCache,
    tree: &Path,
    boot: &BootFiles,
    clients: &[(Mac, ClientBoot)],
) -> Result<BTreeMap<String, String>, LabError> {
    let mut sums = ironroot_boot::layout::install_boot_loaders(debs, tree)?;
    let mut files = BTreeMap::new();
    let read = |p: &Path| fs::read(p).map_err(LabError::io(p));
    files.insert(
        ironroot_boot::layout::kernel_path(LAB_IMAGE),
        read(&boot.vmlinuz)?,
    );
    files.insert(
        ironroot_boot::layout::initramfs_path(LAB_IMAGE),
        read(&boot.initrd)?,
    );
    for (mac, client) in clients {
        let script = ironroot_boot::ipxe_script(*mac, client)?;
        files.insert(
            ironroot_boot::bootcfg::ipxe_script_path(*mac),
            script.into_bytes(),
        );
    }
    let dir = ironroot_boot::layout::image_dir(LAB_IMAGE);
    sums.extend(ironroot_boot::layout::write_files(tree, &dir, &files)?);
    Ok(sums)
}
