//! The client root image: busybox-static from Debian's package, applets as
//! symlinks, GNU `rm` with its loader and libc copied from the host (busybox
//! `rm` refuses `--no-preserve-root`, and the lab wants the real thing), an
//! `/sbin/init` that announces itself and runs a shell on the console.
//! Built once per content checksum into a cache directory outside the
//! repository; never modified after it is complete.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::LabError;
use crate::host::{run_bounded, COMMAND_SECS_MAX};

/// Default cache of built roots and boot files.
pub const DEFAULT_LAB_CACHE: &str = "/var/cache/ironroot/lab";
/// Bumped when the layout below changes, so old cached roots are not reused.
const IMAGE_LAYOUT_VERSION: &str = "vm-lab image v1";
/// The host's GNU rm (Debian coreutils).
pub const HOST_RM: &str = "/usr/bin/rm";
/// Where the image carries GNU rm; the lab calls it by this full path.
pub const IMAGE_GNU_RM: &str = "/usr/bin/rm";
/// Printed by the image's init just before the shell starts.
pub const SHELL_READY_MARKER: &str = "ironroot-lab: shell ready";
/// Files walked when checksumming a tree.
pub const TREE_FILES_MAX: usize = 50_000;
/// Libraries GNU rm may need.
const LIBRARIES_MAX: usize = 16;

const INIT_SCRIPT: &str = r#"#!/bin/sh
# ironroot lab client init: announce, then a shell on the console forever.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root PS1='lab# '
[ -r /run/ironroot/boot ] && . /run/ironroot/boot
[ -n "$CLIENT" ] && hostname "$CLIENT"
echo "ironroot-lab: init on $(uname -r), client ${CLIENT:-?}"
echo "ironroot-lab: shell ready"
while :; do
	setsid cttyhack /bin/sh
	echo "ironroot-lab: shell exited (status $?), restarting"
done
"#;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientImage {
    pub root: PathBuf,
    /// SHA-256 of everything the root is made of.
    pub key: String,
}

/// Library paths from `ldd` output, as the program names them (the path
/// the dynamic loader will open inside the image).
pub fn parse_ldd(output: &str) -> Vec<PathBuf> {
    output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, target)) => target.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

struct Ingredients {
    busybox: Vec<u8>,
    /// Image path -> bytes, for GNU rm and what it links.
    host_files: BTreeMap<String, Vec<u8>>,
}

fn ingredients(busybox_deb: &Path) -> Result<Ingredients, LabError> {
    let deb = ironroot_boot::deb::DebPackage::open(busybox_deb)?;
    let busybox = deb
        .read_files(&["bin/busybox"])?
        .remove("bin/busybox")
        .ok_or_else(|| LabError::Io {
            path: busybox_deb.to_path_buf(),
            source: std::io::Error::other("no bin/busybox in the package"),
        })?;
    let ldd = run_bounded(Command::new("ldd").arg(HOST_RM), "ldd", COMMAND_SECS_MAX)?;
    let libraries = parse_ldd(&ldd);
    if libraries.len() > LIBRARIES_MAX {
        return Err(LabError::LimitExceeded {
            limit: "LIBRARIES_MAX",
            value: libraries.len(),
            max: LIBRARIES_MAX,
        });
    }
    let mut host_files = BTreeMap::new();
    host_files.insert(
        IMAGE_GNU_RM.trim_start_matches('/').to_string(),
        fs::read(HOST_RM).map_err(LabError::io(HOST_RM))?,
    );
    for library in libraries {
        // Read through symlinks, store under the name the loader uses.
        let bytes = fs::read(&library).map_err(LabError::io(&library))?;
        let name = library
            .to_string_lossy()
            .trim_start_matches('/')
            .to_string();
        host_files.insert(name, bytes);
    }
    Ok(Ingredients {
        busybox,
        host_files,
    })
}

