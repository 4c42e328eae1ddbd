//! A run directory: what the executor writes about the run, and finding a stage's outputs by
//! the kind `run.json` records for it.
//!
//! - `<run>/resolved.toml`: the fully resolved pipeline; `monoscope run` on it reproduces the run.
//! - `<run>/run.json`: [`RunRecord`].
//! - `<run>/<stage id>/`: each stage's directory, holding its outputs and, once it finished,
//!   its [`CompletionMarker`] (`.monoscope-complete.json`), written atomically and only after the
//!   stage returned successfully in a run that was not cancelled. Its absence is what marks a
//!   stage's outputs as incomplete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ArtifactError, Result};
use crate::{Artifact, json};

pub const RESOLVED_FILE: &str = "resolved.toml";
pub const RUN_FILE: &str = "run.json";
pub const MARKER_FILE: &str = ".monoscope-complete.json";
/// Held (`flock`) by the process running a pipeline in the directory; holds its pid.
pub const LOCK_FILE: &str = ".monoscope.lock";

/// The version of the layout of a run directory and every stage file in it, recorded in
/// `run.json` and in each completion marker. Files written before versions were recorded
/// read as version 1, which is the same layout.
pub const FORMAT_VERSION: u32 = 1;
/// The oldest layout this version reads.
pub const OLDEST_READABLE_VERSION: u32 = 1;

fn unversioned() -> u32 {
    1
}

/// How a stage's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    Ran,
    Skipped,
    Failed,
    Cancelled,
}

/// One stage's line in `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageReport {
    pub id: String,
    pub kind: String,
    pub status: StageStatus,
    /// Working time: from the moment every input it read had delivered to its end.
    pub seconds: f64,
    /// Time spent waiting for its inputs before that.
    #[serde(default)]
    pub waited_seconds: f64,
    /// Peak resident memory of the process while the stage worked (sampled). Stages that work
    /// at the same time share their peaks.
    #[serde(default)]
    pub peak_rss_bytes: Option<u64>,
    pub fingerprint: String,
}

/// `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    #[serde(default = "unversioned")]
    pub format_version: u32,
    pub tool: String,
    pub version: String,
    pub git_commit: String,
    pub pipeline: String,
    pub pipeline_file: PathBuf,
    pub seed: u64,
    pub overrides: Vec<String>,
    /// Dotted key to where its value came from.
    pub provenance: BTreeMap<String, String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub error: Option<String>,
    /// Peak resident memory of the whole run's process (`VmHWM`), in bytes.
    #[serde(default)]
    pub peak_rss_bytes: Option<u64>,
    pub stages: Vec<StageReport>,
}

/// Proof that a stage finished, and what it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionMarker {
    #[serde(default = "unversioned")]
    pub format_version: u32,
    pub kind: String,
    /// Hash of the stage's kind, parameters, seed, tool version and its inputs' fingerprints.
    pub fingerprint: String,
    pub finished_at: String,
    pub seconds: f64,
    /// Artifacts announced, by output port, replayed downstream when the stage is skipped.
    pub artifacts: Vec<(String, Artifact)>,
}

/// One process at a time in a run directory: an exclusive `flock` on [`LOCK_FILE`], released
/// when this is dropped or the process ends however it ends (a kill included), so a stale
/// lock file never blocks a rerun.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    /// Takes the lock of `run_dir` (created if missing) or fails at once, naming the process
    /// that holds it.
    pub fn acquire(run_dir: &Path) -> Result<RunLock> {
        use std::io::{Read, Seek, Write};
        std::fs::create_dir_all(run_dir).map_err(ArtifactError::io(run_dir))?;
        let path = run_dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(ArtifactError::io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim().parse::<u32>() {
                    Ok(pid) => format!("another monoscope process (pid {pid})"),
                    Err(_) => "another monoscope process".into(),
                };
                return Err(ArtifactError::invalid(
                    run_dir,
                    format!(
                        "{holder} is running a pipeline in this run directory; wait for it to \
                         finish or stop it (the lock is {})",
                        path.display()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(ArtifactError::io(&path)(e)),
        }
        let pid = format!("{}\n", std::process::id());
        (|| {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(pid.as_bytes())
        })()
        .map_err(ArtifactError::io(&path))?;
        Ok(RunLock { _file: file })
    }
}

pub fn marker_path(stage_dir: &Path) -> PathBuf {
    stage_dir.join(MARKER_FILE)
}

/// The marker of a completed stage, if there is a readable one of a layout this version reads.
pub fn read_marker(stage_dir: &Path) -> Option<CompletionMarker> {
    let marker: CompletionMarker = json::read(&marker_path(stage_dir)).ok()?;
    check_version(&marker_path(stage_dir), marker.format_version)
        .ok()
        .map(|()| marker)
}

pub fn write_marker(stage_dir: &Path, marker: &CompletionMarker) -> Result<()> {
    json::write_pretty(&marker_path(stage_dir), marker)
}

pub fn write_run_record(run_dir: &Path, record: &RunRecord) -> Result<()> {
    json::write_pretty(&run_dir.join(RUN_FILE), record)
}

fn check_version(path: &Path, found: u32) -> Result<()> {
    if (OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&found) {
        Ok(())
    } else {
        Err(ArtifactError::Version {
            path: path.to_path_buf(),
            found,
            oldest: OLDEST_READABLE_VERSION,
            newest: FORMAT_VERSION,
        })
    }
}

/// A finished run directory, opened through its `run.json`.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    pub record: RunRecord,
}

/// A stage of a run whose completion marker is present.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletedStage {
    pub id: String,
    pub kind: String,
    pub dir: PathBuf,
}

