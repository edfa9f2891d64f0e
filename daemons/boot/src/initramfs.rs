//! The NFS-root initramfs: busybox-static, the planned modules
//! (uncompressed, loaded by path with busybox `insmod` in plan order), the
//! `/init` script and the udhcpc event script, packed as gzip'd newc cpio.

use crate::cpio::{CpioBuilder, CpioError};
use crate::kernel::PlannedModule;
use crate::mount::nfs_root_mount_options;

const INIT_TEMPLATE: &str = include_str!("init.sh");
const UDHCPC_SCRIPT: &str = include_str!("udhcpc.sh");

/// Bounded retries the /init script falls back to when the command line
/// says nothing. 30 mounts 2 s apart outlast a failover several times over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitLimits {
    pub mount_tries_max: u32,
    pub mount_delay_secs: u32,
    pub dhcp_tries_max: u32,
}

impl Default for InitLimits {
    fn default() -> InitLimits {
        InitLimits {
            mount_tries_max: 30,
            mount_delay_secs: 2,
            dhcp_tries_max: 10,
        }
    }
}

/// The `/init` script for a kernel version and module count.
pub fn init_script(kernel_version: &str, module_count: usize, limits: &InitLimits) -> String {
    INIT_TEMPLATE
        .replace("@KERNEL_VERSION@", kernel_version)
        .replace("@NFS_OPTIONS@", &nfs_root_mount_options())
        .replace("@MOUNT_TRIES@", &limits.mount_tries_max.to_string())
        .replace("@MOUNT_DELAY_SECS@", &limits.mount_delay_secs.to_string())
        .replace("@DHCP_TRIES@", &limits.dhcp_tries_max.to_string())
        .replace("@MODULE_COUNT@", &module_count.to_string())
}

/// The uncompressed cpio archive.
pub fn initramfs_cpio(
    kernel_version: &str,
    busybox: &[u8],
    modules: &[PlannedModule],
    limits: &InitLimits,
) -> Result<CpioBuilder, CpioError> {
    let mut cpio = CpioBuilder::new();
    for dir in ["dev", "proc", "sys", "run", "tmp", "newroot", "sbin"] {
        cpio.dir(dir, 0o755)?;
    }
    // The kernel opens /dev/console for init's stdio before /init can mount
    // devtmpfs: without this node early output is lost.
    cpio.char_device("dev/console", 5, 1)?;
    cpio.file("bin/busybox", busybox.to_vec(), 0o755)?;
    cpio.symlink("bin/sh", "busybox")?;
    let mut list = String::new();
    for module in modules {
        let name = &module.info.name;
        cpio.file(
            &format!("lib/modules/{name}.ko"),
            module.object.clone(),
            0o644,
        )?;
        list.push_str(name);
        list.push('\n');
    }
    cpio.file("etc/ironroot/modules", list.into_bytes(), 0o644)?;
    cpio.file(
        "etc/ironroot/udhcpc.script",
        UDHCPC_SCRIPT.as_bytes().to_vec(),
        0o755,
    )?;
    let init = init_script(kernel_version, modules.len(), limits);
    cpio.file("init", init.into_bytes(), 0o755)?;
    Ok(cpio)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_script_has_every_step_and_no_placeholder() {
        let script = init_script("6.1.0-56-amd64", 16, &InitLimits::default());
        assert!(!script.contains('@'), "unfilled placeholder");
        for step in [
            "modules loaded",
            "link up",
            "address:",
            "mount: root mounted",
            "switch root",
            "exec switch_root /newroot /sbin/init",
            "ro,vers=3,proto=tcp,hard,nolock",
            "MOUNT_TRIES=30",
        ] {
            assert!(script.contains(step), "missing {step:?}");
        }
    }

    #[test]
    fn archive_lists_modules_in_plan_order() {
        let module = |name: &str| PlannedModule {
            info: crate::modinfo::ModInfo {
                name: name.into(),
                ..Default::default()
            },
            source: format!("kernel/{name}.ko.xz").into(),
            object: b"\x7fELF".to_vec(),
        };
        let cpio = initramfs_cpio(
            "6.1.0-test",
            b"busybox",
            &[module("sunrpc"), module("nfs")],
            &InitLimits::default(),
        )
        .unwrap();
        let bytes = cpio.finish(0);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("lib/modules/sunrpc.ko\0"));
        assert!(text.contains("sunrpc\nnfs\n"));
        assert!(text.contains("dev/console\0"));
    }
}
