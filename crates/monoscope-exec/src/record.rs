//! Files a run writes about itself.
//!
//! - `<run_dir>/resolved.toml`: the fully resolved pipeline; `monoscope run` on it reproduces
//!   the run.
//! - `<run_dir>/run.json`: [`RunRecord`].
//! - `<run_dir>/<stage>/.monoscope-complete.json`: [`CompletionMarker`], written atomically and
//!   only after the stage returned successfully in a run that was not cancelled. Its absence
//!   is what marks a stage's outputs as incomplete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use monoscope_core::Artifact;
use serde::{Deserialize, Serialize};

pub const RESOLVED_FILE: &str = "resolved.toml";
pub const RUN_FILE: &str = "run.json";
pub const MARKER_FILE: &str = ".monoscope-complete.json";

/// `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
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
    pub stages: Vec<crate::StageReport>,
}

/// Proof that a stage finished, and what it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionMarker {
    pub kind: String,
    /// Hash of the stage's kind, parameters, seed, tool version and its inputs' fingerprints.
    pub fingerprint: String,
    pub finished_at: String,
    pub seconds: f64,
    /// Artifacts announced, by output port, replayed downstream when the stage is skipped.
    pub artifacts: Vec<(String, Artifact)>,
}

pub fn marker_path(stage_dir: &Path) -> PathBuf {
    stage_dir.join(MARKER_FILE)
}

/// The marker of a completed stage, if there is a readable one.
pub fn read_marker(stage_dir: &Path) -> Option<CompletionMarker> {
    let bytes = std::fs::read(marker_path(stage_dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
