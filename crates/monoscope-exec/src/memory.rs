//! Resident memory over time, so that each stage of a run that shares one process gets its own
//! peak: the largest resident set sampled while the stage was working.
//!
//! The kernel keeps only one high-water mark per process (`VmHWM`), and stages overlap (a
//! streaming consumer works while its producer does), so the sampler reads `VmRSS` from
//! `/proc/self/status` every `interval` and answers "the peak between these two instants".
//! A spike shorter than the interval can be missed; the whole run's peak is also taken from
//! `VmHWM`, which misses nothing. Elsewhere than Linux every figure is `None`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Samples resident memory on a background thread until dropped.
#[derive(Debug)]
pub struct RssSampler {
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(interval: Duration) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = read_status_kib("VmRSS").is_some().then(|| {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(kib) = read_status_kib("VmRSS") {
                        let mut samples = samples.lock().unwrap_or_else(|p| p.into_inner());
                        samples.push((Instant::now(), kib * 1024));
                    }
                    std::thread::sleep(interval);
                }
            })
        });
        RssSampler {
            samples,
            stop,
            thread,
        }
    }

    /// The largest sample taken from `from` to `to`, and the resident set now (a stage
    /// shorter than the interval still gets a figure).
    pub fn peak_between(&self, from: Instant, to: Instant) -> Option<u64> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let sampled = samples
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|&(_, bytes)| bytes)
            .max();
        let now = read_status_kib("VmRSS").map(|kib| kib * 1024);
        sampled.max(now).or(sampled)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The process's peak resident memory so far (`VmHWM`), in bytes.
pub fn process_peak_rss() -> Option<u64> {
    read_status_kib("VmHWM").map(|kib| kib * 1024)
}

/// A `kB` line of `/proc/self/status`.
fn read_status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn a_stage_that_allocates_shows_its_peak() {
        let sampler = RssSampler::start(Duration::from_millis(5));
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        let quiet = sampler.peak_between(before, Instant::now()).unwrap();
        let from = Instant::now();
        // 256 MiB, touched so that it is resident.
        let block = vec![1u8; 256 << 20];
        std::thread::sleep(Duration::from_millis(40));
        let busy = sampler.peak_between(from, Instant::now()).unwrap();
        assert!(
            std::hint::black_box(&block)
                .iter()
                .step_by(4096)
                .all(|&b| b == 1)
        );
        drop(block);
        assert!(
            busy >= quiet + (200 << 20),
            "peak {busy} while holding 256 MiB, {quiet} before"
        );
        assert!(process_peak_rss().unwrap() >= busy - (8 << 20));
    }
}
