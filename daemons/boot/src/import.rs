//! `import_kernel`: from a kernel package (or the kernel already inside an
//! image) to the kernel, initramfs and checksums of the image's boot tree.
//! Storing them as a new generation is the caller's business.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::compress::Codec;
use crate::deb::DebPackage;
use crate::error::BootError;
use crate::initramfs::{initramfs_cpio, InitLimits};
use crate::kernel::{KernelTree, ModuleIndex, PlannedModule};
use crate::layout;
use crate::packages::{sha256_hex, DebCache, BUSYBOX_PACKAGE};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// A `linux-image-*.deb`.
    Deb(PathBuf),
    /// An unpacked image holding `boot/vmlinuz-*` and `lib/modules/*`.
    ImageRoot(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// NIC drivers and their bus driver, loaded first. virtio_pci is not a
    /// dependency of virtio_net (the bus and the device driver are bound at
    /// probe time), so it must be asked for.
    pub nic_modules: Vec<String>,
    /// Extra NIC drivers for real hardware (e1000, e1000e, ...).
    pub extra_nic_modules: Vec<String>,
    /// The NFS client; its dependencies come from the modules themselves.
    pub nfs_modules: Vec<String>,
    /// `busybox-static` package providing /bin/busybox.
    pub busybox_deb: PathBuf,
    /// The image the kernel boots into: checked for `/sbin/init`.
    pub image_root: Option<PathBuf>,
    pub limits: InitLimits,
    /// Timestamp of every initramfs entry, for reproducible output.
    pub mtime_secs: u32,
}

impl ImportOptions {
    pub fn new(busybox_deb: PathBuf) -> ImportOptions {
        ImportOptions {
            nic_modules: vec!["virtio_pci".into(), "virtio_net".into()],
            extra_nic_modules: Vec::new(),
            nfs_modules: vec!["nfsv3".into()],
            busybox_deb,
            image_root: None,
            limits: InitLimits::default(),
            mtime_secs: 0,
        }
    }

    /// Options with busybox-static from `cache` (fetched with `apt-get
    /// download` when the cache has none).
    pub fn from_cache(cache: &DebCache) -> Result<ImportOptions, BootError> {
        Ok(ImportOptions::new(cache.get(BUSYBOX_PACKAGE)?.path))
    }

