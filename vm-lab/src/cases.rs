//! The lab's cases. Each boots VMs from a server side and records checks
//! and phase timings; a case that needs what a server side cannot offer is
//! refused up front, naming why.

use std::collections::BTreeMap;

use ironroot_net::Clock;

use crate::error::LabError;
use crate::image::{tree_checksum, IMAGE_GNU_RM};
use crate::lab::{Inputs, Lab, LabOptions, SHELL_COMMAND_SECS_MAX};
use crate::qemu::{Accel, Firmware, Vm};
use crate::report::{CaseReport, Outcome, RunRecord, VmRecord};
use crate::server::ServerKind;

/// `rm -rf /` walks /proc and /sys (tens of thousands of entries) under TCG.
pub const RM_SECS_MAX: u64 = 600;
/// Checksumming the whole root over NFS under TCG.
pub const CHECKSUM_SECS_MAX: u64 = 300;
/// VMs in one boot storm.
pub const STORM_VMS_MAX: usize = 16;
pub const STORM_VMS_DEFAULT: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Case {
    BootReadonly,
    Exceptions,
    FailoverUnderLoad,
    LiveUpdate,
    BootStorm,
    /// Baseline only, for the benchmark: its single NFS server restarted.
    ServerRestart,
}

pub const CASES: [Case; 6] = [
    Case::BootReadonly,
    Case::Exceptions,
    Case::FailoverUnderLoad,
    Case::LiveUpdate,
    Case::BootStorm,
    Case::ServerRestart,
];

impl Case {
    pub fn name(self) -> &'static str {
        match self {
            Case::BootReadonly => "boot-readonly",
            Case::Exceptions => "exceptions",
            Case::FailoverUnderLoad => "failover-under-load",
            Case::LiveUpdate => "live-update",
            Case::BootStorm => "boot-storm",
            Case::ServerRestart => "server-restart",
        }
    }

    pub fn parse(text: &str) -> Option<Case> {
        CASES.into_iter().find(|c| c.name() == text)
    }

    /// Why this case cannot run with `server`, if it cannot.
    pub fn refusal(self, server: ServerKind) -> Option<&'static str> {
        match (self, server) {
            (Case::BootReadonly | Case::BootStorm | Case::ServerRestart, ServerKind::Baseline) => {
                None
            }
            (Case::ServerRestart, ServerKind::Ironroot) => Some(
                "the baseline's stand-in for a failover; failover-under-load \
                 kills ironrootd with -9 under the same load",
            ),
            (Case::Exceptions, ServerKind::Baseline) => Some(
                "per-client exception files need per-client views of one image; \
                 ganesha exports one tree to every client",
            ),
            (Case::FailoverUnderLoad, ServerKind::Baseline) => Some(
                "failover needs two replicating nodes moving a VIP; \
                 the baseline is one dnsmasq and one ganesha",
            ),
            (Case::LiveUpdate, ServerKind::Baseline) => Some(
                "publishing a new image generation needs ironroot's store; \
                 the baseline exports a fixed tree",
            ),
            (_, ServerKind::Ironroot) => None,
        }
    }

    /// VMs the case boots.
    pub fn vms(self, storm_vms: usize) -> usize {
        match self {
            Case::BootStorm => storm_vms.clamp(1, STORM_VMS_MAX),
            Case::Exceptions => 2,
            _ => 1,
        }
    }
}

/// Everything a case run needs besides the lab itself.
pub struct CaseRun<'a> {
    pub case: Case,
    pub options: &'a LabOptions,
    pub inputs: &'a Inputs,
    pub accel: Accel,
    pub accel_note: String,
    pub runs: usize,
    pub storm_vms: usize,
    pub command: String,
}

