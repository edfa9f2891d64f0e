//! `sim run <scenario.toml> [--seed N] [--seeds K]` and `sim check`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ironroot_sim::report::{self, SweepReport};
use ironroot_sim::{revision, run_one, Scenario, DEFAULT_SCENARIO, DEFAULT_SCENARIO_PATH};

#[derive(Parser)]
#[command(
    name = "sim",
    about = "Deterministic simulations of ironroot's daemons"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario: one seed prints its event log; --seeds K sweeps K seeds.
    Run {
        /// Scenario file (default: the embedded scenarios/crash-active.toml).
        scenario: Option<PathBuf>,
        /// The seed (or the first seed of a sweep).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Run this many consecutive seeds and print a summary.
        #[arg(long)]
        seeds: Option<u64>,
        /// Where Markdown and JSON reports go.
        #[arg(long, default_value = "reports")]
        report_dir: PathBuf,
    },
    /// Run every scenario in a directory with its check seeds and regression seeds.
    Check {
        #[arg(long, default_value = "scenarios")]
        scenarios: PathBuf,
        #[arg(long, default_value = "reports")]
        report_dir: PathBuf,
    },
}

/// Seeds in one sweep at most.
const SWEEP_SEEDS_MAX: u64 = 100_000;

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("sim: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<bool> {
    match Cli::parse().command {
        Command::Run {
            scenario,
            seed,
            seeds,
            report_dir,
        } => {
            let (path, scenario) = match scenario {
                Some(path) => (path.display().to_string(), Scenario::load(&path)?),
                None => (
                    DEFAULT_SCENARIO_PATH.to_owned(),
                    Scenario::parse(DEFAULT_SCENARIO, DEFAULT_SCENARIO_PATH)?,
                ),
            };
            let revision = revision(Path::new("."));
            match seeds {
                None => run_single(&path, &revision, &scenario, seed, &report_dir),
                Some(count) => run_sweep(&path, &revision, &scenario, seed, count, &report_dir),
            }
        }
        Command::Check {
            scenarios,
            report_dir,
        } => check_all(&scenarios, &report_dir),
    }
}

fn run_single(
    path: &str,
    revision: &str,
    scenario: &Scenario,
    seed: u64,
    report_dir: &Path,
) -> Result<bool> {
    let (text, trace, verdict) = run_one(path, revision, scenario, seed);
    print!("{text}");
    let written = report::write_run(report_dir, path, revision, scenario, &trace, &verdict)
        .with_context(|| format!("writing the report under {}", report_dir.display()))?;
    println!("report: {}", written.display());
    Ok(verdict.passed)
}

fn run_sweep(
    path: &str,
    revision: &str,
    scenario: &Scenario,
    first: u64,
    count: u64,
    report_dir: &Path,
) -> Result<bool> {
    anyhow::ensure!(
        (1..=SWEEP_SEEDS_MAX).contains(&count),
        "--seeds must be in 1..={SWEEP_SEEDS_MAX}"
    );
    let mut results = Vec::new();
    for seed in first..first.saturating_add(count) {
        let (_, trace, verdict) = run_one(path, revision, scenario, seed);
        let migration = verdict.migration.map_or("-".to_owned(), report::seconds);
        println!(
            "seed={seed} {} migration={migration} owner_changes={}",
            if verdict.passed { "PASS" } else { "FAIL" },
            trace.owner_changes
        );
        if !verdict.passed {
            report::write_run(report_dir, path, revision, scenario, &trace, &verdict)?;
        }
        results.push((seed, verdict));
    }
    // A chosen seed's own report (event log, VIP-ownership timeline): the
    // slowest migration, or the first seed when nothing migrates. The run
    // is deterministic, so running it again gives the same trace.
    let chosen = results
        .iter()
        .filter(|(_, verdict)| verdict.passed)
        .max_by_key(|(seed, verdict)| (verdict.migration, std::cmp::Reverse(*seed)))
        .map(|(seed, _)| *seed);
    if let Some(seed) = chosen {
        let (_, trace, verdict) = run_one(path, revision, scenario, seed);
        let written = report::write_run(report_dir, path, revision, scenario, &trace, &verdict)?;
        println!("timeline of seed {seed}: {}", written.display());
    }
    let sweep = SweepReport::new(&scenario.name, revision, &results);
    print!("{}", sweep.render(path));
    let written = sweep.write(report_dir, path)?;
    println!("report: {}", written.display());
    Ok(sweep.failed.is_empty())
}

fn check_all(dir: &Path, report_dir: &Path) -> Result<bool> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    anyhow::ensure!(!paths.is_empty(), "no scenarios in {}", dir.display());
    let revision = revision(Path::new("."));
    let mut all_passed = true;
    for path in paths {
        let scenario = Scenario::load(&path)?;
        let display = path.display().to_string();
        let mut seeds: Vec<u64> = (1..=scenario.check_seeds).collect();
        seeds.extend(&scenario.regression_seeds);
        let mut results = Vec::new();
        for seed in seeds {
            let (_, trace, verdict) = run_one(&display, &revision, &scenario, seed);
            if !verdict.passed {
                report::write_run(report_dir, &display, &revision, &scenario, &trace, &verdict)?;
            }
            results.push((seed, verdict));
        }
        let sweep = SweepReport::new(&scenario.name, &revision, &results);
        print!("{}", sweep.render(&display));
        sweep.write(report_dir, &display)?;
        all_passed &= sweep.failed.is_empty();
    }
    println!(
        "sim check: {}",
        if all_passed {
            "all scenarios passed"
        } else {
            "FAILED"
        }
    );
    Ok(all_passed)
}