impl Run {
    /// Reads `<dir>/run.json`; an error says when `dir` is not a run directory or was written
    /// by a version of monoscope this one cannot read.
    pub fn open(dir: &Path) -> Result<Run> {
        let path = dir.join(RUN_FILE);
        if !path.is_file() {
            return Err(ArtifactError::invalid(
                dir,
                format!(
                    "not a run directory (no {RUN_FILE}; runs made before monoscope recorded one cannot be opened: run the pipeline again)"
                ),
            ));
        }
        let record: RunRecord = json::read(&path)?;
        check_version(&path, record.format_version)?;
        Ok(Run {
            dir: dir.to_path_buf(),
            record,
        })
    }

    /// Whether `dir` holds a `run.json`.
    pub fn is_run_dir(dir: &Path) -> bool {
        dir.join(RUN_FILE).is_file()
    }

    /// The completed stages of one of `kinds`, in the order `run.json` lists them.
    pub fn completed(&self, kinds: &[&str]) -> Vec<CompletedStage> {
        self.record
            .stages
            .iter()
            .filter(|s| kinds.contains(&s.kind.as_str()))
            .filter(|s| read_marker(&self.dir.join(&s.id)).is_some_and(|m| m.kind == s.kind))
            .map(|s| CompletedStage {
                id: s.id.clone(),
                kind: s.kind.clone(),
                dir: self.dir.join(&s.id),
            })
            .collect()
    }

    /// The one completed stage of one of `kinds` (`what` names them in messages), or the stage
    /// called `id` when given. None when the run has no such stage; an error when several
    /// match, listing them, or when `id` names a stage of another kind or an unfinished one.
    pub fn find(
        &self,
        kinds: &[&str],
        id: Option<&str>,
        what: &str,
    ) -> Result<Option<CompletedStage>> {
        if let Some(id) = id {
            let Some(stage) = self.record.stages.iter().find(|s| s.id == id) else {
                let ids: Vec<&str> = self.record.stages.iter().map(|s| s.id.as_str()).collect();
                return Err(ArtifactError::invalid(
                    &self.dir,
                    format!(
                        "no stage `{id}` in this run (its stages: {})",
                        ids.join(", ")
                    ),
                ));
            };
            if !kinds.contains(&stage.kind.as_str()) {
                return Err(ArtifactError::invalid(
                    &self.dir,
                    format!(
                        "stage `{id}` is a `{}` stage, not {what} ({})",
                        stage.kind,
                        kinds.join(" or ")
                    ),
                ));
            }
            return match self.completed(kinds).into_iter().find(|s| s.id == id) {
                Some(stage) => Ok(Some(stage)),
                None => Err(ArtifactError::invalid(
                    &self.dir.join(id),
                    "the stage did not complete (no completion marker): run the pipeline again",
                )),
            };
        }
        let mut found = self.completed(kinds);
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(ArtifactError::invalid(
                &self.dir,
                format!(
                    "{} stages hold {what}: {}; name one",
                    found.len(),
                    found
                        .iter()
                        .map(|s| format!("`{}` ({})", s.id, s.kind))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// Like [`Run::find`], but a run without such a stage is an error.
    pub fn require(&self, kinds: &[&str], id: Option<&str>, what: &str) -> Result<CompletedStage> {
        self.find(kinds, id, what)?.ok_or_else(|| {
            ArtifactError::invalid(
                &self.dir,
                format!(
                    "no completed {} stage in this run (it holds {what})",
                    kinds.join(" or ")
                ),
            )
        })
    }
}

/// The directory of a completed stage of one of `kinds`, from a path that is either a run
/// directory (the stage found through `run.json`, or the one called `id`) or the stage
/// directory itself (its completion marker must name one of `kinds`).
pub fn locate_stage(path: &Path, kinds: &[&str], id: Option<&str>, what: &str) -> Result<PathBuf> {
    if Run::is_run_dir(path) {
        return Ok(Run::open(path)?.require(kinds, id, what)?.dir);
    }
    let marker_file = marker_path(path);
    if marker_file.is_file() {
        let marker: CompletionMarker = json::read(&marker_file)?;
        check_version(&marker_file, marker.format_version)?;
        if kinds.contains(&marker.kind.as_str()) {
            return Ok(path.to_path_buf());
        }
        return Err(ArtifactError::invalid(
            path,
            format!(
                "a `{}` stage directory, not one holding {what} ({})",
                marker.kind,
                kinds.join(" or ")
            ),
        ));
    }
    Err(ArtifactError::invalid(
        path,
        format!(
            "neither a run directory ({RUN_FILE}) nor a completed {} stage directory ({MARKER_FILE})",
            kinds.join(" or ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_run_directory_fails_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        let pid = format!("pid {}", std::process::id());
        assert!(err.contains(&pid), "{err}");
        drop(first);
        let _again = RunLock::acquire(dir.path()).unwrap();
    }
}