pub fn run_case<C: Clock>(run: &CaseRun, clock: &C) -> CaseReport {
    let mut report = CaseReport {
        case: run.case.name(),
        server: run.options.server.name(),
        accel: run.accel.name(),
        accel_note: run.accel_note.clone(),
        firmware: match run.options.firmware {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        },
        kernel_version: run.inputs.boot.kernel_version.clone(),
        command: run.command.clone(),
        runs: Vec::new(),
        median_ms: BTreeMap::new(),
        median_timings_ms: BTreeMap::new(),
        outcome: Outcome::Failed,
    };
    for index in 1..=run.runs.max(1) {
        let mut record = RunRecord::new(index);
        if let Err(e) = run.options.server.check_available() {
            record.error = Some(e.to_string());
            record.outcome = Outcome::Refused;
            report.runs.push(record);
            break;
        }
        if let Some(reason) = run.case.refusal(run.options.server) {
            record.error = Some(
                LabError::CaseRefused {
                    case: run.case.name(),
                    server: run.options.server.name(),
                    reason,
                }
                .to_string(),
            );
            record.outcome = Outcome::Refused;
            report.runs.push(record);
            break;
        }
        let lab = Lab::start(
            run.options,
            run.inputs,
            run.accel,
            run.case.vms(run.storm_vms),
            clock.clone(),
        );
        match lab {
            Ok(mut lab) => {
                for (step, ms) in lab.server.setup_ms() {
                    record.timings_ms.insert(format!("setup-{step}"), ms);
                }
                if let Err(e) = run_once(run, &mut lab, &mut record) {
                    let logs = lab.server.logs();
                    record.error = Some(format!("{e}\n--- server logs ---\n{logs}"));
                }
            }
            Err(e @ LabError::ServerUnavailable { .. }) => {
                record.error = Some(e.to_string());
                record.outcome = Outcome::Refused;
                report.runs.push(record);
                break;
            }
            Err(e) => record.error = Some(e.to_string()),
        }
        record.finish();
        report.runs.push(record);
    }
    report.summarise();
    report
}

fn run_once<C: Clock>(
    run: &CaseRun,
    lab: &mut Lab<C>,
    record: &mut RunRecord,
) -> Result<(), LabError> {
    match run.case {
        Case::BootReadonly => with_vm(lab, record, 0, boot_readonly),
        Case::BootStorm => boot_storm(lab, record, run.case.vms(run.storm_vms)),
        Case::Exceptions => crate::live::exceptions(lab, record),
        Case::FailoverUnderLoad => with_vm(lab, record, 0, crate::live::failover_under_load),
        Case::LiveUpdate => crate::live::live_update(lab, record),
        Case::ServerRestart => with_vm(lab, record, 0, crate::live::server_restart),
    }
}

/// What a case does with a VM that reached its shell.
pub(crate) type CaseBody<C> = fn(&mut Lab<C>, &mut Vm<C>, &mut RunRecord) -> Result<(), LabError>;

/// Powers on VM `index`, waits for its shell, runs `body`; the VM's phases
/// are recorded whatever happens.
pub(crate) fn with_vm<C: Clock>(
    lab: &mut Lab<C>,
    record: &mut RunRecord,
    index: usize,
    body: CaseBody<C>,
) -> Result<(), LabError> {
    let mut vm = lab.power_on(index)?;
    let result = lab
        .wait_shell(&mut vm)
        .and_then(|()| body(lab, &mut vm, record));
    record.vms.push(VmRecord {
        vm: vm.name.clone(),
        phases: vm.phases.events.clone(),
    });
    result
}

/// (device, mount point, type, options) from /proc/mounts.
pub fn parse_mounts(text: &str) -> Vec<(String, String, String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            Some((
                f.next()?.to_string(),
                f.next()?.to_string(),
                f.next()?.to_string(),
                f.next()?.to_string(),
            ))
        })
        .collect()
}

fn mount_of<'m>(
    mounts: &'m [(String, String, String, String)],
    point: &str,
) -> Option<&'m (String, String, String, String)> {
    mounts.iter().rev().find(|m| m.1 == point)
}

const CLIENT_CHECKSUM: &str = "(cd / && find . -xdev -type f | sort | xargs sha256sum | sha256sum)";

fn client_checksum<C: Clock>(vm: &mut Vm<C>) -> Result<String, LabError> {
    let (status, out) = vm.run(CLIENT_CHECKSUM, "CHECKSUM_SECS_MAX", CHECKSUM_SECS_MAX)?;
    let sum = out
        .split_whitespace()
        .find(|w| w.len() == 64)
        .unwrap_or_default();
    if status != 0 || sum.is_empty() {
        return Err(LabError::Console {
            vm: vm.name.clone(),
            command: CLIENT_CHECKSUM.into(),
            detail: format!("status {status}, output {out:?}"),
        });
    }
    Ok(sum.to_string())
}

