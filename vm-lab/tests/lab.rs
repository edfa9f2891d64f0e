//! The lab end to end, QEMU clients booting by PXE under TCG with the boot
//! crate's kernel and initramfs: `boot-readonly` and `failover-under-load`
//! against ironroot (two `ironrootd` nodes and a witness, the binaries
//! found next to this test's target directory), and `boot-readonly`
//! against the baseline (dnsmasq, rpcbind, nfs-ganesha). The cases run one
//! at a time: on a small host, parallel TCG guests distort the stall times.
//! Needs root, the packages in scripts/packages/vm-lab.txt and the
//! workspace binaries (`cargo build --workspace --bins`); with
//! `IRONROOT_REQUIRE_PEERS=1` their absence fails the test, otherwise it
//! prints why and returns.

use ironroot_net::tokio_backend::TokioRuntime;
use ironroot_vm_lab::image::DEFAULT_LAB_CACHE;
use ironroot_vm_lab::lab::{prepare_inputs, Inputs};
use ironroot_vm_lab::phases::Phase;
use ironroot_vm_lab::qemu::{Accel, Firmware};
use ironroot_vm_lab::report::{CaseReport, Outcome};
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

/// One lab at a time (see the module comment).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `case` against `server` once; None when the lab cannot run here
/// and peers are optional.
fn run(case: Case, server: ServerKind) -> Option<CaseReport> {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab_cache = std::path::PathBuf::from(DEFAULT_LAB_CACHE);
    available("root", host::require_root())?;
    available("the lab's packages", host::ensure_packages())?;
    let inputs: Inputs = available(
        "kernel, busybox and client root",
        prepare_inputs(&lab_cache),
    )?;
    if server == ServerKind::Ironroot {
        available(
            "the ironrootd and ironroot binaries",
            server.check_available(),
        )?;
    }
    let options = LabOptions {
        server,
        accel: AccelChoice::Tcg,
        firmware: Firmware::Bios,
        lab_cache,
    };
    let run = CaseRun {
        case,
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
    let json = std::fs::read_to_string(reports.path().join(format!("{}.json", case.name())));
    let json = json.unwrap();
    assert!(json.contains("\"accel\": \"tcg\""), "{json}");
    assert!(
        json.contains(&format!("\"server\": \"{}\"", server.name())),
        "{json}"
    );
    Some(report)
}

#[test]
fn boot_readonly_with_ironroot() {
    let Some(report) = run(Case::BootReadonly, ServerKind::Ironroot) else {
        return;
    };
    assert_checks_and_phases(&report.runs[0]);
    // The kernel came through `ironroot boot import-kernel`.
    assert!(
        report.runs[0]
            .timings_ms
            .contains_key("setup-boot-import-kernel"),
        "{:?}",
        report.runs[0].timings_ms
    );
}

#[test]
fn failover_under_load_with_ironroot() {
    let Some(report) = run(Case::FailoverUnderLoad, ServerKind::Ironroot) else {
        return;
    };
    let run = &report.runs[0];
    let names: Vec<&str> = run.checks.iter().map(|c| c.name).collect();
    for wanted in [
        "no loop error across the host death of the active node",
        "no loop error across kill -9 of ironrootd on the active node",
        "the active node accepts a switchover",
        "no loop error across a switchover",
        "the load loop ran through the failures and ended cleanly",
    ] {
        assert!(
            names.contains(&wanted),
            "check {wanted:?} missing from {names:?}"
        );
    }
    for timing in [
        "stall-host-death",
        "stall-kill9",
        "host-death-to-active",
        "switchover-to-active",
    ] {
        assert!(
            run.timings_ms.get(timing).is_some_and(|ms| *ms > 0),
            "{timing} not measured: {:?}",
            run.timings_ms
        );
    }
    eprintln!(
        "failover stalls: host death {} ms, kill -9 {} ms, switchover {} ms",
        run.timings_ms["stall-host-death"],
        run.timings_ms["stall-kill9"],
        run.timings_ms["stall-switchover"]
    );
}

#[test]
fn boot_readonly_with_the_baseline() {
    let Some(report) = run(Case::BootReadonly, ServerKind::Baseline) else {
        return;
    };
    assert_checks_and_phases(&report.runs[0]);
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
