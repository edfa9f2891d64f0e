//! `vm-lab`: boots QEMU clients from a server side in network namespaces
//! and writes reports/vm-lab/<case>.{md,json}.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use ironroot_net::tokio_backend::TokioRuntime;
use ironroot_vm_lab::cases::STORM_VMS_DEFAULT;
use ironroot_vm_lab::image::DEFAULT_LAB_CACHE;
use ironroot_vm_lab::qemu::Firmware;
use ironroot_vm_lab::report::{CaseReport, Outcome};
use ironroot_vm_lab::{
    host, lab, run_case, AccelChoice, Case, CaseRun, LabOptions, ServerKind, CASES,
};

#[derive(Parser)]
#[command(
    name = "vm-lab",
    about = "PXE-boot QEMU clients from ironroot (or the baseline)"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Runs a case (or `all`) and writes its report.
    Run(RunArgs),
    /// Boot time and failover stall, ironroot against the baseline, in
    /// one run: failover-under-load on ironroot, server-restart on the
    /// baseline; writes <report-dir>/bench.md.
    Bench(BenchArgs),
    /// Lists the cases and which server sides can run them.
    List,
}

#[derive(Clone, Copy, ValueEnum)]
enum ServerArg {
    Baseline,
    Ironroot,
}

#[derive(Clone, Copy, ValueEnum)]
enum AccelArg {
    Tcg,
    Kvm,
    Auto,
}

#[derive(Clone, Copy, ValueEnum)]
enum FirmwareArg {
    Bios,
    Uefi,
}

#[derive(clap::Args)]
struct RunArgs {
    /// boot-readonly, exceptions, failover-under-load, live-update, boot-storm, or all.
    case: String,
    #[arg(long, value_enum, default_value = "ironroot")]
    server: ServerArg,
    /// tcg by default: on hosts like this one /dev/kvm opens but cannot
    /// run guests; `auto` probes KVM with a short boot first.
    #[arg(long, value_enum, default_value = "tcg")]
    accel: AccelArg,
    #[arg(long, value_enum, default_value = "bios")]
    firmware: FirmwareArg,
    /// Repetitions of each case (medians in the report).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// VMs in boot-storm.
    #[arg(long, default_value_t = STORM_VMS_DEFAULT)]
    vms: usize,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../reports/vm-lab"))]
    report_dir: PathBuf,
    #[arg(long, default_value = DEFAULT_LAB_CACHE)]
    lab_cache: PathBuf,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Runs per server side (medians).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../reports/vm-lab"))]
    report_dir: PathBuf,
    #[arg(long, default_value = DEFAULT_LAB_CACHE)]
    lab_cache: PathBuf,
}

