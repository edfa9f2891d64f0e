//! One lab instance: inputs prepared (client root, kernel and initramfs
//! from the boot crate), the network, a server side, and VMs booted from
//! it. Fields drop in declaration order: server daemons before the
//! namespaces, the namespaces before the scratch directory.

use std::path::{Path, PathBuf};

use ironroot_net::Clock;

use crate::bootsrc::{busybox_deb, deb_cache, import_boot_files, BootFiles};
use crate::error::LabError;
use crate::image::{client_root, ClientImage};
use crate::net::{client_mac, LabNet};
use crate::phases::Phase;
use crate::qemu::{Accel, Firmware, Vm, VmBoot, VmSpec, MEMORY_MIB};
use crate::server::{client_name, mac_text, ServeSpec, ServerKind, ServerSide};

/// Power-on to shell, per VM, under TCG on a loaded 2-core host (a quiet
/// host needs ~10-20 s).
pub const BOOT_SECS_MAX: u64 = 240;
/// The accelerator probe: a direct kernel boot must load its modules.
pub const KVM_PROBE_SECS_MAX: u64 = 45;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    Tcg,
    Kvm,
    /// KVM if a probe boot reaches the initramfs, else TCG.
    Auto,
}

#[derive(Debug, Clone)]
pub struct LabOptions {
    pub server: ServerKind,
    pub accel: AccelChoice,
    pub firmware: Firmware,
    pub lab_cache: PathBuf,
}

/// Inputs that do not depend on the network: built once per process.
pub struct Inputs {
    pub image: ClientImage,
    pub boot: BootFiles,
}

pub fn prepare_inputs(lab_cache: &Path) -> Result<Inputs, LabError> {
    let debs = deb_cache();
    let image = client_root(lab_cache, &busybox_deb(&debs)?)?;
    let boot = import_boot_files(&debs, lab_cache, &image.root)?;
    Ok(Inputs { image, boot })
}

/// Boots the initramfs directly under KVM; KVM counts as working only if
/// the kernel gets as far as loading its modules (on some hosts /dev/kvm
/// opens but guests hang or reset in the firmware). Err says why not.
pub fn probe_kvm<C: Clock>(clock: &C, boot: &BootFiles, scratch: &Path) -> Result<(), String> {
    if let Err(e) = std::fs::File::open("/dev/kvm") {
        return Err(format!("/dev/kvm: {e}"));
    }
    let spec = VmSpec {
        name: "kvm-probe".into(),
        accel: Accel::Kvm,
        firmware: Firmware::Bios,
        memory_mib: MEMORY_MIB,
        boot: VmBoot::Direct {
            kernel: boot.vmlinuz.clone(),
            initrd: boot.initrd.clone(),
            append: format!(
                "console=ttyS0,115200 ironroot.onfail=poweroff panic=-1 {}",
                crate::bootsrc::TCG_KERNEL_ARG
            ),
        },
    };
    let transcript = scratch.join("kvm-probe.log");
    let mut vm = Vm::start(&spec, None, clock.clone(), &transcript).map_err(|e| e.to_string())?;
    let loaded = vm.expect(
        "ironroot: modules loaded",
        "KVM_PROBE_SECS_MAX",
        KVM_PROBE_SECS_MAX,
    );
    loaded
        .map(|_| ())
        .map_err(|e| e.to_string().lines().next().unwrap_or_default().to_string())
}

/// The accelerator and why it was chosen (the report carries both).
pub fn choose_accel<C: Clock>(
    choice: AccelChoice,
    clock: &C,
    boot: &BootFiles,
    scratch: &Path,
) -> (Accel, String) {
    match choice {
        AccelChoice::Tcg => (Accel::Tcg, "tcg asked for (the default)".into()),
        AccelChoice::Kvm => (Accel::Kvm, "kvm asked for, not probed".into()),
        AccelChoice::Auto => match probe_kvm(clock, boot, scratch) {
            Ok(()) => (Accel::Kvm, "kvm: the probe boot loaded its modules".into()),
            Err(why) => (Accel::Tcg, format!("tcg: the kvm probe failed: {why}")),
        },
    }
}

pub struct Lab<C: Clock> {
    pub server: ServerSide,
    pub net: LabNet,
    pub accel: Accel,
    pub firmware: Firmware,
    clock: C,
    /// Scratch: TFTP tree, daemon configs, console transcripts.
    pub run_dir: tempfile::TempDir,
}

impl<C: Clock> Lab<C> {
    pub fn start(
        options: &LabOptions,
        inputs: &Inputs,
        accel: Accel,
        vms: usize,
        clock: C,
    ) -> Result<Lab<C>, LabError> {
        let run_dir = scratch_dir()?;
        let mut net = LabNet::create()?;
        for index in 0..vms {
            net.add_tap(index)?;
        }
        let spec = ServeSpec {
            boot: &inputs.boot,
            image_root: &inputs.image.root,
            run_dir: run_dir.path(),
            vms,
        };
        let server = ServerSide::start(options.server, &mut net, &spec, &clock)?;
        Ok(Lab {
            server,
            net,
            accel,
            firmware: options.firmware,
            clock,
            run_dir,
        })
    }

    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Powers on VM `index` (network boot from its tap).
    pub fn power_on(&self, index: usize) -> Result<Vm<C>, LabError> {
        let spec = VmSpec {
            name: client_name(index),
            accel: self.accel,
            firmware: self.firmware,
            memory_mib: MEMORY_MIB,
            boot: VmBoot::Network {
                tap: self.net.names.tap(index),
                mac: mac_text(client_mac(index)),
                romfile: None,
            },
        };
        let transcript = self
            .run_dir
            .path()
            .join(format!("{}.console.log", spec.name));
        Vm::start(
            &spec,
            Some(&self.net.names.switch_ns),
            self.clock.clone(),
            &transcript,
        )
    }

    /// Waits for the shell, then turns the console's echo and kernel
    /// messages off so command output is only output.
    pub fn wait_shell(&mut self, vm: &mut Vm<C>) -> Result<(), LabError> {
        let shell = vm.wait_phase(Phase::Shell, "BOOT_SECS_MAX", BOOT_SECS_MAX);
        if let Err(e) = shell {
            // A dead daemon explains a stuck boot better than the console.
            self.server.check_alive()?;
            return Err(e);
        }
        // Kernel messages (e.g. the link coming up) would land in the
        // middle of command output: only emergencies reach the console now.
        vm.run(
            "stty -echo; dmesg -n 1",
            "SHELL_COMMAND_SECS_MAX",
            SHELL_COMMAND_SECS_MAX,
        )?;
        Ok(())
    }
}

/// A simple command on a booted VM's shell.
pub const SHELL_COMMAND_SECS_MAX: u64 = 60;

fn scratch_dir() -> Result<tempfile::TempDir, LabError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("ironroot-vm-lab-")
        .tempdir()
        .map_err(LabError::io(std::env::temp_dir()))?;
    // Daemons that drop privileges must be able to enter it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(LabError::io(dir.path()))?;
    Ok(dir)
}
