//! Boot tree builder: turns an image (its own Debian kernel package, or the
//! kernel already inside it) into what a diskless server boots — the
//! kernel, an NFS-root initramfs that loads the image's own NIC and NFS
//! modules in dependency order, the iPXE/pxelinux boot files, and
//! per-client boot configs carrying the kernel command line and NFS mount
//! options.
//!
//! It must never depend on host tools a fresh machine lacks (GNU cpio,
//! kmod, dpkg): archives are read and written here. It never serves
//! anything itself: DHCP and TFTP serve what it produces.

pub mod ar;
pub mod bootcfg;
pub mod compress;
pub mod cpio;
pub mod deb;
pub mod error;
pub mod fuzzing;
pub mod import;
pub mod initramfs;
pub mod kernel;
pub mod layout;
pub mod modinfo;
pub mod mount;
pub mod packages;

pub use bootcfg::{ipxe_script, pxelinux_config, Mac};
pub use error::{BootError, FormatError};
pub use import::{
    import_current_kernel, import_kernel, BootArtifacts, ImportOptions, KernelSource,
};
pub use mount::{kernel_cmdline, nfs_root_mount_options, ClientBoot};
