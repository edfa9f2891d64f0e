//! The boot tree: the directory the TFTP server serves (paths confined to
//! it), laid out as
//!
//! ```text
//! pxelinux.0                 pxelinux: BIOS PXE loader        (Debian pxelinux)
//! ldlinux.c32                its core module, next to it      (Debian syslinux-common)
//! ipxe/undionly.kpxe         iPXE for BIOS PXE ROMs           (Debian ipxe)
//! ipxe/ipxe.efi              iPXE for UEFI, own NIC drivers   (Debian ipxe)
//! ipxe/snponly.efi           iPXE for UEFI, firmware's driver (Debian ipxe)
//! ipxe/clients/<mac>.ipxe    per-client script   (generated on request, not stored)
//! pxelinux.cfg/01-<mac>      per-client config   (generated on request, not stored)
//! images/<image>/vmlinuz     the image's kernel
//! images/<image>/initrd.img  our NFS-root initramfs (gzip'd newc cpio)
//! images/<image>/modules.txt modules in load order
//! images/<image>/SHA256SUMS  `sha256sum -c` format, for the two above
//! SHA256SUMS                 the boot loaders', same format
//! ```
//!
//! Every file is world-readable: TFTP servers that drop privileges need it.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::deb::DebPackage;
use crate::error::BootError;
use crate::packages::{
    sha256_hex, DebCache, IPXE_PACKAGE, PXELINUX_PACKAGE, SYSLINUX_COMMON_PACKAGE,
};

/// Image names become path components and command-line words.
pub fn check_image_name(image: &str) -> Result<(), BootError> {
    let ok = !image.is_empty()
        && image.len() <= 64
        && !image.starts_with('.')
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(BootError::InvalidInput {
            what: "image name",
            value: image.to_string(),
            reason: "1 to 64 of ASCII letters, digits, '.', '_', '-', not starting with '.'",
        })
    }
}

pub fn image_dir(image: &str) -> String {
    format!("images/{image}")
}

pub fn kernel_path(image: &str) -> String {
    format!("images/{image}/vmlinuz")
}

pub fn initramfs_path(image: &str) -> String {
    format!("images/{image}/initrd.img")
}

/// (tree path, package, path inside the package)
pub const BOOT_LOADERS: [(&str, &str, &str); 5] = [
    (
        "pxelinux.0",
        PXELINUX_PACKAGE,
        "usr/lib/PXELINUX/pxelinux.0",
    ),
    (
        "ldlinux.c32",
        SYSLINUX_COMMON_PACKAGE,
        "usr/lib/syslinux/modules/bios/ldlinux.c32",
    ),
    (
        "ipxe/undionly.kpxe",
        IPXE_PACKAGE,
        "usr/lib/ipxe/undionly.kpxe",
    ),
    // /usr/lib/ipxe/ipxe.efi is a symlink to this file.
    ("ipxe/ipxe.efi", IPXE_PACKAGE, "boot/ipxe.efi"),
    ("ipxe/snponly.efi", IPXE_PACKAGE, "usr/lib/ipxe/snponly.efi"),
];

/// Writes `files` (tree path -> bytes) under `tree`, world-readable, and a
/// `SHA256SUMS` for them in `sums_dir`; returns path -> SHA-256.
pub fn write_files(
    tree: &Path,
    sums_dir: &str,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<BTreeMap<String, String>, BootError> {
    use std::os::unix::fs::PermissionsExt;
    let mut sums = BTreeMap::new();
    let mut listing = String::new();
    for (path, bytes) in files {
        let target = tree.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(BootError::io(parent))?;
        }
        // Write then rename, so a TFTP client never reads half a file.
        let partial = target.with_extension("partial");
        fs::write(&partial, bytes).map_err(BootError::io(&partial))?;
        fs::set_permissions(&partial, fs::Permissions::from_mode(0o644))
            .map_err(BootError::io(&partial))?;
        fs::rename(&partial, &target).map_err(BootError::io(&target))?;
        let sha256 = sha256_hex(bytes);
        let relative = path
            .strip_prefix(sums_dir)
            .map(|p| p.trim_start_matches('/'))
            .unwrap_or(path);
        listing.push_str(&format!("{sha256}  {relative}\n"));
        sums.insert(path.clone(), sha256);
    }
    let sums_path = tree.join(sums_dir).join("SHA256SUMS");
    fs::write(&sums_path, listing).map_err(BootError::io(&sums_path))?;
    Ok(sums)
}

/// Extracts the boot loaders from Debian's packages (downloaded into
/// `cache` when missing) into `tree`.
pub fn install_boot_loaders(
    cache: &DebCache,
    tree: &Path,
) -> Result<BTreeMap<String, String>, BootError> {
    let mut files = BTreeMap::new();
    for package in [PXELINUX_PACKAGE, SYSLINUX_COMMON_PACKAGE, IPXE_PACKAGE] {
        let wanted: Vec<_> = BOOT_LOADERS
            .iter()
            .filter(|(_, p, _)| *p == package)
            .collect();
        let deb = DebPackage::open(&cache.get(package)?.path)?;
        let inner: Vec<&str> = wanted.iter().map(|(_, _, inner)| *inner).collect();
        let mut found = deb.read_files(&inner)?;
        for (tree_path, _, inner) in wanted {
            if let Some(bytes) = found.remove(*inner) {
                files.insert(tree_path.to_string(), bytes);
            }
        }
    }
    write_files(tree, "", &files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_cannot_climb() {
        for good in ["bookworm-web", "img_2.1"] {
            check_image_name(good).unwrap();
        }
        for bad in ["", "..", "../etc", "a/b", ".hidden", "a b"] {
            assert!(check_image_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn files_get_sums_relative_to_their_dir() {
        let tree = tempfile::tempdir().unwrap();
        let mut files = BTreeMap::new();
        files.insert("images/x/vmlinuz".to_string(), b"k".to_vec());
        let sums = write_files(tree.path(), "images/x", &files).unwrap();
        let listing = fs::read_to_string(tree.path().join("images/x/SHA256SUMS")).unwrap();
        assert_eq!(listing, format!("{}  vmlinuz\n", sums["images/x/vmlinuz"]));
    }
}