fn boot_readonly<C: Clock>(
    lab: &mut Lab<C>,
    vm: &mut Vm<C>,
    record: &mut RunRecord,
) -> Result<(), LabError> {
    check_mounts(vm, record)?;
    let served = lab.server.served_root();
    let server_before = tree_checksum(&served)?;
    let store_before = lab.server.fingerprint()?;
    let client_before = client_checksum(vm)?;
    record.check(
        "client sees the server's files",
        client_before == server_before,
        format!("client {client_before}, server {server_before}"),
    );
    check_rm(vm, record)?;
    let client_after = client_checksum(vm)?;
    let store_after = lab.server.fingerprint()?;
    record.check(
        "files intact on the client",
        client_after == client_before,
        format!("before {client_before}, after {client_after}"),
    );
    record.check(
        "files intact on the server",
        store_after == store_before,
        format!("before {store_before}, after {store_after}"),
    );
    check_remount_write(lab, vm, &served, record)
}

/// A short command's output (status ignored: the output is checked).
pub(crate) fn output<C: Clock>(vm: &mut Vm<C>, command: &str) -> Result<String, LabError> {
    let (_, out) = vm.run(command, "SHELL_COMMAND_SECS_MAX", SHELL_COMMAND_SECS_MAX)?;
    Ok(out)
}

fn check_mounts<C: Clock>(vm: &mut Vm<C>, record: &mut RunRecord) -> Result<(), LabError> {
    let mounts = parse_mounts(&output(vm, "cat /proc/mounts")?);
    let root = mount_of(&mounts, "/");
    let root_ok = root.is_some_and(|m| m.2 == "nfs" && m.3.split(',').next() == Some("ro"));
    record.check("root is NFS read-only", root_ok, format!("{root:?}"));
    for (point, name) in [("/var", "/var is tmpfs"), ("/tmp", "/tmp is tmpfs")] {
        let m = mount_of(&mounts, point);
        record.check(name, m.is_some_and(|m| m.2 == "tmpfs"), format!("{m:?}"));
    }
    Ok(())
}

/// GNU `rm -rf / --no-preserve-root` as root must fail on the root.
fn check_rm<C: Clock>(vm: &mut Vm<C>, record: &mut RunRecord) -> Result<(), LabError> {
    // The error flood goes to a file: printing it on a TCG serial console
    // costs seconds. rm empties /tmp too, so the file is read back through
    // the descriptor the shell keeps open.
    output(vm, "exec 3>/tmp/rm.log")?;
    let rm = format!("{IMAGE_GNU_RM} -rf --no-preserve-root / >&3 2>&3");
    let (rm_status, _) = vm.run(&rm, "RM_SECS_MAX", RM_SECS_MAX)?;
    let count = output(vm, "grep -c 'Read-only file system' /proc/self/fd/3")?;
    let sample = output(vm, "grep -m 2 'Read-only file system' /proc/self/fd/3")?;
    let rofs_lines: u64 = count.trim().parse().unwrap_or(0);
    record.check(
        "rm -rf / fails with Read-only file system",
        rm_status != 0 && rofs_lines > 0,
        format!("GNU rm exit status {rm_status}, {rofs_lines} EROFS lines, e.g. {sample}"),
    );
    Ok(())
}

/// Remounting rw on the client is allowed (the kernel's business); the
/// write after it must still fail because the server refuses it.
fn check_remount_write<C: Clock>(
    lab: &mut Lab<C>,
    vm: &mut Vm<C>,
    served: &std::path::Path,
    record: &mut RunRecord,
) -> Result<(), LabError> {
    let short = SHELL_COMMAND_SECS_MAX;
    let store_before = lab.server.fingerprint()?;
    let (remount_status, remount_out) = vm.run(
        "mount -o remount,rw / 2>&1",
        "SHELL_COMMAND_SECS_MAX",
        short,
    )?;
    let probe = "/ironroot-lab-write-probe";
    let write = format!("echo probe > {probe} 2>&1");
    let (write_status, write_out) = vm.run(&write, "SHELL_COMMAND_SECS_MAX", short)?;
    let mounts_after = output(vm, "cat /proc/mounts")?;
    let root_after = mount_of(&parse_mounts(&mounts_after), "/").map(|m| m.3.clone());
    let probe_on_server = served.join(probe.trim_start_matches('/')).exists()
        || lab.server.fingerprint()? != store_before;
    record.check(
        "write after remount rw fails (server refuses)",
        write_status != 0 && write_out.contains("Read-only file system") && !probe_on_server,
        format!(
            "remount status {remount_status} {remount_out:?}, root options now {root_after:?}; \
             write status {write_status} {write_out:?}; probe on server: {probe_on_server}"
        ),
    );
    Ok(())
}

