//! What a run prints and writes: the event log with documented columns,
//! the outcome and a replay command; Markdown and JSON under the report
//! directory. Identical inputs give identical bytes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::check::Verdict;
use crate::scenario::Scenario;
use crate::world::{LogLine, RunTrace};

/// Column legend printed above every event log.
pub const COLUMNS: &str = "columns: time (simulated, since start) | host | event | detail";

/// A finished run, as written to JSON.
#[derive(serde::Serialize)]
pub struct RunReport<'a> {
    pub scenario: &'a str,
    pub seed: u64,
    pub revision: &'a str,
    pub passed: bool,
    pub violations: &'a [String],
    pub migration_us: Option<u64>,
    pub owner_changes: u64,
    pub replay: String,
    pub events: &'a [LogLine],
}

/// The command that replays `seed` of the scenario at `path`.
pub fn replay_command(path: &str, seed: u64) -> String {
    format!("cargo run --release --bin sim -- run {path} --seed {seed}")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// `0.523s`, millisecond precision.
pub fn seconds(duration: Duration) -> String {
    let ms = duration.as_millis();
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

/// The text of one run: header, event log, outcome.
pub fn render_run(
    path: &str,
    revision: &str,
    scenario: &Scenario,
    trace: &RunTrace,
    verdict: &Verdict,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ironroot sim  scenario={}  seed={}  rev={revision}",
        scenario.name, trace.seed
    );
    let _ = writeln!(out, "{COLUMNS}");
    for line in &trace.log {
        let _ = writeln!(
            out,
            "{:>10}  {:<8} {:<16} {}",
            line.at.to_string(),
            line.host,
            line.event,
            line.detail
        );
    }
    let _ = writeln!(
        out,
        "outcome: {}",
        if verdict.passed { "PASS" } else { "FAIL" }
    );
    for violation in &verdict.violations {
        let _ = writeln!(out, "violation: {violation}");
    }
    match (verdict.migration, trace.first_fault) {
        (Some(took), Some(fault)) => {
            let _ = writeln!(
                out,
                "vip migration: {} (first fault at {fault} -> first answer from the new owner)",
                seconds(took)
            );
        }
        _ => {
            let _ = writeln!(out, "vip migration: none");
        }
    }
    let _ = writeln!(out, "vip owner changes: {}", trace.owner_changes);
    if let Some(store) = &trace.store {
        for line in crate::store::check::summary(store) {
            let _ = writeln!(out, "{line}");
        }
    }
    if !verdict.passed {
        let _ = writeln!(out, "replay: {}", replay_command(path, trace.seed));
    }
    out
}

/// Write `<dir>/<scenario>/seed-<seed>.{md,json}`; returns the Markdown path.
pub fn write_run(
    dir: &Path,
    path: &str,
    revision: &str,
    scenario: &Scenario,
    trace: &RunTrace,
    verdict: &Verdict,
) -> std::io::Result<PathBuf> {
    let out_dir = dir.join(&scenario.name);
    std::fs::create_dir_all(&out_dir)?;
    let report = RunReport {
        scenario: &scenario.name,
        seed: trace.seed,
        revision,
        passed: verdict.passed,
        violations: &verdict.violations,
        migration_us: verdict.migration.map(micros),
        owner_changes: trace.owner_changes,
        replay: replay_command(path, trace.seed),
        events: &trace.log,
    };
    let json = serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?;
    std::fs::write(out_dir.join(format!("seed-{}.json", trace.seed)), json)?;
    let text = render_run(path, revision, scenario, trace, verdict);
    let markdown = format!(
        "# {} — seed {}\n\n{}\n\n```\n{text}```\n",
        scenario.name, trace.seed, scenario.description
    );
    let md_path = out_dir.join(format!("seed-{}.md", trace.seed));
    std::fs::write(&md_path, markdown)?;
    let title = format!(
        "{} seed {}: VIP holders on the segment",
        scenario.name, trace.seed
    );
    let timeline = crate::svg::ownership_timeline(&title, &trace.log, scenario.duration);
    std::fs::write(out_dir.join(format!("seed-{}.svg", trace.seed)), timeline)?;
    Ok(md_path)
}

/// Percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// One sweep's summary over many seeds.
#[derive(serde::Serialize)]
pub struct SweepReport {
    pub scenario: String,
    pub revision: String,
    pub seeds: Vec<u64>,
    pub failed: Vec<u64>,
    pub migration_us: Vec<u64>,
    pub p50_us: Option<u64>,
    pub p90_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: Option<u64>,
}

impl SweepReport {
    pub fn new(scenario: &str, revision: &str, results: &[(u64, Verdict)]) -> SweepReport {
        let mut migrations: Vec<Duration> =
            results.iter().filter_map(|(_, v)| v.migration).collect();
        migrations.sort();
        SweepReport {
            scenario: scenario.to_owned(),
            revision: revision.to_owned(),
            seeds: results.iter().map(|(seed, _)| *seed).collect(),
            failed: results
                .iter()
                .filter(|(_, v)| !v.passed)
                .map(|(seed, _)| *seed)
                .collect(),
            migration_us: migrations.iter().copied().map(micros).collect(),
            p50_us: percentile(&migrations, 50.0).map(micros),
            p90_us: percentile(&migrations, 90.0).map(micros),
            p99_us: percentile(&migrations, 99.0).map(micros),
            max_us: migrations.last().copied().map(micros),
        }
    }

    /// The summary lines printed after a sweep.
    pub fn render(&self, path: &str) -> String {
        let show =
            |us: Option<u64>| us.map_or("-".to_owned(), |us| seconds(Duration::from_micros(us)));
        let mut out = format!(
            "scenario {}: {} seeds, {} passed, {} failed\nvip migration p50 {} p90 {} p99 {} max {}\n",
            self.scenario,
            self.seeds.len(),
            self.seeds.len() - self.failed.len(),
            self.failed.len(),
            show(self.p50_us),
            show(self.p90_us),
            show(self.p99_us),
            show(self.max_us),
        );
        for seed in &self.failed {
            let _ = writeln!(out, "replay: {}", replay_command(path, *seed));
        }
        out
    }

    /// Write `<dir>/<scenario>/sweep.{md,json}`.
    pub fn write(&self, dir: &Path, path: &str) -> std::io::Result<PathBuf> {
        let out_dir = dir.join(&self.scenario);
        std::fs::create_dir_all(&out_dir)?;
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(out_dir.join("sweep.json"), json)?;
        let migrations: Vec<Duration> = self
            .migration_us
            .iter()
            .map(|us| Duration::from_micros(*us))
            .collect();
        let title = format!(
            "{}: VIP migration across {} seeds",
            self.scenario,
            self.seeds.len()
        );
        std::fs::write(
            out_dir.join("sweep.svg"),
            crate::svg::histogram(&title, &migrations),
        )?;
        let md_path = out_dir.join("sweep.md");
        std::fs::write(
            &md_path,
            format!(
                "# {} — sweep\n\n```\n{}```\n",
                self.scenario,
                self.render(path)
            ),
        )?;
        Ok(md_path)
    }
}
