//! The lab end to end: `boot-readonly` against the baseline server side
//! (dnsmasq, rpcbind, nfs-ganesha in a network namespace), a QEMU client
//! booting by PXE under TCG with the boot crate's kernel and initramfs.
//! Needs root and the packages in scripts/packages/vm-lab.txt; with
//! `IRONROOT_REQUIRE_PEERS=1` their absence fails the test, otherwise it
//! prints why and returns.

use ironroot_net::tokio_backend::TokioRuntime;
use ironroot_vm_lab::image::DEFAULT_LAB_CACHE;
use ironroot_vm_lab::lab::{prepare_inputs, Inputs};
use ironroot_vm_lab::phases::Phase;
use ironroot_vm_lab::qemu::{Accel, Firmware};
use ironroot_vm_lab::report::Outcome;
use ironroot_vm_lab::{
    host, run_case, AccelChoice, Case, CaseRun, LabError, LabOptions, ServerKind,
};

fn peers_required() -> bool {
    std::env::var("IRONROOT_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

fn available<T>(what: &str, found: Result<T, LabError>) -> Option<T> {
    match found {
        Ok(value) => Some(value),
        Err(e) if peers_required() => panic!("{what} is required (IRONROOT_REQUIRE_PEERS=1): {e}"),
        Err(e) => {
            eprintln!("skipping the lab test: {what} unavailable: {e}");
            None
        }
    }
}

#[test]
fn boot_readonly_with_the_baseline() {
    let lab_cache = std::path::PathBuf::from(DEFAULT_LAB_CACHE);
    let Some(()) = available("root", host::require_root()) else {
        return;
    };
    let Some(()) = available("the lab's packages", host::ensure_packages()) else {
        return;
    };
    let Some(inputs): Option<Inputs> = available(
        "kernel, busybox and client root",
        prepare_inputs(&lab_cache),
    ) else {
        return;
    };
    let options = LabOptions {
        server: ServerKind::Baseline,
        accel: AccelChoice::Tcg,
        firmware: Firmware::Bios,
        lab_cache,
    };
    let run = CaseRun {
        case: Case::BootReadonly,
        options: &options,
        inputs: &inputs,
        accel: Accel::Tcg,
        accel_note: "tcg: the test never probes kvm".into(),
        runs: 1,
        storm_vms: 1,
        command: "cargo test -p ironroot-vm-lab --test lab".into(),
    };
    let report = run_case(&run, &TokioRuntime::with_seed(0));
    let reports = tempfile::tempdir().unwrap();
    report.write(reports.path()).unwrap();
    let markdown = report.markdown();
    eprintln!("{markdown}");
    assert_eq!(report.outcome, Outcome::Passed, "{markdown}");

    assert_checks_and_phases(&report.runs[0]);
    let json = std::fs::read_to_string(reports.path().join("boot-readonly.json")).unwrap();
    assert!(json.contains("\"accel\": \"tcg\""), "{json}");
}

/// Every check of the case ran, and every phase from firmware to shell
/// was seen, in boot order.
fn assert_checks_and_phases(run: &ironroot_vm_lab::report::RunRecord) {
    let names: Vec<&str> = run.checks.iter().map(|c| c.name).collect();
    for wanted in [
        "root is NFS read-only",
        "/var is tmpfs",
        "/tmp is tmpfs",
        "rm -rf / fails with Read-only file system",
        "files intact on the client",
        "files intact on the server",
        "write after remount rw fails (server refuses)",
    ] {
        assert!(
            names.contains(&wanted),
            "check {wanted:?} missing from {names:?}"
        );
    }
    // Every phase from firmware to shell was seen, in boot order.
    let phases = &run.vms[0].phases;
    let order: Vec<Phase> = phases.iter().map(|e| e.phase).collect();
    for phase in [
        Phase::Firmware,
        Phase::Dhcp,
        Phase::TftpDone,
        Phase::Kernel,
        Phase::RootMounted,
        Phase::Shell,
    ] {
        assert!(order.contains(&phase), "{phase:?} not seen: {order:?}");
    }
    assert!(
        phases.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
        "{phases:?}"
    );
}
