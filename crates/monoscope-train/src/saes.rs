//! The SAEs a train stage trains, whatever it reads: the main one and the sweep's members,
//! their trainer settings and directories, and saving them with their evaluations.

use std::path::{Path, PathBuf};

use monoscope_core::{Artifact, ArtifactKind, StageContext, StageError, atomic};
use monoscope_sae::{
    ArchConfig, Evaluator, Sae, SaeMetadata, SpliceReport, TrainConfig, Trainer, save_saelens,
};
use monoscope_store::Store;

use crate::config::{ArchitectureName, SweepMember, TrainStageConfig};
use crate::error::TrainStageError;
use crate::fit::Member;

/// Where the members of a sweep are saved, inside the stage directory.
const SWEEP_DIR: &str = "sweep";
/// The comparison table of every SAE the stage trained.
const SWEEP_TABLE: &str = "sweep.json";

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

/// The stage directory for the main SAE, `sweep/<name>` for a member.
fn member_dir(stage_dir: &Path, member: Option<&SweepMember>) -> PathBuf {
    match member {
        None => stage_dir.to_path_buf(),
        Some(m) => stage_dir.join(SWEEP_DIR).join(&m.name),
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
) -> Result<(Runs<'c>, Vec<Member>), StageError> {
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
        let dir = member_dir(ctx.stage_dir.as_path(), *member);
        std::fs::create_dir_all(&dir).map_err(|e| StageError::io(&dir, e))?;
        members.push(Member {
            train_config,
            checkpoint_dir: dir.join(crate::checkpoints::DIR),
            metrics_path: dir.join("metrics.jsonl"),
        });
    }
    Ok((runs, members))
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
        let dir = member_dir(ctx.stage_dir.as_path(), *member);
        let eval_path = dir.join("eval.json");
        let json = serde_json::to_vec_pretty(&report).map_err(StageError::other)?;
        atomic::write(&eval_path, &json).map_err(|e| StageError::io(&eval_path, e))?;
        let sae_dir = dir.join("sae");
        save_saelens(sae, &sae_dir).map_err(TrainStageError::from)?;
        // The SAE is saved: the checkpoint has served its purpose.
        let checkpoint = dir.join(crate::checkpoints::DIR);
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
        let path = ctx.stage_dir.join(SWEEP_TABLE);
        let json = serde_json::to_vec_pretty(&table).map_err(StageError::other)?;
        atomic::write(&path, &json).map_err(|e| StageError::io(&path, e))?;
    }
    let (summary, sae_dir) = main_summary.expect("the main SAE is always trained");
    tracing::info!(stage = ctx.stage_id, "held-out: {summary}");
    ctx.emit_artifact(
        "sae",
        Artifact::new(ArtifactKind::SAE, sae_dir).with_metadata(summary),
    )
}
