//! A stage's `parts = N` on this machine: each part a child process (`monoscope run-stage RUN
//! STAGE --part I`), at most `max_parallel` of them at once over the whole run; the merge then
//! runs in the executor's thread for the stage, like any stage.
//!
//! A part whose completion marker (in `<stage>/parts/<i>/`) carries this configuration's part
//! fingerprint is not run again: a rerun after a failure runs only the parts that are missing.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use monoscope_core::{Artifact, CancelToken, StageContext, StageError, fingerprint, part_dir};

use crate::record;

/// Names the executable that runs parts instead of this one: needed where this process is not
/// the `monoscope` binary (a test binary driving the library).
pub const EXE_ENV: &str = "MONOSCOPE_EXE";

/// The `monoscope` subcommand that runs one stage, one part or one merge from a run directory.
pub const RUN_STAGE_SUBCOMMAND: &str = "run-stage";

/// How often a waiting part looks at its child and at the cancellation flag.
const POLL: Duration = Duration::from_millis(100);

/// The executable that runs parts: [`EXE_ENV`] if set, else this one, made absolute.
pub fn worker_executable() -> std::io::Result<PathBuf> {
    let exe = match std::env::var_os(EXE_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => std::env::current_exe()?,
    };
    std::path::absolute(exe)
}

/// The fingerprint a part's completion marker carries: the stage's, the part and the count.
pub fn part_fingerprint(stage_fingerprint: &str, index: usize, count: usize) -> String {
    fingerprint::of_json(&serde_json::json!({
        "stage": stage_fingerprint,
        "part": index,
        "parts": count,
    }))
}

/// Part `index`'s announced artifacts, when it completed with this configuration.
pub fn completed_part(
    stage_dir: &Path,
    stage_fingerprint: &str,
    index: usize,
    count: usize,
) -> Option<Vec<(String, Artifact)>> {
    let marker = record::read_marker(&part_dir(stage_dir, index))?;
    let complete = marker.fingerprint == part_fingerprint(stage_fingerprint, index, count)
        && marker.artifacts.iter().all(|(_, a)| a.path.exists());
    complete.then_some(marker.artifacts)
}

/// Where part `index`'s child writes what it prints.
pub fn part_log(stage_dir: &Path, index: usize) -> PathBuf {
    stage_dir
        .join(monoscope_core::PARTS_DIR)
        .join(format!("{index}.log"))
}

/// Child processes running at once, over every stage of a run.
#[derive(Debug)]
pub struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    pub fn new(count: usize) -> Slots {
        Slots {
            free: Mutex::new(count.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Waits for a free slot; `None` once the run is cancelled.
    fn take(&self, cancel: &CancelToken) -> Option<SlotGuard<'_>> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            if *free > 0 {
                *free -= 1;
                return Some(SlotGuard { slots: self });
            }
            free = self
                .freed
                .wait_timeout(free, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

struct SlotGuard<'a> {
    slots: &'a Slots,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.slots.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.slots.freed.notify_one();
    }
}

/// One stage's parts, as the executor runs them.
pub(crate) struct LocalParts<'a> {
    pub run_dir: &'a Path,
    pub stage: &'a str,
    pub count: usize,
    pub fingerprint: &'a str,
    /// Stage ids and fingerprints of the stages this one reads: their markers must be written
    /// before a child can read them.
    pub upstream: Vec<(String, String)>,
    pub slots: &'a Slots,
}

impl LocalParts<'_> {
    /// Runs the parts that are not complete, then returns every part's announced artifacts
    /// (what the merge gets).
    pub fn run(
        &self,
        ctx: &mut StageContext<'_>,
    ) -> Result<Vec<Vec<(String, Artifact)>>, StageError> {
        self.wait_for_upstream(&ctx.cancel)?;
        let stage_dir = self.run_dir.join(self.stage);
        let parts_dir = stage_dir.join(monoscope_core::PARTS_DIR);
        std::fs::create_dir_all(&parts_dir).map_err(|e| StageError::io(&parts_dir, e))?;
        let missing: Vec<usize> = (0..self.count)
            .filter(|&i| completed_part(&stage_dir, self.fingerprint, i, self.count).is_none())
            .collect();
        ctx.progress.set_length(self.count as u64);
        ctx.progress
            .set_position((self.count - missing.len()) as u64);
        ctx.progress.set_message(format!(
            "{} of {} parts to run, in child processes",
            missing.len(),
            self.count
        ));
        let exe = worker_executable().map_err(|e| {
            StageError::Invalid(format!(
                "cannot find the monoscope executable for the parts: {e}"
            ))
        })?;
        let cancel = ctx.cancel.clone();
        let progress = &ctx.progress;
        let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for &index in &missing {
                let (exe, cancel, failures, stage_dir) = (&exe, &cancel, &failures, &stage_dir);
                scope.spawn(move || {
                    let Some(_slot) = self.slots.take(cancel) else {
                        return;
                    };
                    match self.run_child(exe, index, stage_dir, cancel) {
                        Ok(true) => progress.inc(1),
                        Ok(false) => {}
                        Err(message) => {
                            failures
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(message);
                            // One failed part fails the stage: the others stop early.
                            cancel.cancel();
                        }
                    }
                });
            }
        });
        let mut failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
        if !failures.is_empty() {
            failures.sort();
            return Err(StageError::Invalid(failures.join("; ")));
        }
        ctx.cancel.check()?;
        (0..self.count)
            .map(|i| {
                completed_part(&stage_dir, self.fingerprint, i, self.count).ok_or_else(|| {
                    StageError::Invalid(format!(
                        "part {i} of {} finished without its completion marker",
                        self.count
                    ))
                })
            })
            .collect()
    }

    /// `Ok(true)`: the part completed; `Ok(false)`: cancelled; `Err`: why it failed.
    fn run_child(
        &self,
        exe: &Path,
        index: usize,
        stage_dir: &Path,
        cancel: &CancelToken,
    ) -> Result<bool, String> {
        let log = part_log(stage_dir, index);
        let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child: Child = Command::new(exe)
            .arg(RUN_STAGE_SUBCOMMAND)
            .arg(self.run_dir)
            .arg(self.stage)
            .arg("--part")
            .arg(index.to_string())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("part {index}: cannot start {}: {e}", exe.display()))?;
        tracing::debug!(stage = %self.stage, part = index, pid = child.id(), "part started");
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(true),
                Ok(Some(status)) => {
                    return Err(format!(
                        "part {index} of {} failed ({status}): {} (its output: {})",
                        self.count,
                        last_line(&log),
                        log.display()
                    ));
                }
                Ok(None) if cancel.is_cancelled() => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(false);
                }
                Ok(None) => std::thread::sleep(POLL),
                Err(e) => return Err(format!("part {index}: waiting for its process: {e}")),
            }
        }
    }

    /// The executor hands a finished artifact downstream just before its producer writes its
    /// completion marker; a child reads the marker, so the parts start once it is there.
    fn wait_for_upstream(&self, cancel: &CancelToken) -> Result<(), StageError> {
        for (stage, fingerprint) in &self.upstream {
            let dir = self.run_dir.join(stage);
            while record::read_marker(&dir).is_none_or(|m| &m.fingerprint != fingerprint) {
                cancel.check()?;
                std::thread::sleep(POLL / 4);
            }
        }
        Ok(())
    }
}

/// The last non-empty line of a child's output: usually its error.
pub fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|text| {
            text.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "it printed nothing".into())
}
