//! Debian packages fetched with `apt-get download` into a cache directory
//! outside any repository, each next to a `.sha256` file written when it
//! arrived and checked on every later use, so a truncated or altered
//! download is noticed instead of unpacked.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::BootError;

/// Default cache directory.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/ironroot/debs";
/// Longest wait for one `apt-get download` (a kernel is ~70 MB).
pub const APT_DOWNLOAD_SECS_MAX: u64 = 600;
const POLL_INTERVAL_MS: u64 = 100;

/// Packages the boot tree is built from.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
pub const IPXE_PACKAGE: &str = "ipxe";
pub const PXELINUX_PACKAGE: &str = "pxelinux";
pub const SYSLINUX_COMMON_PACKAGE: &str = "syslinux-common";
/// Metapackage whose dependency names the current bookworm kernel.
pub const KERNEL_METAPACKAGE: &str = "linux-image-amd64";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedDeb {
    pub path: PathBuf,
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct DebCache {
    dir: PathBuf,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl DebCache {
    pub fn new(dir: impl Into<PathBuf>) -> DebCache {
        DebCache { dir: dir.into() }
    }

    /// The cached `.deb` of `package` (any version), downloading it first
    /// if there is none.
    pub fn get(&self, package: &str) -> Result<CachedDeb, BootError> {
        if let Some(found) = self.find(package)? {
            return Ok(found);
        }
        self.download(package)?;
        self.find(package)?.ok_or_else(|| BootError::AptDownload {
            package: package.to_string(),
            detail: format!("no {package}_*.deb appeared in {}", self.dir.display()),
        })
    }

    /// The concrete kernel image package the metapackage points at, e.g.
    /// `linux-image-6.1.0-56-amd64`; a cached one is preferred so that no
    /// network is needed once it is there.
    pub fn kernel(&self) -> Result<CachedDeb, BootError> {
        if let Some(found) = self.find_matching(|name| {
            name.starts_with("linux-image-")
                && name.ends_with("-amd64")
                && name.contains('.')
                && !name.contains("-cloud-")
                && !name.contains("-rt-")
        })? {
            return Ok(found);
        }
        let package = kernel_package_name()?;
        self.get(&package)
    }

    fn find(&self, package: &str) -> Result<Option<CachedDeb>, BootError> {
        self.find_matching(|name| name == package)
    }

    /// Newest (by file name order) cached `.deb` whose package name matches.
    fn find_matching(
        &self,
        matches: impl Fn(&str) -> bool,
    ) -> Result<Option<CachedDeb>, BootError> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Ok(None);
        };
        let mut candidates: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.ends_with(".deb") && name.split('_').next().is_some_and(&matches)
            })
            .collect();
        candidates.sort();
        match candidates.pop() {
            Some(path) => self.verify(path).map(Some),
            None => Ok(None),
        }
    }

    fn verify(&self, path: PathBuf) -> Result<CachedDeb, BootError> {
        let bytes = fs::read(&path).map_err(BootError::io(&path))?;
        let sha256 = sha256_hex(&bytes);
        let sidecar = path.with_extension("deb.sha256");
        match fs::read_to_string(&sidecar) {
            Ok(recorded) if recorded.trim() != sha256 => Err(BootError::InvalidInput {
                what: "cached package",
                value: path.display().to_string(),
                reason: "its SHA-256 differs from the one recorded at download",
            }),
            Ok(_) => Ok(CachedDeb { path, sha256 }),
            Err(_) => {
                fs::write(&sidecar, format!("{sha256}\n")).map_err(BootError::io(&sidecar))?;
                Ok(CachedDeb { path, sha256 })
            }
        }
    }

    /// Download into a private directory, then rename into the cache: a
    /// concurrent reader (another test thread or process) never sees, and
    /// never records the checksum of, a half-written package.
    fn download(&self, package: &str) -> Result<(), BootError> {
        static DOWNLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let serial = DOWNLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let private = self
            .dir
            .join(format!(".download-{}-{serial}", std::process::id()));
        fs::create_dir_all(&private).map_err(BootError::io(&private))?;
        let result = self.download_into(package, &private).and_then(|()| {
            for entry in fs::read_dir(&private)
                .map_err(BootError::io(&private))?
                .flatten()
            {
                let target = self.dir.join(entry.file_name());
                fs::rename(entry.path(), &target).map_err(BootError::io(&target))?;
            }
            Ok(())
        });
        let _ = fs::remove_dir_all(&private);
        result
    }

    fn download_into(&self, package: &str, dir: &Path) -> Result<(), BootError> {
        let failed = |detail: String| BootError::AptDownload {
            package: package.to_string(),
            detail,
        };
        let mut child = Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("cannot run apt-get: {e}")))?;
        let polls_max = APT_DOWNLOAD_SECS_MAX * 1000 / POLL_INTERVAL_MS;
        for _ in 0..polls_max {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    let output = child.wait_with_output().ok();
                    let stderr = output
                        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
                        .unwrap_or_default();
                    return Err(failed(format!("{status}: {stderr}")));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS)),
                Err(e) => return Err(failed(e.to_string())),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(failed(format!("no result after {APT_DOWNLOAD_SECS_MAX} s")))
    }
}

/// `linux-image-6.1.0-56-amd64` from `apt-cache depends linux-image-amd64`.
fn kernel_package_name() -> Result<String, BootError> {
    let failed = |detail: String| BootError::AptDownload {
        package: KERNEL_METAPACKAGE.to_string(),
        detail,
    };
    let output = Command::new("apt-cache")
        .args(["depends", KERNEL_METAPACKAGE])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(format!("cannot run apt-cache: {e}")))?;
    parse_kernel_dependency(&String::from_utf8_lossy(&output.stdout)).ok_or_else(|| {
        failed("apt-cache names no linux-image-* dependency (apt-get update?)".into())
    })
}

fn parse_kernel_dependency(depends: &str) -> Option<String> {
    depends.lines().find_map(|line| {
        let name = line.trim().strip_prefix("Depends:")?.trim();
        (name.starts_with("linux-image-") && !name.contains(' ')).then(|| name.to_string())
    })
}

/// Whether a test that needs a downloaded package must fail (CI) rather
/// than skip when it cannot get it.
pub fn peers_required() -> bool {
    std::env::var("IRONROOT_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// The cache directory: `IRONROOT_DEB_CACHE` or the default.
pub fn default_cache() -> DebCache {
    DebCache::new(
        std::env::var_os("IRONROOT_DEB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(DEFAULT_CACHE_DIR).to_path_buf()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dependency_is_parsed() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            parse_kernel_dependency(text).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(parse_kernel_dependency("nothing"), None);
    }

    #[test]
    fn cache_checks_recorded_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DebCache::new(dir.path());
        let deb = dir.path().join("busybox-static_1.35_amd64.deb");
        fs::write(&deb, b"first").unwrap();
        let found = cache.get("busybox-static").unwrap();
        assert_eq!(found.sha256, sha256_hex(b"first"));
        fs::write(&deb, b"changed").unwrap();
        let err = cache.get("busybox-static").unwrap_err();
        assert!(err.to_string().contains("differs"), "{err}");
    }
}
