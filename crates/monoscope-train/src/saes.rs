//! The SAEs a train stage trains, whatever it reads: the main one and the sweep's members,
//! their trainer settings and directories, the fit (`monoscope_sae::train::fit`) with the
//! stage's progress and cancellation, and saving them with their evaluations.

use std::path::Path;

use burn::tensor::FloatDType;
use monoscope_artifacts::train::TrainOutputs;
use monoscope_core::{Artifact, ArtifactKind, StageContext, StageError, port_names};
use monoscope_lm::Precision;
use monoscope_sae::train::{Batches, FitMember, FitObserver, FitOptions, Fitted};
use monoscope_sae::{
    ArchConfig, Evaluator, Sae, SaeMetadata, SpliceReport, StepMetrics, TrainConfig, Trainer,
    save_saelens,
};
use monoscope_store::Store;

use crate::config::{ArchitectureName, SweepMember, TrainStageConfig};
use crate::error::TrainStageError;

fn arch_config(config: &TrainStageConfig) -> Result<ArchConfig, TrainStageError> {
    // The library's defaults for each architecture, by deserialising its tag alone.
    let tag = match config.architecture {
        ArchitectureName::ReluL1 => "relu_l1",
        ArchitectureName::Topk => "top_k",
        ArchitectureName::Batchtopk => "batch_top_k",
        ArchitectureName::Jumprelu => "jump_relu",
    };
    let mut value = serde_json::json!({ "kind": tag });
    match config.architecture {
        ArchitectureName::Topk | ArchitectureName::Batchtopk => {
            value["k"] = config.k.into();
            let mut aux = serde_json::json!({});
            if let Some(c) = config.aux_coeff {
                aux["coeff"] = c.into();
            }
            if let Some(k) = config.aux_k {
                aux["k_aux"] = k.into();
            }
            value["aux"] = aux;
        }
        ArchitectureName::ReluL1 => {
            if let Some(c) = config.sparsity_coeff {
                value["l1_coeff"] = c.into();
            }
        }
        ArchitectureName::Jumprelu => {
            if let Some(c) = config.sparsity_coeff {
                value["l0_coeff"] = c.into();
            }
        }
    }
    serde_json::from_value(value)
        .map_err(|e| TrainStageError::Invalid(format!("architecture settings: {e}")))
}

/// The outputs of the main SAE (the stage directory), or of a sweep member.
fn member_outputs(stage_dir: &Path, member: Option<&SweepMember>) -> TrainOutputs {
    let stage = TrainOutputs::new(stage_dir);
    match member {
        None => stage,
        Some(m) => stage.member(&m.name),
    }
}

/// The main SAE first, then the sweep's members: each one's settings, and its trainer
/// configuration and directories (created). `massive_norm`: the raw norm above which a row
/// is massive.
pub(crate) fn members<'c>(
    config: &'c TrainStageConfig,
    d_in: usize,
    total_steps: u64,
    seed: u64,
    massive_norm: f32,
    ctx: &StageContext<'_>,
) -> Result<(Runs<'c>, Vec<FitMember>), StageError> {
    let mut runs: Runs<'c> = vec![(None, config.clone())];
    runs.extend(config.sweep.iter().map(|m| (Some(m), m.apply(config))));
    let mut members = Vec::with_capacity(runs.len());
    for (member, run) in &runs {
        let mut train_config = TrainConfig::new(d_in, run.d_sae, arch_config(run)?, total_steps);
        if let Some(optimizer) = run.optimizer {
            train_config = train_config.with_optimizer(optimizer.into());
        }
        train_config = train_config.for_batch(run.batch_size);
        train_config.seed = seed;
        train_config.metrics_every = config.metrics_every;
        if let Some(lr) = run.lr {
            train_config.lr = lr;
        }
        if run.encoder_init_norm.is_some() {
            train_config.encoder_init_norm = run.encoder_init_norm;
        }
        let batch = run.batch_size as u64;
        train_config.dead_after_tokens = run
            .dead_after_tokens
            .unwrap_or_else(|| TrainConfig::dead_after_for(total_steps * batch, batch));
        train_config.massive_norm =
            (massive_norm.is_finite() && massive_norm > 0.0).then_some(massive_norm);
        train_config.exclude_massive = run.exclude_massive && train_config.massive_norm.is_some();
        let outputs = member_outputs(ctx.stage_dir.as_path(), *member);
        std::fs::create_dir_all(&outputs.dir).map_err(|e| StageError::io(&outputs.dir, e))?;
        members.push(FitMember {
            config: train_config,
            checkpoint_dir: outputs.checkpoint_dir(),
            metrics_path: outputs.metrics_path(),
        });
    }
    Ok((runs, members))
}

