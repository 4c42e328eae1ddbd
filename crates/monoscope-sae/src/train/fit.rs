//! Training one or more SAEs on one stream of batches: epochs over a seeded reader, every SAE
//! stepping on each batch as it comes (one read of the data feeds a whole sweep, as SAELens's
//! multi-SAE runner and sparsify's `init_seeds` do), `metrics.jsonl` per SAE, periodic
//! checkpoints that record the data position, and resuming from them to the same final SAEs bit
//! for bit. The caller supplies the batches of each epoch and shows the progress; checkpoints
//! and resuming are decided here.
//!
//! A checkpoint is each SAE's trainer checkpoint ([`Trainer::save_checkpoint`]) with a
//! [`Position`]: the epoch, the batches of that epoch's reader already consumed, and the
//! caller's fingerprint of everything that determines the run. A fit that finds checkpoints of
//! its fingerprint, all at the same position, continues from them; otherwise it starts over and
//! removes them.

use std::path::{Path, PathBuf};

use monoscope_artifacts::train::MetricsLog;
use serde::{Deserialize, Serialize};

use super::compute::Compute;
use super::config::TrainConfig;
use super::trainer::Trainer;
use crate::{SaeError, StepMetrics};

/// One SAE of a fit: its configuration and where its checkpoint and metrics go.
#[derive(Debug, Clone)]
pub struct FitMember {
    pub config: TrainConfig,
    pub checkpoint_dir: PathBuf,
    pub metrics_path: PathBuf,
}

/// Where the data stream stood when a checkpoint was written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub fingerprint: String,
    pub epoch: u64,
    /// Batches of this epoch's reader already consumed (trained on or skipped).
    pub batches: u64,
}

/// How to run a fit.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// The input scale every trainer starts with.
    pub scale: f32,
    pub epochs: u64,
    /// Rows per batch; a shorter batch (the end of an epoch) is skipped.
    pub batch_size: usize,
    /// Steps between checkpoints (0: none).
    pub checkpoint_every: u64,
    /// Identifies the run (configuration and data): a checkpoint of another is discarded.
    pub fingerprint: String,
}

/// The batches of one epoch, `[batch_size, d_in]` row-major each, in an order fixed by the
/// caller's seed so that a resumed fit sees the same batches.
pub type Batches<E> = Box<dyn Iterator<Item = Result<Vec<f32>, E>>>;

/// What the caller sees of a fit as it goes. The first member is the main SAE.
pub trait FitObserver {
    /// Before the first step: the main SAE's total steps, and when resuming, its checkpoint
    /// directory and the step it stands at.
    fn started(&mut self, _total_steps: u64, _resumed: Option<(&Path, u64)>) {}
    /// After each step, with the main SAE's report when it made one.
    fn stepped(&mut self, _main: Option<&StepMetrics>) {}
    /// A checkpoint of another run (configuration or data) was found and removed.
    fn discarded(&mut self, _checkpoint_dir: &Path) {}
    /// Checked before each step: `true` stops the fit with [`SaeError::Cancelled`].
    fn cancelled(&self) -> bool {
        false
    }
}

/// An observer that sees nothing and never cancels.
#[derive(Debug, Default)]
pub struct Unobserved;

impl FitObserver for Unobserved {}

/// The trained trainers, in member order.
#[derive(Debug)]
pub struct Fitted {
    pub trainers: Vec<Trainer>,
    /// The step the main SAE resumed from (`None`: it started at step 0).
    pub resumed_from_step: Option<u64>,
}

/// Trains every member on the batches `epoch(e)` gives for each epoch `e`, on the host.
pub fn fit<E: From<SaeError>>(
    members: &[FitMember],
    options: &FitOptions,
    epoch: &mut dyn FnMut(u64) -> Result<Batches<E>, E>,
    observer: &mut dyn FitObserver,
) -> Result<Fitted, E> {
    fit_on(members, options, &Compute::Host, epoch, observer)
}

