//! Periodic checkpoints of the train stage: `<stage dir>/checkpoint/` (the trainer's own
//! atomic checkpoint directory) with the data position — epoch and batches consumed of that
//! epoch's seeded shuffled reader — and a fingerprint of everything that determines the run.
//! A stage that starts and finds a checkpoint with its fingerprint continues from it, to the
//! same final SAE bit for bit; a checkpoint of another configuration or store is discarded.

use std::path::{Path, PathBuf};

use monoscope_core::fingerprint;
use monoscope_sae::{SaeError, TrainConfig, Trainer};
use serde::{Deserialize, Serialize};

use crate::TrainStageConfig;
use crate::error::TrainStageError;

/// The checkpoint directory inside the stage directory.
pub(crate) const DIR: &str = "checkpoint";

/// Where the data stream stood when a checkpoint was written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Position {
    pub fingerprint: String,
    pub epoch: u64,
    /// Batches of this epoch's reader already consumed (trained on or skipped).
    pub batches: u64,
}

/// sha256 of the stage's configuration (seed resolved; keys that do not touch training
/// ignored), the hook, the trainer's configuration and the store's manifest (which lists every
/// shard's checksum).
pub(crate) fn fingerprint(
    config: &TrainStageConfig,
    seed: u64,
    hook: &str,
    train_config: &TrainConfig,
    source: &impl serde::Serialize,
) -> String {
    let mut config = config.clone();
    config.checkpoint_every = 0;
    config.splice_tokens = 0;
    fingerprint::of_json(&serde_json::json!({
        "stage": config,
        "seed": seed,
        "hook": hook,
        "trainer": train_config,
        "store": source,
    }))
}

/// The trainer and position of a checkpoint at `dir` made with `fingerprint`; `None` when
/// there is none, or when it belongs to another run (it is then removed).
pub(crate) fn resume(
    dir: &Path,
    fingerprint: &str,
) -> Result<Option<(Trainer, Position)>, TrainStageError> {
    if !dir.exists() {
        return Ok(None);
    }
    let (trainer, position) = Trainer::resume(dir).map_err(|e| {
        TrainStageError::Invalid(format!(
            "{e}; delete {} to train from the start",
            dir.display()
        ))
    })?;
    let position: Position = serde_json::from_value(position).unwrap_or_default();
    if position.fingerprint != fingerprint {
        tracing::info!(
            "{}: a checkpoint of another configuration or store; starting over",
            dir.display()
        );
        std::fs::remove_dir_all(dir).map_err(|e| {
            TrainStageError::Invalid(format!("cannot remove {}: {e}", dir.display()))
        })?;
        return Ok(None);
    }
    Ok(Some((trainer, position)))
}

/// Writes (atomically replaces) the checkpoint.
pub(crate) fn save(dir: &Path, trainer: &Trainer, position: &Position) -> Result<(), SaeError> {
    let position = serde_json::to_value(position).expect("a position serialises");
    trainer.save_checkpoint(dir, position)
}

/// A non-finite loss or gradient, with the last good checkpoint named.
pub(crate) fn diverged(error: SaeError, last: Option<(PathBuf, u64)>) -> TrainStageError {
    let recovery = match last {
        Some((dir, step)) => format!(
            "the last good checkpoint is {} (step {step})",
            dir.display()
        ),
        None => "no checkpoint was written (set `checkpoint_every` to keep some)".into(),
    };
    TrainStageError::Invalid(format!("training diverged: {error}; {recovery}"))
}
