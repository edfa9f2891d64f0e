//! The benchmark: boot time to shell and failover stall, ironroot against
//! the baseline (dnsmasq + nfs-ganesha) in the same run, medians and
//! ratios. Ironroot's numbers come from `failover-under-load` runs (each
//! boots a VM, then fails over twice), the baseline's from `server-restart`
//! runs (each boots a VM, then its single NFS server is killed with -9 and
//! restarted at once under the same load loop, the best a supervisor can
//! do). The baseline has no second server, so a host death has no
//! baseline number: the table says so instead of inventing one.

use std::fmt::Write as _;

use crate::report::CaseReport;

/// One row: a metric, ironroot's and the baseline's medians in ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub metric: &'static str,
    pub ironroot_ms: Option<u64>,
    pub baseline_ms: Option<u64>,
}

pub fn rows(ironroot: &CaseReport, baseline: &CaseReport) -> Vec<Row> {
    let phase = |report: &CaseReport, name: &str| report.median_ms.get(name).copied();
    let timing = |name: &str| ironroot.median_timings_ms.get(name).copied();
    let mut rows = Vec::new();
    for (metric, name) in [
        ("boot: DHCP done (iPXE)", "dhcp"),
        ("boot: kernel + initramfs loaded", "tftp-done"),
        ("boot: root mounted", "root-mounted"),
        ("boot: shell", "shell"),
    ] {
        rows.push(Row {
            metric,
            ironroot_ms: phase(ironroot, name),
            baseline_ms: phase(baseline, name),
        });
    }
    let baseline_timing = |name: &str| baseline.median_timings_ms.get(name).copied();
    rows.push(Row {
        metric: "stall: kill -9 of the server (ironroot: peer takes over; baseline: restarted)",
        ironroot_ms: timing("stall-kill9"),
        baseline_ms: baseline_timing("stall-restart"),
    });
    rows.push(Row {
        metric: "stall: host death of the active node",
        ironroot_ms: timing("stall-host-death"),
        baseline_ms: None,
    });
    rows.push(Row {
        metric: "host death -> peer active",
        ironroot_ms: timing("host-death-to-active"),
        baseline_ms: None,
    });
    rows.push(Row {
        metric: "load loop period before the failure",
        ironroot_ms: timing("loop-period-before"),
        baseline_ms: baseline_timing("loop-period-before"),
    });
    rows
}

/// The table in Markdown; ratio is ironroot / baseline.
pub fn table(rows: &[Row], runs: (usize, usize)) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| metric (median, ms) | ironroot ({} runs) | baseline ({} runs) | ironroot / baseline |",
        runs.0, runs.1
    );
    md.push_str("|---|---:|---:|---:|\n");
    let show = |ms: Option<u64>| ms.map_or("n/a".to_string(), |ms| ms.to_string());
    for row in rows {
        let ratio = match (row.ironroot_ms, row.baseline_ms) {
            (Some(i), Some(b)) if b > 0 => format!("{:.2}", i as f64 / b as f64),
            (_, None) => "n/a (single server)".to_string(),
            _ => "n/a".to_string(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {ratio} |",
            row.metric,
            show(row.ironroot_ms),
            show(row.baseline_ms)
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_missing_values() {
        let rows = [
            Row {
                metric: "boot: shell",
                ironroot_ms: Some(12_000),
                baseline_ms: Some(10_000),
            },
            Row {
                metric: "stall: kill -9 of ironrootd",
                ironroot_ms: Some(2_500),
                baseline_ms: None,
            },
        ];
        let text = table(&rows, (3, 3));
        assert!(
            text.contains("| boot: shell | 12000 | 10000 | 1.20 |"),
            "{text}"
        );
        assert!(
            text.contains("| stall: kill -9 of ironrootd | 2500 | n/a | n/a (single server) |"),
            "{text}"
        );
    }
}