/// [`fit`] with every trainer computing on `compute` (new ones and resumed ones alike: a
/// checkpoint written on either compute resumes on the other). What it writes is the same.
pub fn fit_on<E: From<SaeError>>(
    members: &[FitMember],
    options: &FitOptions,
    compute: &Compute,
    epoch: &mut dyn FnMut(u64) -> Result<Batches<E>, E>,
    observer: &mut dyn FitObserver,
) -> Result<Fitted, E> {
    assert!(!members.is_empty(), "a fit trains at least one SAE");
    let (mut trainers, start) = resume_all(members, options, compute, observer)?;
    let d_in = trainers[0].config().d_in;
    let main_steps = trainers[0].step_count();
    let resumed = (main_steps > 0).then_some(main_steps);
    observer.started(
        trainers[0].config().total_steps,
        resumed.map(|step| (members[0].checkpoint_dir.as_path(), step)),
    );
    let mut metrics: Vec<MetricsLog> = members
        .iter()
        .map(|m| MetricsLog::open(&m.metrics_path, resumed))
        .collect::<Result<_, _>>()
        .map_err(SaeError::from)?;
    let mut last_checkpoint = resumed.map(|step| (members[0].checkpoint_dir.clone(), step));
    for e in start.epoch..options.epochs {
        let skip = if e == start.epoch { start.batches } else { 0 };
        for (index, batch) in (0u64..).zip(epoch(e)?) {
            if index < skip {
                continue;
            }
            if observer.cancelled() {
                return Err(SaeError::Cancelled.into());
            }
            let batch = batch?;
            if batch.len() < options.batch_size * d_in || trainers[0].is_finished() {
                continue;
            }
            let mut main_report = None;
            for (m, trainer) in trainers.iter_mut().enumerate() {
                // A member with fewer steps than the main SAE stops early.
                if trainer.is_finished() {
                    continue;
                }
                let reported = trainer.step(&batch).map_err(|e| match e {
                    SaeError::NonFinite { .. } => diverged(e, last_checkpoint.as_ref()),
                    other => other,
                })?;
                let Some(line) = reported else { continue };
                metrics[m].append(&line).map_err(SaeError::from)?;
                if m == 0 {
                    main_report = Some(line);
                }
            }
            observer.stepped(main_report.as_ref());
            let step = trainers[0].step_count();
            if options.checkpoint_every > 0
                && step.is_multiple_of(options.checkpoint_every)
                && !trainers[0].is_finished()
            {
                let position = Position {
                    fingerprint: options.fingerprint.clone(),
                    epoch: e,
                    batches: index + 1,
                };
                for ((member, trainer), log) in members.iter().zip(&trainers).zip(&mut metrics) {
                    // The metrics up to the checkpoint must be on disk before it claims the step.
                    log.flush().map_err(SaeError::from)?;
                    save(&member.checkpoint_dir, trainer, &position)?;
                }
                last_checkpoint = Some((members[0].checkpoint_dir.clone(), step));
            }
        }
    }
    for log in &mut metrics {
        log.flush().map_err(SaeError::from)?;
    }
    Ok(Fitted {
        trainers,
        resumed_from_step: resumed,
    })
}

/// Every member's checkpoint when all of them stand at the same position of this run;
/// otherwise (none, another run's, or an interruption between two members' saves) fresh
/// trainers and any checkpoint removed.
fn resume_all(
    members: &[FitMember],
    options: &FitOptions,
    compute: &Compute,
    observer: &mut dyn FitObserver,
) -> Result<(Vec<Trainer>, Position), SaeError> {
    let mut found = Vec::new();
    for member in members {
        found.push(resume(
            &member.checkpoint_dir,
            &options.fingerprint,
            compute,
            observer,
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
    for member in members {
        if member.checkpoint_dir.exists() {
            std::fs::remove_dir_all(&member.checkpoint_dir)
                .map_err(SaeError::io(&member.checkpoint_dir))?;
        }
        trainers.push(Trainer::new_on(
            member.config.clone(),
            options.scale,
            compute.clone(),
        )?);
    }
    Ok((trainers, Position::default()))
}

/// The trainer and position of a checkpoint at `dir` made with `fingerprint`; `None` when
/// there is none, or when it belongs to another run (it is then removed).
fn resume(
    dir: &Path,
    fingerprint: &str,
    compute: &Compute,
    observer: &mut dyn FitObserver,
) -> Result<Option<(Trainer, Position)>, SaeError> {
    // A save killed between its two renames leaves the previous checkpoint beside its name.
    monoscope_artifacts::atomic::recover_dir(dir).map_err(SaeError::io(dir))?;
    if !dir.exists() {
        return Ok(None);
    }
    let (trainer, position) = Trainer::resume(dir).map_err(|e| SaeError::Checkpoint {
        path: dir.to_path_buf(),
        reason: format!("{e}; delete it to train from the start"),
    })?;
    let position: Position = serde_json::from_value(position).unwrap_or_default();
    if position.fingerprint != fingerprint {
        observer.discarded(dir);
        std::fs::remove_dir_all(dir).map_err(SaeError::io(dir))?;
        return Ok(None);
    }
    // Uploaded only once it is known to be kept.
    Ok(Some((trainer.on(compute.clone())?, position)))
}

/// Writes (atomically replaces) a checkpoint.
fn save(dir: &Path, trainer: &Trainer, position: &Position) -> Result<(), SaeError> {
    let position = serde_json::to_value(position).expect("a position serialises");
    trainer.save_checkpoint(dir, position)
}

/// A non-finite loss or gradient, with the last good checkpoint named.
fn diverged(error: SaeError, last: Option<&(PathBuf, u64)>) -> SaeError {
    let recovery = match last {
        Some((dir, step)) => format!(
            "the last good checkpoint is {} (step {step})",
            dir.display()
        ),
        None => "no checkpoint was written (set `checkpoint_every` to keep some)".into(),
    };
    SaeError::Diverged(format!("{error}; {recovery}"))
}