    pub fn requested_modules(&self) -> Vec<String> {
        let mut all = self.nic_modules.clone();
        all.extend(self.extra_nic_modules.iter().cloned());
        all.extend(self.nfs_modules.iter().cloned());
        all
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSummary {
    pub name: String,
    /// Path under lib/modules/<version>, as shipped.
    pub source: PathBuf,
    /// Uncompressed size as stored in the initramfs.
    pub bytes: usize,
    /// `depends=` from the module's `.modinfo`.
    pub depends: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArtifacts {
    pub kernel_version: String,
    pub kernel: Vec<u8>,
    /// gzip'd newc cpio.
    pub initramfs: Vec<u8>,
    /// In load order.
    pub modules: Vec<ModuleSummary>,
    /// `vmlinuz` / `initrd.img` -> SHA-256 (hex).
    pub sha256: BTreeMap<String, String>,
}

impl BootArtifacts {
    /// Writes the image's part of the boot tree (see [`crate::layout`]).
    pub fn write_to_tree(
        &self,
        tree: &Path,
        image: &str,
    ) -> Result<BTreeMap<String, String>, BootError> {
        layout::check_image_name(image)?;
        let mut files = BTreeMap::new();
        files.insert(layout::kernel_path(image), self.kernel.clone());
        files.insert(layout::initramfs_path(image), self.initramfs.clone());
        let order: String = self
            .modules
            .iter()
            .map(|m| format!("{}\n", m.name))
            .collect();
        let dir = layout::image_dir(image);
        files.insert(format!("{dir}/modules.txt"), order.into_bytes());
        layout::write_files(tree, &dir, &files)
    }
}

/// `ironroot boot import-kernel IMAGE` on a fresh machine: the current
/// bookworm kernel package from `cache` (downloaded when missing), checked
/// against the image it will boot.
pub fn import_current_kernel(
    cache: &DebCache,
    options: &ImportOptions,
) -> Result<BootArtifacts, BootError> {
    let kernel = cache.kernel()?;
    import_kernel(&KernelSource::Deb(kernel.path), options)
}

/// Paths of a kernel package worth unpacking: the kernel and module files.
fn is_kernel_file(path: &str) -> bool {
    if path.starts_with("boot/vmlinuz-") {
        return true;
    }
    let in_modules = path.starts_with("lib/modules/") || path.starts_with("usr/lib/modules/");
    in_modules && Codec::from_name(path).1.ends_with(".ko")
}

pub fn import_kernel(
    source: &KernelSource,
    options: &ImportOptions,
) -> Result<BootArtifacts, BootError> {
    if let Some(root) = &options.image_root {
        check_image_root(root)?;
    }
    let busybox = DebPackage::open(&options.busybox_deb)?
        .read_files(&["bin/busybox"])?
        .remove("bin/busybox")
        .unwrap_or_default();
    match source {
        KernelSource::ImageRoot(root) => {
            check_image_root(root)?;
            build_from_root(root, &busybox, options)
        }
        KernelSource::Deb(path) => {
            let deb = DebPackage::open(path)?;
            let scratch = tempfile::tempdir().map_err(BootError::io(std::env::temp_dir()))?;
            deb.extract(scratch.path(), is_kernel_file)?;
            let has_vmlinuz = fs::read_dir(scratch.path().join("boot"))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            if !has_vmlinuz {
                return Err(BootError::NotKernelPackage {
                    deb: deb.name().to_string(),
                });
            }
            build_from_root(scratch.path(), &busybox, options)
        }
    }
}

/// An image must have something to switch_root into. `/sbin` may be a
/// symlink (merged /usr): look through it, and accept `/sbin/init` being a
/// symlink (to systemd) whose target lies outside this host's view.
pub fn check_image_root(root: &Path) -> Result<(), BootError> {
    let candidates = [root.join("sbin/init"), root.join("usr/sbin/init")];
    if candidates.iter().any(|p| fs::symlink_metadata(p).is_ok()) {
        Ok(())
    } else {
        Err(BootError::NoInitInImage {
            root: root.to_path_buf(),
        })
    }
}

fn build_from_root(
    root: &Path,
    busybox: &[u8],
    options: &ImportOptions,
) -> Result<BootArtifacts, BootError> {
    let tree = KernelTree::locate(root)?;
    let kernel = fs::read(&tree.vmlinuz).map_err(BootError::io(&tree.vmlinuz))?;
    let index = ModuleIndex::scan(&tree)?;
    let plan = index.plan(&options.requested_modules())?;
    let cpio = initramfs_cpio(&tree.version, busybox, &plan, &options.limits).map_err(|e| {
        BootError::InvalidInput {
            what: "initramfs entry",
            value: e.to_string(),
            reason: "rejected by the cpio writer",
        }
    })?;
    let initramfs = cpio.finish_gzip(options.mtime_secs);
    let mut sha256 = BTreeMap::new();
    sha256.insert("vmlinuz".to_string(), sha256_hex(&kernel));
    sha256.insert("initrd.img".to_string(), sha256_hex(&initramfs));
    Ok(BootArtifacts {
        kernel_version: tree.version,
        kernel,
        initramfs,
        modules: plan.iter().map(summary).collect(),
        sha256,
    })
}

fn summary(module: &PlannedModule) -> ModuleSummary {
    ModuleSummary {
        name: module.info.name.clone(),
        source: module.source.clone(),
        bytes: module.object.len(),
        depends: module.info.depends.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deb::tests::build_deb;
    use crate::modinfo::tests::build_module;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    fn options(dir: &Path) -> ImportOptions {
        let busybox = build_deb(&[("bin/busybox", b"\x7fELF busybox")]);
        ImportOptions::new(write(dir, "busybox-static.deb", &busybox))
    }

    fn module(name: &str, depends: &str) -> Vec<u8> {
        build_module(format!("name={name}\0depends={depends}\0").as_bytes())
    }

    #[test]
    fn non_kernel_package_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let deb = build_deb(&[("usr/bin/foo", b"x")]);
        let path = write(dir.path(), "linux-image-foo.deb", &deb);
        let err = import_kernel(&KernelSource::Deb(path), &options(dir.path())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a kernel package: no boot/vmlinuz-* in linux-image-foo.deb"
        );
    }

    #[test]
    fn kernel_without_nfs_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let modules = "lib/modules/6.1.0-9-amd64/kernel/drivers";
        let (ring, virtio) = (module("virtio_ring", ""), module("virtio", "virtio_ring"));
        let (pci, net) = (
            module("virtio_pci", "virtio,virtio_ring"),
            module("virtio_net", "virtio"),
        );
        let deb = build_deb(&[
            ("boot/vmlinuz-6.1.0-9-amd64", b"bzImage"),
            (&format!("{modules}/virtio_ring.ko"), &ring),
            (&format!("{modules}/virtio.ko"), &virtio),
            (&format!("{modules}/virtio_pci.ko"), &pci),
            (&format!("{modules}/virtio_net.ko"), &net),
        ]);
        let path = write(dir.path(), "linux-image-nonfs.deb", &deb);
        let err = import_kernel(&KernelSource::Deb(path), &options(dir.path())).unwrap_err();
        assert_eq!(err.to_string(), "kernel 6.1.0-9-amd64 has no nfsv3 module");
    }

    #[test]
    fn image_without_init_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image");
        fs::create_dir_all(image.join("sbin")).unwrap();
        let err = import_kernel(
            &KernelSource::ImageRoot(image.clone()),
            &options(dir.path()),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "image root {} has no /sbin/init: nothing to switch_root into",
                image.display()
            )
        );
        std::os::unix::fs::symlink("/lib/systemd/systemd", image.join("sbin/init")).unwrap();
        check_image_root(&image).unwrap();
    }
}