pub(crate) fn boot_storm<C: Clock>(
    lab: &mut Lab<C>,
    record: &mut RunRecord,
    vms: usize,
) -> Result<(), LabError> {
    let mut running = Vec::new();
    for index in 0..vms {
        running.push(lab.power_on(index)?);
    }
    let mut first_error = None;
    for vm in &mut running {
        let result = lab.wait_shell(vm).and_then(|()| {
            let (_, text) = vm.run(
                "cat /proc/mounts",
                "SHELL_COMMAND_SECS_MAX",
                SHELL_COMMAND_SECS_MAX,
            )?;
            Ok(mount_of(&parse_mounts(&text), "/").is_some_and(|m| m.2 == "nfs"))
        });
        let detail = match &result {
            Ok(true) => "shell on an NFS root".to_string(),
            Ok(false) => "shell, but / is not NFS".to_string(),
            Err(e) => e.to_string(),
        };
        record.check(
            "VM reached a shell on its NFS root",
            matches!(result, Ok(true)),
            format!("{}: {detail}", vm.name),
        );
        record.vms.push(VmRecord {
            vm: vm.name.clone(),
            phases: vm.phases.events.clone(),
        });
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_round_trip_and_refuse_on_the_baseline() {
        for case in CASES {
            assert_eq!(Case::parse(case.name()), Some(case));
        }
        assert_eq!(Case::BootReadonly.refusal(ServerKind::Baseline), None);
        assert_eq!(Case::BootStorm.refusal(ServerKind::Baseline), None);
        for case in [Case::Exceptions, Case::FailoverUnderLoad, Case::LiveUpdate] {
            assert!(case.refusal(ServerKind::Baseline).is_some(), "{case:?}");
        }
        assert_eq!(Case::BootStorm.vms(1_000), STORM_VMS_MAX);
    }

    fn refused(case: Case, server: ServerKind) -> CaseReport {
        use crate::bootsrc::BootFiles;
        use crate::image::ClientImage;
        let options = LabOptions {
            server,
            accel: crate::lab::AccelChoice::Tcg,
            firmware: Firmware::Bios,
            lab_cache: "/nonexistent".into(),
        };
        let inputs = Inputs {
            image: ClientImage {
                root: "/nonexistent/root".into(),
                key: String::new(),
            },
            boot: BootFiles {
                kernel_version: "6.1.0-test".into(),
                vmlinuz: "/nonexistent/vmlinuz".into(),
                initrd: "/nonexistent/initrd.img".into(),
            },
        };
        let run = CaseRun {
            case,
            options: &options,
            inputs: &inputs,
            accel: Accel::Tcg,
            accel_note: String::new(),
            runs: 3,
            storm_vms: 1,
            command: "test".into(),
        };
        let clock = ironroot_net::tokio_backend::TokioRuntime::with_seed(1);
        run_case(&run, &clock)
    }

    #[test]
    fn refusals_are_reported_before_anything_is_built() {
        let report = refused(Case::FailoverUnderLoad, ServerKind::Baseline);
        assert_eq!(report.outcome, Outcome::Refused);
        assert_eq!(report.runs.len(), 1);
        let error = report.runs[0].error.clone().unwrap_or_default();
        assert!(
            error.starts_with("case failover-under-load cannot run with the baseline"),
            "{error}"
        );
        let report = refused(Case::LiveUpdate, ServerKind::Baseline);
        assert_eq!(report.outcome, Outcome::Refused);
    }

    #[test]
    fn mounts_are_parsed_last_wins() {
        let text = "rootfs / rootfs rw 0 0\n\
                    10.99.0.1:/ / nfs ro,relatime,vers=3 0 0\n\
                    tmpfs /var tmpfs rw,nosuid 0 0\n";
        let mounts = parse_mounts(text);
        assert_eq!(mount_of(&mounts, "/").map(|m| m.2.as_str()), Some("nfs"));
        assert_eq!(
            mount_of(&mounts, "/var").map(|m| m.2.as_str()),
            Some("tmpfs")
        );
        assert!(mount_of(&mounts, "/tmp").is_none());
    }
}