fn image_key(parts: &Ingredients) -> String {
    let mut hash = Sha256::new();
    hash.update(IMAGE_LAYOUT_VERSION);
    hash.update(INIT_SCRIPT);
    hash.update(Sha256::digest(&parts.busybox));
    for (path, bytes) in &parts.host_files {
        hash.update(path);
        hash.update(Sha256::digest(bytes));
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The cached root for these ingredients, built first if absent.
pub fn client_root(cache: &Path, busybox_deb: &Path) -> Result<ClientImage, LabError> {
    let parts = ingredients(busybox_deb)?;
    let key = image_key(&parts);
    let root = cache.join(format!("root-{}", &key[..16]));
    let complete = cache.join(format!("root-{}.complete", &key[..16]));
    if complete.exists() && root.is_dir() {
        return Ok(ClientImage { root, key });
    }
    fs::create_dir_all(cache).map_err(LabError::io(cache))?;
    let partial = cache.join(format!(
        "root-{}.partial-{}",
        &key[..16],
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&partial);
    write_root(&partial, &parts)?;
    if complete.exists() {
        // Another lab finished the same root meanwhile and may be serving
        // it: keep theirs.
        let _ = fs::remove_dir_all(&partial);
        return Ok(ClientImage { root, key });
    }
    // A root without its marker is a leftover of an interrupted build.
    let _ = fs::remove_dir_all(&root);
    fs::rename(&partial, &root).map_err(LabError::io(&root))?;
    fs::write(&complete, format!("{key}\n")).map_err(LabError::io(&complete))?;
    Ok(ClientImage { root, key })
}

fn write_file(root: &Path, path: &str, bytes: &[u8], mode: u32) -> Result<(), LabError> {
    let target = root.join(path);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(LabError::io(parent))?;
    }
    fs::write(&target, bytes).map_err(LabError::io(&target))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(LabError::io(&target))
}

fn write_root(root: &Path, parts: &Ingredients) -> Result<(), LabError> {
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "proc", "sys", "dev", "run", "var",
        "tmp", "newroot", "mnt", "home",
    ] {
        let path = root.join(dir);
        fs::create_dir_all(&path).map_err(LabError::io(&path))?;
    }
    write_file(root, "bin/busybox", &parts.busybox, 0o755)?;
    for (path, bytes) in &parts.host_files {
        write_file(root, path, bytes, 0o755)?;
    }
    let listing = run_bounded(
        Command::new(root.join("bin/busybox")).arg("--list-full"),
        "busybox_list",
        COMMAND_SECS_MAX,
    )?;
    for applet in listing.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let link = root.join(applet);
        if applet == "sbin/init" || fs::symlink_metadata(&link).is_ok() {
            continue;
        }
        let depth = applet.matches('/').count();
        let target = format!("{}bin/busybox", "../".repeat(depth));
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(LabError::io(parent))?;
        }
        symlink(&target, &link).map_err(LabError::io(&link))?;
    }
    write_file(root, "sbin/init", INIT_SCRIPT.as_bytes(), 0o755)?;
    write_file(
        root,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n",
        0o644,
    )?;
    write_file(root, "etc/group", b"root:x:0:\n", 0o644)?;
    write_file(root, "etc/hostname", b"lab-client\n", 0o644)?;
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))
        .map_err(LabError::io(root.join("tmp")))?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).map_err(LabError::io(root))
}

/// The same digest the client computes with
/// `cd / && find . -xdev -type f | sort | xargs sha256sum | sha256sum`:
/// regular files only (not symlinks), `./`-relative paths in byte order.
pub fn tree_checksum(root: &Path) -> Result<String, LabError> {
    let mut files = Vec::new();
    collect_files(root, root, &mut files)?;
    files.sort();
    let mut listing = Sha256::new();
    for rel in &files {
        let path = root.join(rel.trim_start_matches("./"));
        let bytes = fs::read(&path).map_err(LabError::io(&path))?;
        let digest: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        listing.update(format!("{digest}  {rel}\n"));
    }
    Ok(listing
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn collect_files(root: &Path, dir: &Path, files: &mut Vec<String>) -> Result<(), LabError> {
    let entries = fs::read_dir(dir).map_err(LabError::io(dir))?;
    for entry in entries {
        let entry = entry.map_err(LabError::io(dir))?;
        let kind = entry.file_type().map_err(LabError::io(entry.path()))?;
        if kind.is_dir() {
            collect_files(root, &entry.path(), files)?;
        } else if kind.is_file() {
            if files.len() >= TREE_FILES_MAX {
                return Err(LabError::LimitExceeded {
                    limit: "TREE_FILES_MAX",
                    value: files.len() + 1,
                    max: TREE_FILES_MAX,
                });
            }
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap_or(&entry.path())
                .to_path_buf();
            files.push(format!("./{}", rel.to_string_lossy()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_loader_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn tree_checksum_matches_sha256sum_listing() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("b")).unwrap();
        fs::write(dir.path().join("b/x"), b"x").unwrap();
        fs::write(dir.path().join("a"), b"").unwrap();
        symlink("a", dir.path().join("link")).unwrap();
        // printf '' | sha256sum; printf x | sha256sum, listed as sha256sum prints.
        let listing = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  ./a\n\
                       2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881  ./b/x\n";
        let expected: String = Sha256::digest(listing)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(tree_checksum(dir.path()).unwrap(), expected);
    }
}