/// sha256 of what determines a fit's result: the stage's configuration (seed resolved; keys
/// that do not touch training ignored), the hook, the main trainer's configuration and the
/// data's identity (a store's manifest, which lists every shard's checksum, or the stream's
/// start). A checkpoint made under another fingerprint is discarded.
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
    config.matmul = Default::default();
    monoscope_core::fingerprint::of_json(&serde_json::json!({
        "stage": config,
        "seed": seed,
        "hook": hook,
        "trainer": train_config,
        "store": source,
    }))
}

/// Trains every member on `epoch(e)`'s batches, with the stage's progress bar (the main SAE's
/// metrics in its message) and cancellation.
pub(crate) fn fit(
    members: &[FitMember],
    options: &FitOptions,
    precision: Precision,
    epoch: &mut dyn FnMut(u64) -> Result<Batches<TrainStageError>, TrainStageError>,
    ctx: &mut StageContext<'_>,
) -> Result<Fitted, StageError> {
    struct StageProgress<'s, 'c> {
        ctx: &'s StageContext<'c>,
    }
    impl FitObserver for StageProgress<'_, '_> {
        fn started(&mut self, total_steps: u64, resumed: Option<(&Path, u64)>) {
            self.ctx.progress.set_length(total_steps);
            if let Some((dir, step)) = resumed {
                tracing::info!(
                    stage = self.ctx.stage_id,
                    "resuming from {} at step {step}",
                    dir.display()
                );
                self.ctx.progress.inc(step);
            }
        }
        fn stepped(&mut self, main: Option<&StepMetrics>) {
            if let Some(m) = main {
                self.ctx.progress.set_message(format!(
                    "L0 {:.1} FVU {:.3} dead {:.3}",
                    m.l0, m.fvu, m.dead_fraction
                ));
            }
            self.ctx.progress.inc(1);
        }
        fn discarded(&mut self, dir: &Path) {
            tracing::info!(
                stage = self.ctx.stage_id,
                "{}: a checkpoint of another configuration or store; starting over",
                dir.display()
            );
        }
        fn cancelled(&self) -> bool {
            self.ctx.cancel.is_cancelled()
        }
    }
    // The host trainer on the CPU, the burn trainer on any other device, its matrix products
    // in the stage's `precision`.
    let device = monoscope_device::open(ctx.device).map_err(StageError::other)?;
    let products = match precision {
        Precision::F32 => None,
        Precision::F16 => Some(FloatDType::F16),
        Precision::Bf16 => Some(FloatDType::BF16),
    };
    let compute =
        monoscope_sae::Compute::for_device_with_products(&device, products).map_err(|e| {
            StageError::invalid(format!(
                "`{}.precision` = \"{precision}\" on device `{}`: {e}",
                ctx.stage_id, ctx.device
            ))
        })?;
    let fitted = monoscope_sae::train::fit_on(
        members,
        options,
        &compute,
        epoch,
        &mut StageProgress { ctx },
    )?;
    Ok(fitted)
}

/// Each SAE's sweep entry (`None` for the main one) and its resolved settings.
pub(crate) type Runs<'c> = Vec<(Option<&'c SweepMember>, TrainStageConfig)>;

