//! Every file one monoscope stage writes for another (or for a person, or another tool) to
//! read: the typed records, the file names, the format version, and finding a stage's outputs
//! in a run directory. No other crate names or parses these files; the formats with a crate of
//! their own (the activation store's shards, the SAE's SAELens files, model checkpoints) are
//! named here only as the directories that hold them.
//!
//! - [`run`]: `run.json`, `resolved.toml`, each stage's completion marker, [`FORMAT_VERSION`],
//!   and [`Run::open`], which finds a stage's directory by the kind `run.json` records for it.
//! - One module per stage kind, each with the kind's name, its file names, its records and an
//!   `…Outputs` type over a stage directory that reads and writes them: [`capture`], [`train`]
//!   (also `import-sae`), [`label`] (`autointerp-label`), [`cluster`], [`steer`], [`browser`],
//!   and the analyses [`split`] (feature splitting across sizes) and [`coverage`]
//!   (completeness against frequency).
//! - [`jobs`]: the Slurm backend's `slurm/jobs.json` (what it submitted) beside its scripts.
//! - [`Artifact`], [`ArtifactKind`]: what an artifact port carries between stages.
//! - [`json`]: JSON and JSON-lines reads that name the file and line of a bad record, and
//!   atomic writes; [`atomic`]: write-to-temporary-then-rename, synced, with the recovery of
//!   an interrupted directory swap; [`run::RunLock`]: one run at a time per run directory.
//! - [`fault`]: the named points where the crash and full-disk tests inject a fault.
//! - [`ArtifactError`]: every error names its file.

mod artifact;
pub mod atomic;
pub mod browser;
pub mod capture;
pub mod cluster;
pub mod coverage;
mod error;
pub mod fault;
pub mod jobs;
pub mod json;
pub mod label;
pub mod run;
pub mod split;
pub mod steer;
pub mod train;

pub use artifact::{Artifact, ArtifactKind};
pub use error::{ArtifactError, Result};
pub use run::{CompletedStage, FORMAT_VERSION, Run, locate_stage};
