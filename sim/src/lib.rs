//! `sim`: deterministic turmoil simulations of ironroot's daemons.
//!
//! A scenario file names the world (nodes, latency, VIP), the faults and
//! their times, and what must hold; [`world::run`] runs it under one seed and
//! [`check::check`] judges the trace. The same seed gives the same bytes:
//! turmoil's epoch, latency and RNG are pinned, every host's randomness is
//! derived from the seed, tokio's RNG is seeded (`--cfg tokio_unstable`) and
//! nothing here reads the real clock.

pub mod check;
pub mod cluster;
pub mod pxe;
pub mod report;
pub mod scenario;
pub mod service_checks;
pub mod services;
pub mod store;
pub mod svg;
pub mod world;

use std::path::Path;

pub use check::{check, Verdict};
pub use scenario::Scenario;
pub use world::{run, RunTrace};

/// The scenario `sim run` uses when given none: the active node's host dies
/// and the cluster manager moves the VIP and the services to the standby.
pub const DEFAULT_SCENARIO: &str = include_str!("../../scenarios/crash-active.toml");
/// The path the default scenario is known by in replay commands.
pub const DEFAULT_SCENARIO_PATH: &str = "scenarios/crash-active.toml";

/// Run one seed and render it: (text, trace, verdict).
pub fn run_one(
    path: &str,
    revision: &str,
    scenario: &Scenario,
    seed: u64,
) -> (String, RunTrace, Verdict) {
    let trace = run(scenario, seed);
    let verdict = check(scenario, &trace);
    let text = report::render_run(path, revision, scenario, &trace, &verdict);
    (text, trace, verdict)
}

/// The source revision, for reports: `git rev-parse --short HEAD`, or
/// `unknown` outside a checkout.
pub fn revision(dir: &Path) -> String {
    std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|rev| rev.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}