/// Repetitions of one case in one invocation.
const RUNS_MAX: usize = 20;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::List => {
            for case in CASES {
                let baseline = case.refusal(ServerKind::Baseline).unwrap_or("runs");
                let ironroot = case.refusal(ServerKind::Ironroot).unwrap_or("runs");
                println!(
                    "{:<20} ironroot: {ironroot}; baseline: {baseline}",
                    case.name()
                );
            }
            ExitCode::SUCCESS
        }
        Commands::Bench(args) => match bench(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vm-lab: {e:#}");
                ExitCode::from(2)
            }
        },
        Commands::Run(args) => match run(&args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("vm-lab: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

fn lab_options(args: &RunArgs) -> LabOptions {
    LabOptions {
        server: match args.server {
            ServerArg::Baseline => ServerKind::Baseline,
            ServerArg::Ironroot => ServerKind::Ironroot,
        },
        accel: match args.accel {
            AccelArg::Tcg => AccelChoice::Tcg,
            AccelArg::Kvm => AccelChoice::Kvm,
            AccelArg::Auto => AccelChoice::Auto,
        },
        firmware: match args.firmware {
            FirmwareArg::Bios => Firmware::Bios,
            FirmwareArg::Uefi => Firmware::Uefi,
        },
        lab_cache: args.lab_cache.clone(),
    }
}

fn run(args: &RunArgs) -> anyhow::Result<bool> {
    let cases: Vec<Case> = if args.case == "all" {
        CASES.to_vec()
    } else {
        vec![Case::parse(&args.case)
            .with_context(|| format!("unknown case {:?} (see `vm-lab list`)", args.case))?]
    };
    anyhow::ensure!(
        (1..=RUNS_MAX).contains(&args.runs),
        "--runs {} is outside 1..={RUNS_MAX}",
        args.runs
    );
    host::install_signal_handlers();
    host::require_root()?;
    host::ensure_packages()?;
    let options = lab_options(args);
    let clock = TokioRuntime::with_seed(0);
    eprintln!(
        "vm-lab: preparing client root and boot files in {}",
        options.lab_cache.display()
    );
    let inputs = lab::prepare_inputs(&options.lab_cache)?;
    let scratch = tempfile::tempdir()?;
    let (accel, accel_note) =
        lab::choose_accel(options.accel, &clock, &inputs.boot, scratch.path());
    eprintln!(
        "vm-lab: kernel {}, {accel_note}",
        inputs.boot.kernel_version
    );
    // The report names the command without this machine's paths.
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let command = format!("vm-lab {}", arguments.join(" "));
    let mut all_passed = true;
    for case in cases {
        eprintln!(
            "vm-lab: {} with the {} server side",
            case.name(),
            options.server.name()
        );
        let report = run_case(
            &CaseRun {
                case,
                options: &options,
                inputs: &inputs,
                accel,
                accel_note: accel_note.clone(),
                runs: args.runs,
                storm_vms: args.vms,
                command: command.clone(),
            },
            &clock,
        );
        report.write(&args.report_dir)?;
        print_summary(case, &report);
        // A refused case in `all` is reported, not a failure: it is a
        // statement about the server side, not about the system.
        all_passed &= report.outcome == Outcome::Passed
            || (report.outcome == Outcome::Refused && args.case == "all");
        if host::interrupted() {
            anyhow::bail!("interrupted");
        }
    }
    Ok(all_passed)
}

fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=RUNS_MAX).contains(&args.runs),
        "--runs {} is outside 1..={RUNS_MAX}",
        args.runs
    );
    host::install_signal_handlers();
    host::require_root()?;
    host::ensure_packages()?;
    ServerKind::Ironroot.check_available()?;
    let clock = TokioRuntime::with_seed(0);
    let mut options = LabOptions {
        server: ServerKind::Ironroot,
        accel: AccelChoice::Tcg,
        firmware: Firmware::Bios,
        lab_cache: args.lab_cache.clone(),
    };
    let inputs = lab::prepare_inputs(&options.lab_cache)?;
    let command = format!("vm-lab bench --runs {}", args.runs);
    let mut reports = Vec::new();
    for (server, case) in [
        (ServerKind::Ironroot, Case::FailoverUnderLoad),
        (ServerKind::Baseline, Case::ServerRestart),
    ] {
        options.server = server;
        eprintln!(
            "vm-lab: bench: {} x {} on {}",
            args.runs,
            case.name(),
            server.name()
        );
        let report = run_case(
            &CaseRun {
                case,
                options: &options,
                inputs: &inputs,
                accel: ironroot_vm_lab::qemu::Accel::Tcg,
                accel_note: "tcg (the bench never probes kvm)".into(),
                runs: args.runs,
                storm_vms: 1,
                command: command.clone(),
            },
            &clock,
        );
        print_summary(case, &report);
        anyhow::ensure!(!host::interrupted(), "interrupted");
        reports.push(report);
    }
    let rows = ironroot_vm_lab::bench::rows(&reports[0], &reports[1]);
    let table =
        ironroot_vm_lab::bench::table(&rows, (reports[0].runs.len(), reports[1].runs.len()));
    let text = format!(
        "# vm-lab bench\n\naccelerator tcg, firmware bios, kernel {}; command `{command}`; \
         outcomes: ironroot {:?}, baseline {:?}\n\n{table}",
        inputs.boot.kernel_version, reports[0].outcome, reports[1].outcome
    );
    println!("{table}");
    std::fs::create_dir_all(&args.report_dir)?;
    std::fs::write(args.report_dir.join("bench.md"), text)?;
    Ok(())
}

fn print_summary(case: Case, report: &CaseReport) {
    let shell = report
        .median_ms
        .get("shell")
        .map(|ms| format!(", shell at {ms} ms (median)"));
    eprintln!(
        "vm-lab: {}: {:?}{}",
        case.name(),
        report.outcome,
        shell.unwrap_or_default()
    );
    for run in &report.runs {
        if let Some(error) = &run.error {
            eprintln!("vm-lab:   run {}: {error}", run.run);
        }
        for check in run.checks.iter().filter(|c| !c.passed) {
            eprintln!(
                "vm-lab:   run {}: FAILED {}: {}",
                run.run, check.name, check.detail
            );
        }
    }
}
