//! What a case run produces: checks, phase timings per VM, the outcome;
//! written as reports/vm-lab/<case>.json and .md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::error::LabError;
use crate::phases::{PhaseEvent, PHASES};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmRecord {
    pub vm: String,
    pub phases: Vec<PhaseEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
    Refused,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    pub run: usize,
    pub vms: Vec<VmRecord>,
    pub checks: Vec<Check>,
    /// Measured durations: server set-up steps, stalls, update delays.
    pub timings_ms: BTreeMap<String, u64>,
    pub error: Option<String>,
    pub outcome: Outcome,
}

impl RunRecord {
    pub fn new(run: usize) -> RunRecord {
        RunRecord {
            run,
            vms: Vec::new(),
            checks: Vec::new(),
            timings_ms: BTreeMap::new(),
            error: None,
            outcome: Outcome::Failed,
        }
    }

    pub fn check(&mut self, name: &'static str, passed: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name,
            passed,
            detail: detail.into(),
        });
    }

    /// Passed only with no error, at least one check, and every check passed.
    pub fn finish(&mut self) {
        let passed =
            self.error.is_none() && !self.checks.is_empty() && self.checks.iter().all(|c| c.passed);
        self.outcome = if passed {
            Outcome::Passed
        } else {
            Outcome::Failed
        };
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseReport {
    pub case: &'static str,
    pub server: &'static str,
    pub accel: &'static str,
    /// Why this accelerator (the KVM probe's result when it ran).
    pub accel_note: String,
    pub firmware: &'static str,
    pub kernel_version: String,
    pub command: String,
    pub runs: Vec<RunRecord>,
    /// Phase -> median over runs (and VMs) of the time from power-on.
    pub median_ms: BTreeMap<&'static str, u64>,
    /// Timing -> median over the runs that measured it.
    pub median_timings_ms: BTreeMap<String, u64>,
    pub outcome: Outcome,
}

pub fn median(mut values: Vec<u64>) -> Option<u64> {
    values.sort_unstable();
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2),
    }
}

impl CaseReport {
    pub fn summarise(&mut self) {
        for phase in PHASES {
            let times: Vec<u64> = self
                .runs
                .iter()
                .flat_map(|r| &r.vms)
                .flat_map(|vm| {
                    vm.phases
                        .iter()
                        .filter(|e| e.phase == phase)
                        .map(|e| e.at_ms)
                })
                .collect();
            if let Some(m) = median(times) {
                self.median_ms.insert(phase.name(), m);
            }
        }
        let mut timings: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (name, ms) in self.runs.iter().flat_map(|r| &r.timings_ms) {
            timings.entry(name.clone()).or_default().push(*ms);
        }
        self.median_timings_ms = timings
            .into_iter()
            .filter_map(|(name, values)| Some((name, median(values)?)))
            .collect();
        self.outcome = if self.runs.iter().any(|r| r.outcome == Outcome::Refused) {
            Outcome::Refused
        } else if !self.runs.is_empty() && self.runs.iter().all(|r| r.outcome == Outcome::Passed) {
            Outcome::Passed
        } else {
            Outcome::Failed
        };
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# vm-lab `{}`: {:?}\n", self.case, self.outcome);
        let _ = writeln!(
            md,
            "server side `{}`, accelerator `{}`, firmware `{}`, kernel `{}`  ",
            self.server, self.accel, self.firmware, self.kernel_version
        );
        let _ = writeln!(md, "accelerator choice: {}  ", self.accel_note);
        let _ = writeln!(md, "command: `{}`\n", self.command);
        if !self.median_ms.is_empty() {
            let _ = writeln!(
                md,
                "## Boot phases (median over {} run(s), ms from power-on)\n",
                self.runs.len()
            );
            let _ = writeln!(md, "| phase | at ms | since previous ms |\n|---|---:|---:|");
            let mut previous = 0;
            for phase in PHASES {
                if let Some(at) = self.median_ms.get(phase.name()) {
                    let _ = writeln!(
                        md,
                        "| {} | {at} | {} |",
                        phase.name(),
                        at.saturating_sub(previous)
                    );
                    previous = *at;
                }
            }
            md.push('\n');
        }
        if !self.median_timings_ms.is_empty() {
            let _ = writeln!(
                md,
                "## Timings (median over {} run(s), ms)\n\n| timing | ms |\n|---|---:|",
                self.runs.len()
            );
            for (name, ms) in &self.median_timings_ms {
                let _ = writeln!(md, "| {name} | {ms} |");
            }
            md.push('\n');
        }
        for run in &self.runs {
            let _ = writeln!(md, "## Run {}: {:?}\n", run.run, run.outcome);
            let timings: Vec<String> = run
                .timings_ms
                .iter()
                .map(|(name, ms)| format!("{name} {ms} ms"))
                .collect();
            if !timings.is_empty() {
                let _ = writeln!(md, "- timings: {}", timings.join(", "));
            }
            for vm in &run.vms {
                let times: Vec<String> = vm
                    .phases
                    .iter()
                    .map(|e| format!("{} {} ms", e.phase.name(), e.at_ms))
                    .collect();
                let _ = writeln!(md, "- {}: {}", vm.vm, times.join(", "));
            }
            for check in &run.checks {
                let mark = if check.passed { "ok" } else { "FAILED" };
                let detail = check.detail.replace('\n', " / ");
                let _ = writeln!(md, "- [{mark}] {}: {detail}", check.name);
            }
            if let Some(error) = &run.error {
                let _ = writeln!(md, "\nerror:\n```\n{error}\n```");
            }
            md.push('\n');
        }
        md
    }

