//! The train stage's training loop: epochs over the seeded shuffled reader, `metrics.jsonl`,
//! progress, cancellation, periodic checkpoints and resuming from one. Every SAE of a sweep
//! steps on each batch as it comes, so the data is read once for all of them.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use monoscope_core::{StageContext, StageError};
use monoscope_sae::{SaeError, TrainConfig, Trainer};

use crate::checkpoints::{self, Position};
use crate::error::TrainStageError;

/// One SAE the loop trains: its configuration and where its checkpoint and metrics go.
pub(crate) struct Member {
    pub train_config: TrainConfig,
    pub checkpoint_dir: PathBuf,
    pub metrics_path: PathBuf,
}

/// The training batches of one epoch, `[batch_size, d_in]` row-major each (a shorter one at
/// the end is skipped), in an order fixed by the seed, so that replays are identical.
pub(crate) type Epoch = Box<dyn Iterator<Item = Result<Vec<f32>, TrainStageError>>>;

/// What the loop needs besides the stage context. The first member is the main SAE: the
/// progress bar shows its metrics.
pub(crate) struct Fit<'a> {
    /// The batches of each epoch.
    pub reader: &'a mut dyn FnMut(u64) -> Result<Epoch, TrainStageError>,
    pub members: Vec<Member>,
    pub scale: f32,
    pub epochs: u64,
    pub batch_size: usize,
    pub checkpoint_every: u64,
    pub fingerprint: String,
}

/// The trained trainers (in member order), and the step they resumed from (`None`: they
/// started at step 0).
pub(crate) fn fit(
    fit: Fit<'_>,
    ctx: &mut StageContext<'_>,
) -> Result<(Vec<Trainer>, Option<u64>), StageError> {
    let (mut trainers, start) = resume_all(&fit)?;
    let d_in = trainers[0].config().d_in;
    let main_steps = trainers[0].step_count();
    let resumed = (main_steps > 0).then_some(main_steps);
    if let Some(step) = resumed {
        tracing::info!(
            stage = ctx.stage_id,
            "resuming from {} at step {step}",
            fit.members[0].checkpoint_dir.display()
        );
    }
    let mut metrics: Vec<BufWriter<std::fs::File>> = fit
        .members
        .iter()
        .map(|m| open_metrics(&m.metrics_path, resumed).map(BufWriter::new))
        .collect::<Result<_, _>>()?;
    ctx.progress.set_length(trainers[0].config().total_steps);
    ctx.progress.inc(main_steps);
    let mut last_checkpoint = resumed.map(|step| (fit.members[0].checkpoint_dir.clone(), step));
    for epoch in start.epoch..fit.epochs {
        let skip = if epoch == start.epoch {
            start.batches
        } else {
            0
        };
        let reader = (fit.reader)(epoch)?;
        for (index, batch) in (0u64..).zip(reader) {
            if index < skip {
                continue;
            }
            ctx.cancel.check()?;
            let batch = batch?;
            if batch.len() < fit.batch_size * d_in || trainers[0].is_finished() {
                continue;
            }
            for (m, trainer) in trainers.iter_mut().enumerate() {
                let reported = trainer.step(&batch).map_err(|e| match e {
                    SaeError::NonFinite { .. } => checkpoints::diverged(e, last_checkpoint.clone()),
                    other => other.into(),
                })?;
                let Some(line) = reported else { continue };
                let path = &fit.members[m].metrics_path;
                writeln!(metrics[m], "{}", line.to_json_line())
                    .map_err(|e| StageError::io(path, e))?;
                if m == 0 {
                    ctx.progress.set_message(format!(
                        "L0 {:.1} FVU {:.3} dead {:.3}",
                        line.l0, line.fvu, line.dead_fraction
                    ));
                }
            }
            ctx.progress.inc(1);
            let step = trainers[0].step_count();
            if fit.checkpoint_every > 0
                && step.is_multiple_of(fit.checkpoint_every)
                && !trainers[0].is_finished()
            {
                let position = Position {
                    fingerprint: fit.fingerprint.clone(),
                    epoch,
                    batches: index + 1,
                };
                for ((member, trainer), writer) in
                    fit.members.iter().zip(&trainers).zip(&mut metrics)
                {
                    // The metrics up to the checkpoint must be on disk before it claims the step.
                    writer
                        .flush()
                        .map_err(|e| StageError::io(&member.metrics_path, e))?;
                    checkpoints::save(&member.checkpoint_dir, trainer, &position)
                        .map_err(TrainStageError::from)?;
                }
                last_checkpoint = Some((fit.members[0].checkpoint_dir.clone(), step));
            }
        }
    }
    for (member, writer) in fit.members.iter().zip(&mut metrics) {
        writer
            .flush()
            .map_err(|e| StageError::io(&member.metrics_path, e))?;
    }
    Ok((trainers, resumed))
}

/// Every member's checkpoint when all of them stand at the same position; otherwise (none,
/// or an interruption between two members' saves) fresh trainers and any checkpoint removed.
fn resume_all(fit: &Fit<'_>) -> Result<(Vec<Trainer>, Position), StageError> {
    let mut found = Vec::new();
    for member in &fit.members {
        found.push(checkpoints::resume(
            &member.checkpoint_dir,
            &fit.fingerprint,
        )?);
    }
    let first = found[0].as_ref().map(|(_, p)| p.clone());
    let consistent = found
        .iter()
        .all(|f| f.as_ref().map(|(_, p)| p) == first.as_ref());
    if let (Some(position), true) = (first, consistent) {
        let trainers = found.into_iter().flatten().map(|(t, _)| t).collect();
        return Ok((trainers, position));
    }
    let mut trainers = Vec::new();
    for member in &fit.members {
        if member.checkpoint_dir.exists() {
            std::fs::remove_dir_all(&member.checkpoint_dir)
                .map_err(|e| StageError::io(&member.checkpoint_dir, e))?;
        }
        trainers.push(
            Trainer::new(member.train_config.clone(), fit.scale).map_err(TrainStageError::from)?,
        );
    }
    Ok((trainers, Position::default()))
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
