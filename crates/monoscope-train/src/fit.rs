//! The train stage's training loop: epochs over the seeded shuffled reader, `metrics.jsonl`,
//! progress, cancellation, periodic checkpoints and resuming from one.

use std::io::{BufRead, Write};
use std::path::Path;

use monoscope_core::{StageContext, StageError};
use monoscope_sae::{SaeError, TrainConfig, Trainer};
use monoscope_store::{BatchReader, StoreError};

use crate::checkpoints::{self, Position};
use crate::stage::TrainStageError;

/// What the loop needs besides the stage context.
pub(crate) struct Fit<'a> {
    /// The shuffled reader of one epoch (a fixed seed per epoch, so replays are identical).
    pub reader: &'a dyn Fn(u64) -> Result<BatchReader, StoreError>,
    pub train_config: TrainConfig,
    pub scale: f32,
    pub epochs: u64,
    pub batch_size: usize,
    pub checkpoint_every: u64,
    pub fingerprint: String,
}

/// The trained trainer, and the step it resumed from (`None`: it started at step 0).
pub(crate) fn fit(
    fit: Fit<'_>,
    ctx: &mut StageContext<'_>,
) -> Result<(Trainer, Option<u64>), StageError> {
    let checkpoint_dir = ctx.stage_dir.join(checkpoints::DIR);
    let (mut trainer, start) = match checkpoints::resume(&checkpoint_dir, &fit.fingerprint)? {
        Some((trainer, position)) => (trainer, position),
        None => {
            let trainer =
                Trainer::new(fit.train_config, fit.scale).map_err(TrainStageError::from)?;
            (trainer, Position::default())
        }
    };
    let resumed = (trainer.step_count() > 0).then(|| trainer.step_count());
    if let Some(step) = resumed {
        tracing::info!(
            stage = ctx.stage_id,
            "resuming from {} at step {step}",
            checkpoint_dir.display()
        );
    }
    let metrics_path = ctx.stage_dir.join("metrics.jsonl");
    let mut metrics = std::io::BufWriter::new(open_metrics(&metrics_path, resumed)?);
    ctx.progress.set_length(trainer.config().total_steps);
    ctx.progress.inc(trainer.step_count());
    let mut last_checkpoint = resumed.map(|step| (checkpoint_dir.clone(), step));
    for epoch in start.epoch..fit.epochs {
        let skip = if epoch == start.epoch {
            start.batches
        } else {
            0
        };
        let reader = (fit.reader)(epoch).map_err(TrainStageError::from)?;
        for (index, batch) in (0u64..).zip(reader) {
            if index < skip {
                continue;
            }
            ctx.cancel.check()?;
            let batch = batch.map_err(TrainStageError::from)?;
            if batch.rows < fit.batch_size || trainer.is_finished() {
                continue;
            }
            let reported = trainer.step(&batch.activations).map_err(|e| match e {
                SaeError::NonFinite { .. } => checkpoints::diverged(e, last_checkpoint.clone()),
                other => other.into(),
            })?;
            if let Some(m) = reported {
                writeln!(metrics, "{}", m.to_json_line())
                    .map_err(|e| StageError::io(&metrics_path, e))?;
                ctx.progress.set_message(format!(
                    "L0 {:.1} FVU {:.3} dead {:.3}",
                    m.l0, m.fvu, m.dead_fraction
                ));
            }
            ctx.progress.inc(1);
            let step = trainer.step_count();
            if fit.checkpoint_every > 0
                && step.is_multiple_of(fit.checkpoint_every)
                && !trainer.is_finished()
            {
                // The metrics up to the checkpoint must be on disk before it claims the step.
                metrics
                    .flush()
                    .map_err(|e| StageError::io(&metrics_path, e))?;
                let position = Position {
                    fingerprint: fit.fingerprint.clone(),
                    epoch,
                    batches: index + 1,
                };
                checkpoints::save(&checkpoint_dir, &trainer, &position)
                    .map_err(TrainStageError::from)?;
                last_checkpoint = Some((checkpoint_dir.clone(), step));
            }
        }
    }
    metrics
        .flush()
        .map_err(|e| StageError::io(&metrics_path, e))?;
    Ok((trainer, resumed))
}

/// `metrics.jsonl` for writing: new, or — when resuming at `step` — keeping the lines up to
/// that step (an interrupted run may have logged past its last checkpoint).
fn open_metrics(path: &Path, resumed: Option<u64>) -> Result<std::fs::File, StageError> {
    let io = |e| StageError::io(path, e);
    let Some(step) = resumed else {
        return std::fs::File::create(path).map_err(io);
    };
    let kept: Vec<String> = match std::fs::File::open(path) {
        Ok(file) => std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .take_while(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s <= step)
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(e)),
    };
    let mut file = std::fs::File::create(path).map_err(io)?;
    for line in kept {
        writeln!(file, "{line}").map_err(io)?;
    }
    Ok(file)
}