    pub fn write(&self, dir: &Path) -> Result<(), LabError> {
        std::fs::create_dir_all(dir).map_err(LabError::io(dir))?;
        let json = serde_json::to_string_pretty(self).unwrap_or_default();
        let json_path = dir.join(format!("{}.json", self.case));
        std::fs::write(&json_path, json + "\n").map_err(LabError::io(&json_path))?;
        let md_path = dir.join(format!("{}.md", self.case));
        std::fs::write(&md_path, self.markdown()).map_err(LabError::io(&md_path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::Phase;

    #[test]
    fn medians_and_outcome() {
        assert_eq!(median(vec![3, 1, 2]), Some(2));
        assert_eq!(median(vec![4, 1, 2, 3]), Some(2));
        assert_eq!(median(vec![]), None);
        let mut report = CaseReport {
            case: "boot-readonly",
            server: "baseline",
            accel: "tcg",
            accel_note: String::new(),
            firmware: "bios",
            kernel_version: "6.1.0-56-amd64".into(),
            command: "vm-lab run boot-readonly".into(),
            runs: Vec::new(),
            median_ms: BTreeMap::new(),
            median_timings_ms: BTreeMap::new(),
            outcome: Outcome::Failed,
        };
        for (i, shell) in [10_200, 9_900, 11_000].into_iter().enumerate() {
            let mut run = RunRecord::new(i + 1);
            run.vms.push(VmRecord {
                vm: "lab-vm0".into(),
                phases: vec![PhaseEvent {
                    phase: Phase::Shell,
                    at_ms: shell,
                }],
            });
            run.check("shell", true, "");
            run.finish();
            report.runs.push(run);
        }
        report.summarise();
        assert_eq!(report.median_ms.get("shell"), Some(&10_200));
        assert_eq!(report.outcome, Outcome::Passed);
        assert!(report.markdown().contains("| shell | 10200 | 10200 |"));
    }

    #[test]
    fn a_run_without_checks_did_not_pass() {
        let mut run = RunRecord::new(1);
        run.finish();
        assert_eq!(run.outcome, Outcome::Failed);
    }
}
