//! Runs a validated pipeline.
//!
//! Each stage runs on its own thread (`std::thread::scope`); stages are connected by bounded
//! `crossbeam-channel` channels, so a slow consumer throttles its producer and memory between
//! two stages is bounded by the channel capacity. The first error cancels every other stage and
//! is reported with the failing stage's id; a panic becomes an error.
//!
//! - [`run`] with [`RunOptions`] → [`RunReport`] or [`ExecError`].
//! - [`memory`]: resident memory sampled over the run, for each stage's peak.
//! - [`record`]: what a run writes besides the stages' own outputs: `resolved.toml`,
//!   `run.json` (provenance, versions, times, per-stage timings) and each stage's completion
//!   marker, which is what lets a rerun skip completed stages.
//! - [`parts`]: a stage's `parts = N` as child processes of this machine, then its merge.
//! - [`run_stage`]: one stage, part or merge on its own from a run directory (`monoscope
//!   run-stage`): what a part's child process, a Slurm job or a Kubernetes pod runs.
//! - [`k8s`]: Kubernetes Job manifests for a pipeline (generated, not submitted).
//! - [`slurm`]: the Slurm backend: batch scripts, job arrays with dependencies, following the
//!   jobs, resubmitting only what is missing.

mod executor;
pub mod k8s;
pub mod memory;
pub mod parts;
pub mod record;
pub mod slurm;
mod standalone;

pub use executor::{
    ExecError, ProgressMode, RunOptions, RunReport, StageReport, StageStatus, error_chain, run,
};
pub use standalone::{StageWork, run_stage};