/// The trained SAEs, with the metadata of the hook and, when there is one, of the store their
/// activations came from. Each BatchTopK SAE gets the JumpReLU threshold at which the training
/// rows `sample` have a mean L0 of its k (see `Sae::calibrate_threshold`).
pub(crate) fn export(
    trainers: Vec<Trainer>,
    runs: &Runs<'_>,
    sample: &[f32],
    hook: &str,
    store: Option<&Store>,
) -> Result<Vec<Sae>, TrainStageError> {
    let metadata = SaeMetadata {
        model_name: store.map(|s| s.manifest().model.name.clone()),
        hook_name: Some(hook.to_string()),
        context_size: store.map(|s| s.manifest().context_length as u64),
        prepend_bos: Some(true),
        dataset_path: store.map(|s| s.dir().display().to_string()),
        ..SaeMetadata::default()
    };
    let mut saes = Vec::with_capacity(trainers.len());
    for (trainer, (_, run)) in trainers.into_iter().zip(runs) {
        let mut sae = trainer.export(metadata.clone());
        if run.architecture == ArchitectureName::Batchtopk && !sample.is_empty() {
            let threshold = sae.calibrate_threshold(sample, run.k as f64)?;
            tracing::debug!("BatchTopK threshold {threshold} (k = {})", run.k);
        }
        saes.push(sae);
    }
    Ok(saes)
}

/// One held-out evaluator per SAE, reporting massive rows (raw norm above `massive_norm`)
/// apart.
pub(crate) fn evaluators(saes: &[Sae], massive_norm: f32) -> Vec<Evaluator<'_>> {
    saes.iter()
        .map(|sae| Evaluator::new(sae, 0.1).with_massive_threshold(massive_norm))
        .collect()
}

/// Writes each SAE (`sae/`), its `eval.json` and, for a sweep, `sweep.json`; removes the
/// checkpoints; announces the main SAE with its summary plus `extra`. `splices`: every SAE's
/// CE-loss splice report, or why there is none.
#[allow(clippy::too_many_arguments)]
pub(crate) fn save(
    runs: &Runs<'_>,
    saes: &[Sae],
    evaluators: Vec<Evaluator>,
    splices: Result<Vec<SpliceReport>, String>,
    hook: &str,
    d_in: usize,
    extra: serde_json::Value,
    ctx: &mut StageContext<'_>,
) -> Result<(), StageError> {
    let splices: Vec<Result<SpliceReport, String>> = match splices {
        Ok(reports) => reports.into_iter().map(Ok).collect(),
        Err(reason) => {
            tracing::warn!(stage = ctx.stage_id, "no CE-loss splice: {reason}");
            vec![Err(reason); saes.len()]
        }
    };
    let mut table = Vec::with_capacity(saes.len());
    let mut main_summary = None;
    for ((((member, run), sae), evaluator), splice) in
        runs.iter().zip(saes).zip(evaluators).zip(splices)
    {
        let mut report = evaluator.finish();
        match splice {
            Ok(splice) => report.splice = Some(splice),
            Err(reason) => report.splice_skipped = Some(reason),
        }
        let outputs = member_outputs(ctx.stage_dir.as_path(), *member);
        outputs.write_eval(&report)?;
        let sae_dir = outputs.sae_dir();
        save_saelens(sae, &sae_dir).map_err(TrainStageError::from)?;
        // The SAE is saved: the checkpoint has served its purpose.
        let checkpoint = outputs.checkpoint_dir();
        if checkpoint.exists() {
            std::fs::remove_dir_all(&checkpoint).map_err(|e| StageError::io(&checkpoint, e))?;
        }
        let mut summary = serde_json::json!({
            "name": member.map_or("main", |m| m.name.as_str()),
            "architecture": run.architecture, "d_sae": run.d_sae, "k": run.k,
            "hook_name": hook, "d_in": d_in,
            "l0": report.l0, "fvu": report.fvu, "dead_fraction": report.dead_fraction,
            "ce_loss_score": report.splice.as_ref().map(|s| s.ce_loss_score),
        });
        if let (Some(summary), Some(extra)) = (summary.as_object_mut(), extra.as_object()) {
            summary.extend(extra.clone());
        }
        if member.is_none() {
            main_summary = Some((summary.clone(), sae_dir));
        }
        table.push(summary);
    }
    if runs.len() > 1 {
        TrainOutputs::new(ctx.stage_dir.as_path()).write_sweep(&table)?;
    }
    let (summary, sae_dir) = main_summary.expect("the main SAE is always trained");
    tracing::info!(stage = ctx.stage_id, "held-out: {summary}");
    ctx.emit_artifact(
        port_names::SAE,
        Artifact::new(ArtifactKind::SAE, sae_dir).with_metadata(summary),
    )
}
