use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

/// How often a stage's progress is logged when no terminal shows the bar.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A stage's progress: a bar on a terminal, periodic log lines elsewhere.
///
/// Cheap to clone; all clones update the same bar.
#[derive(Debug, Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    stage: String,
    bar: ProgressBar,
    log_lines: bool,
    last_log: Mutex<Option<Instant>>,
}

impl Progress {
    /// `log_lines`: also emit a `tracing` event at most every few seconds (for log files and
    /// non-terminal output, where the bar itself is hidden).
    pub fn new(stage: impl Into<String>, bar: ProgressBar, log_lines: bool) -> Self {
        Progress {
            inner: Arc::new(Inner {
                stage: stage.into(),
                bar,
                log_lines,
                last_log: Mutex::new(None),
            }),
        }
    }

    /// Shows nothing and logs nothing (tests).
    pub fn hidden(stage: impl Into<String>) -> Self {
        Progress::new(stage, ProgressBar::hidden(), false)
    }

    /// The total amount of work, in the unit the stage counts (tokens, steps, features).
    pub fn set_length(&self, length: u64) {
        self.inner.bar.set_length(length);
    }

    pub fn inc(&self, delta: u64) {
        self.inner.bar.inc(delta);
        self.maybe_log();
    }

    pub fn set_position(&self, position: u64) {
        self.inner.bar.set_position(position);
        self.maybe_log();
    }

    pub fn set_message(&self, message: impl Into<String>) {
        let message = message.into();
        if self.inner.log_lines {
            tracing::info!(stage = %self.inner.stage, "{message}");
        }
        self.inner.bar.set_message(message);
    }

    pub fn position(&self) -> u64 {
        self.inner.bar.position()
    }

    pub fn finish(&self) {
        self.inner.bar.finish();
    }

    fn maybe_log(&self) {
        if !self.inner.log_lines {
            return;
        }
        let mut last = self
            .inner
            .last_log
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return;
        }
        *last = Some(now);
        let bar = &self.inner.bar;
        match bar.length() {
            Some(len) => tracing::info!(stage = %self.inner.stage, "{} / {len}", bar.position()),
            None => tracing::info!(stage = %self.inner.stage, "{}", bar.position()),
        }
    }
}
