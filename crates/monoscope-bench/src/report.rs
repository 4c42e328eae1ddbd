//! Printing measurements: a table for people, JSON lines for tools.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Measurement {
    pub bench: String,
    pub case: String,
    pub metric: String,
    pub value: f64,
    pub unit: String,
    /// The process's peak resident memory when the measurement was taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
}

impl Measurement {
    pub fn new(bench: &str, case: &str, metric: &str, value: f64, unit: &str) -> Self {
        Measurement {
            bench: bench.into(),
            case: case.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            peak_rss_mib: None,
        }
    }

    pub fn with_peak_rss(mut self) -> Self {
        self.peak_rss_mib = peak_rss_mib();
        self
    }
}

/// Prints the table, then the JSON lines.
pub fn emit(measurements: &[Measurement]) {
    println!(
        "{:<10} {:<40} {:<22} {:>14} unit",
        "bench", "case", "metric", "value"
    );
    for m in measurements {
        println!(
            "{:<10} {:<40} {:<22} {:>14.2} {}",
            m.bench, m.case, m.metric, m.value, m.unit
        );
    }
    println!();
    for m in measurements {
        println!(
            "{}",
            serde_json::to_string(m).expect("measurement serialises")
        );
    }
}

/// Peak resident set size of this process (Linux `VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs `f` once to warm up, then `repeats` times, and returns the median duration.
pub fn median_time(repeats: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}
