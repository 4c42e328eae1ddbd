//! What the Slurm backend writes into a run directory: the batch scripts it submitted (plain
//! shell scripts a person can read and resubmit) and `slurm/jobs.json`, every submission with
//! its job id, array indices and dependencies, newest last.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::json;

/// The run directory's folder for the Slurm backend's scripts, logs and job list.
pub const SLURM_DIR: &str = "slurm";
/// The submissions, newest last.
pub const JOBS_FILE: &str = "jobs.json";
/// The folder (under [`SLURM_DIR`]) of the jobs' output.
pub const LOGS_DIR: &str = "logs";

/// What one submitted job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobRole {
    /// A stage with `parts = 1`.
    Whole,
    /// A job array, one task per part (the task index is the part).
    Parts,
    /// The merge of a stage's parts.
    Merge,
}

/// One `sbatch` call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub stage: String,
    pub role: JobRole,
    pub job_id: String,
    /// `--array` (parts only): the indices submitted, e.g. `0-3` or `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array: Option<String>,
    /// Job ids this job waits for (`--dependency=afterok:…`).
    pub after: Vec<String>,
    /// The batch script, absolute.
    pub script: PathBuf,
    pub submitted_at: String,
}

/// `slurm/jobs.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Jobs {
    pub format_version: u32,
    pub submissions: Vec<Submission>,
}

/// The Slurm folder of a run directory.
pub fn slurm_dir(run_dir: &Path) -> PathBuf {
    run_dir.join(SLURM_DIR)
}

/// The job list of a run directory; empty when there is none yet.
pub fn read_jobs(run_dir: &Path) -> Result<Jobs> {
    let path = slurm_dir(run_dir).join(JOBS_FILE);
    if !path.exists() {
        return Ok(Jobs {
            format_version: crate::FORMAT_VERSION,
            submissions: Vec::new(),
        });
    }
    json::read(&path)
}

pub fn write_jobs(run_dir: &Path, jobs: &Jobs) -> Result<()> {
    json::write_pretty(&slurm_dir(run_dir).join(JOBS_FILE), jobs)
}
