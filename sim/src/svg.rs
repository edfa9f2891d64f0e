//! Small hand-written SVG plots for reports: a histogram of failover times
//! across seeds and a timeline of VIP ownership for one run. Plain text out,
//! so the same trace always gives the same bytes.

use std::fmt::Write as _;
use std::time::Duration;

use crate::world::LogLine;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const MARGIN: f64 = 40.0;
/// Histogram bars at most.
const BUCKETS_MAX: usize = 40;

fn header(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" font-family=\"monospace\" font-size=\"11\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{MARGIN}\" y=\"16\" font-size=\"13\">{}</text>",
        escape(title)
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Histogram of `values` (sorted or not) in equal-width buckets.
pub fn histogram(title: &str, values: &[Duration]) -> String {
    let mut out = String::new();
    header(&mut out, title);
    let max = values.iter().max().copied().unwrap_or_default();
    let min = values.iter().min().copied().unwrap_or_default();
    let buckets = values.len().clamp(1, BUCKETS_MAX);
    let span_us = (max - min).as_micros().max(1) as f64;
    let mut counts = vec![0u64; buckets];
    for value in values {
        let position = ((value.saturating_sub(min)).as_micros() as f64 / span_us
            * (buckets as f64 - 1.0))
            .round();
        counts[(position as usize).min(buckets - 1)] += 1;
    }
    let tallest = counts.iter().max().copied().unwrap_or(1).max(1) as f64;
    let plot_w = WIDTH - 2.0 * MARGIN;
    let plot_h = HEIGHT - 2.0 * MARGIN;
    let bar_w = plot_w / buckets as f64;
    for (i, count) in counts.iter().enumerate() {
        let h = *count as f64 / tallest * plot_h;
        let x = MARGIN + i as f64 * bar_w;
        let y = HEIGHT - MARGIN - h;
        let _ = write!(out, "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"steelblue\"/>", (bar_w - 1.0).max(1.0));
    }
    let _ = write!(
        out,
        "<text x=\"{MARGIN}\" y=\"{:.0}\">{} ms</text><text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{} ms</text>\
         <text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{} seeds, tallest bar {}</text></svg>",
        HEIGHT - MARGIN + 16.0,
        min.as_millis(),
        WIDTH - MARGIN,
        HEIGHT - MARGIN + 16.0,
        max.as_millis(),
        WIDTH - MARGIN,
        MARGIN - 8.0,
        values.len(),
        tallest
    );
    out.push('\n');
    out
}

/// One row per host, a bar while the host holds the VIP on the segment,
/// read from the run's `segment.add` / `segment.remove` log lines.
pub fn ownership_timeline(title: &str, log: &[LogLine], end: Duration) -> String {
    let mut hosts: Vec<&str> = Vec::new();
    let mut bars: Vec<(usize, Duration, Duration)> = Vec::new();
    let mut open: Vec<(usize, Duration)> = Vec::new();
    for line in log {
        let row = match hosts.iter().position(|h| *h == line.host) {
            Some(row) => row,
            None => {
                hosts.push(line.host.as_str());
                hosts.len() - 1
            }
        };
        match line.event.as_str() {
            "segment.add" if !open.iter().any(|(r, _)| *r == row) => {
                open.push((row, line.at.since_origin()));
            }
            "segment.remove" => {
                if let Some(i) = open.iter().position(|(r, _)| *r == row) {
                    let (_, start) = open.remove(i);
                    bars.push((row, start, line.at.since_origin()));
                }
            }
            _ => {}
        }
    }
    bars.extend(open.into_iter().map(|(row, start)| (row, start, end)));
    let mut out = String::new();
    header(&mut out, title);
    let plot_w = WIDTH - 2.0 * MARGIN;
    let scale = plot_w / end.as_secs_f64().max(0.001);
    for (row, host) in hosts.iter().enumerate() {
        let y = MARGIN + row as f64 * 30.0;
        let _ = write!(
            out,
            "<text x=\"4\" y=\"{:.0}\">{}</text>",
            y + 14.0,
            escape(host)
        );
    }
    for (row, start, stop) in bars {
        let x = MARGIN + start.as_secs_f64() * scale;
        let w = ((stop - start).as_secs_f64() * scale).max(1.0);
        let y = MARGIN + row as f64 * 30.0;
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"20\" fill=\"darkorange\"/>"
        );
    }
    let _ = write!(
        out,
        "<text x=\"{MARGIN}\" y=\"{:.0}\">0 s</text><text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{:.1} s (VIP held, per host)</text></svg>",
        HEIGHT - 8.0,
        WIDTH - MARGIN,
        HEIGHT - 8.0,
        end.as_secs_f64()
    );
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironroot_net::Instant;

    #[test]
    fn plots_are_well_formed_and_deterministic() {
        let values: Vec<Duration> = (0..50)
            .map(|i| Duration::from_millis(1100 + i % 7))
            .collect();
        let first = histogram("failover", &values);
        assert_eq!(first, histogram("failover", &values));
        assert!(first.starts_with("<svg") && first.trim_end().ends_with("</svg>"));
        let line = |at, host: &str, event: &str| LogLine {
            at: Instant::from_millis(at),
            host: host.to_owned(),
            event: event.to_owned(),
            detail: String::new(),
        };
        let log = [
            line(100, "a", "segment.add"),
            line(2000, "a", "segment.remove"),
            line(2100, "b", "segment.add"),
        ];
        let timeline = ownership_timeline("vip", &log, Duration::from_secs(4));
        assert_eq!(timeline.matches("darkorange").count(), 2);
    }
}
