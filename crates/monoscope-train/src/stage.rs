use std::path::{Path, PathBuf};

use monoscope_core::{
    Artifact, ArtifactKind, PortSpec, Stage, StageContext, StageDescription, StageError,
    StreamKind, atomic, register_stage,
};
use monoscope_sae::{
    ArchConfig, Evaluator, NormEstimator, Sae, SaeMetadata, SpliceReport, TrainConfig, save_saelens,
};
use monoscope_store::{SequentialOptions, ShuffleOptions, Store};

use crate::config::{ArchitectureName, SweepMember, TrainStageConfig};
use crate::error::TrainStageError;
use crate::fit::{Epoch, Fit, Member};

/// Where the members of a sweep are saved, inside the stage directory.
const SWEEP_DIR: &str = "sweep";
/// The comparison table of every SAE the stage trained.
const SWEEP_TABLE: &str = "sweep.json";

/// Trains a sparse autoencoder on an activation store.
#[derive(Debug)]
pub struct Train;

impl Stage for Train {
    type Config = TrainStageConfig;

    fn description() -> StageDescription {
        StageDescription {
            kind: "train".into(),
            doc: "Trains a sparse autoencoder on an activation store or a capture's stream; evaluates it and saves it (SAELens layout)"
                .into(),
            inputs: vec![
                PortSpec::artifact(
                    "store",
                    ArtifactKind::ACTIVATION_STORE,
                    "the activation store to train on; with `activations`, the capture's store, \
                     read for the CE-loss splice",
                )
                .optional(),
                PortSpec::stream(
                    "activations",
                    StreamKind::ACTIVATIONS,
                    "a capture's stream to train on instead of a store, once, through a mixing buffer",
                )
                .optional(),
                PortSpec::artifact(
                    "model",
                    ArtifactKind::MODEL,
                    "the captured model, for the CE-loss splice (else its cached default copy)",
                )
                .optional(),
            ],
            outputs: vec![PortSpec::artifact("sae", ArtifactKind::SAE, "the SAE directory (SAELens layout)")],
        }
    }

    fn run(config: TrainStageConfig, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let model_path = match ctx.has_input("model") {
            true => Some(ctx.recv_artifact("model")?.path),
            false => None,
        };
        match (ctx.take_input("activations"), ctx.has_input("store")) {
            (Some(stream), _) => crate::stream::train(stream, model_path, &config, ctx),
            (None, true) => {
                let store_path = ctx.recv_artifact("store")?.path;
                train(&store_path, model_path, &config, ctx)
            }
            (None, false) => Err(TrainStageError::Invalid(
                "nothing to train on: connect `store` (an activation store) or `activations` \
                 (a capture's stream), e.g. inputs = { store = \"capture.store\" }"
                    .into(),
            )
            .into()),
        }
    }
}

register_stage!(Train);

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

fn train(
    store_path: &Path,
    model_path: Option<PathBuf>,
    config: &TrainStageConfig,
    ctx: &mut StageContext<'_>,
) -> Result<(), StageError> {
    let store = Store::open(store_path).map_err(TrainStageError::from)?;
    let manifest = store.manifest();
    let hook = match &config.hook {
        Some(h) => h.clone(),
        None => match manifest.hooks.as_slice() {
            [only] => only.clone(),
            hooks => {
                return Err(TrainStageError::Invalid(format!(
                    "the store has hooks {hooks:?}: set `hook` to the one to train on"
                ))
                .into());
            }
        },
    };
    let shards = store.shard_count();
    if config.holdout_shards >= shards {
        return Err(TrainStageError::Invalid(format!(
            "{}: holdout_shards = {} leaves no shard to train on (the store has {shards}); \
             capture more tokens or smaller shards (`rows_per_shard`)",
            store_path.display(),
            config.holdout_shards
        ))
        .into());
    }
    let train_shards = 0..shards - config.holdout_shards;
    let train_rows: u64 = train_shards
        .clone()
        .map(|i| store.shard_rows(i).end - store.shard_rows(i).start)
        .sum();
    let d_in = store.d_model();
    let seed = config.seed.unwrap_or(ctx.seed);
    let steps_per_epoch = train_rows / config.batch_size as u64;
    let total_steps = steps_per_epoch * config.epochs as u64;
    if total_steps == 0 {
        return Err(TrainStageError::Invalid(format!(
            "{train_rows} training rows make no full batch of {}: lower `batch_size` or capture more",
            config.batch_size
        ))
        .into());
    }

    // Input scale from the first rows of the (seeded) shuffled order.
    let shuffled = |epoch: u64| {
        let mut options =
            ShuffleOptions::new(hook.clone(), config.batch_size, seed.wrapping_add(epoch));
        options.shards = Some(train_shards.clone());
        store.shuffled(options)
    };
    let mut reader = |epoch: u64| -> Result<Epoch, TrainStageError> {
        let batches = shuffled(epoch)?.map(|b| Ok(b?.activations));
        Ok(Box::new(batches))
    };
    let mut estimator = NormEstimator::new(d_in);
    let mut sampled = 0;
    for batch in shuffled(u64::MAX).map_err(TrainStageError::from)? {
        let batch = batch.map_err(TrainStageError::from)?;
        estimator
            .add(&batch.activations)
            .map_err(TrainStageError::from)?;
        sampled += batch.rows;
        if sampled >= config.scale_rows {
            break;
        }
    }
    let scale = estimator.scale().map_err(TrainStageError::from)?;

    let (runs, members) = members(config, d_in, total_steps, seed, ctx)?;
    let fingerprint =
        crate::checkpoints::fingerprint(config, seed, &hook, &members[0].train_config, manifest);
    ctx.progress.set_message(format!(
        "{} × {} on {hook}, scale {scale:.4}{}",
        d_in,
        config.d_sae,
        match config.sweep.len() {
            0 => String::new(),
            n => format!(" (+{n} in the sweep)"),
        }
    ));
    let fit = Fit {
        reader: &mut reader,
        members,
        scale,
        epochs: config.epochs as u64,
        batch_size: config.batch_size,
        checkpoint_every: config.checkpoint_every,
        fingerprint,
    };
    let (trainers, resumed_from_step) = crate::fit::fit(fit, ctx)?;

    let metadata = SaeMetadata {
        model_name: Some(manifest.model.name.clone()),
        hook_name: Some(hook.clone()),
        context_size: Some(manifest.context_length as u64),
        prepend_bos: Some(true),
        dataset_path: Some(store_path.display().to_string()),
        ..SaeMetadata::default()
    };
    let saes: Vec<Sae> = trainers
        .into_iter()
        .map(|t| t.export(metadata.clone()))
        .collect();

    // Held-out evaluation on the last shards: one read for every SAE.
    let mut evaluators: Vec<Evaluator> = saes.iter().map(|sae| Evaluator::new(sae, 0.1)).collect();
    let holdout = shards - config.holdout_shards..shards;
    let mut options = SequentialOptions::new(hook.clone(), 4096);
    options.shards = Some(holdout.clone());
    for batch in store.sequential(options).map_err(TrainStageError::from)? {
        ctx.cancel.check()?;
        let batch = batch.map_err(TrainStageError::from)?;
        for evaluator in &mut evaluators {
            evaluator
                .add(&batch.activations)
                .map_err(TrainStageError::from)?;
        }
    }
    let holdout_rows = store.shard_rows(holdout.start).start..store.row_count();
    let splices: Vec<Result<SpliceReport, String>> = match crate::splice_stage::run(
        &store,
        holdout_rows,
        &hook,
        &saes,
        model_path,
        config,
        ctx,
    )? {
        Ok(reports) => reports.into_iter().map(Ok).collect(),
        Err(reason) => {
            tracing::warn!(stage = ctx.stage_id, "no CE-loss splice: {reason}");
            vec![Err(reason); saes.len()]
        }
    };
    let extra = serde_json::json!({ "resumed_from_step": resumed_from_step });
    save(&runs, &saes, evaluators, splices, &hook, d_in, extra, ctx)
}

/// Writes each SAE (`sae/`), its `eval.json` and, for a sweep, `sweep.json`; removes the
/// checkpoints; announces the main SAE with its summary plus `extra`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn save(
    runs: &Runs<'_>,
    saes: &[Sae],
    evaluators: Vec<Evaluator>,
    splices: Vec<Result<SpliceReport, String>>,
    hook: &str,
    d_in: usize,
    extra: serde_json::Value,
    ctx: &mut StageContext<'_>,
) -> Result<(), StageError> {
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

/// The stage directory for the main SAE, `sweep/<name>` for a member.
fn member_dir(stage_dir: &Path, member: Option<&SweepMember>) -> PathBuf {
    match member {
        None => stage_dir.to_path_buf(),
        Some(m) => stage_dir.join(SWEEP_DIR).join(&m.name),
    }
}

/// The main SAE first, then the sweep's members: each one's settings, and its trainer
/// configuration and directories (created).
pub(crate) fn members<'c>(
    config: &'c TrainStageConfig,
    d_in: usize,
    total_steps: u64,
    seed: u64,
    ctx: &StageContext<'_>,
) -> Result<(Runs<'c>, Vec<Member>), StageError> {
    let mut runs: Runs<'c> = vec![(None, config.clone())];
    runs.extend(config.sweep.iter().map(|m| (Some(m), m.apply(config))));
    let mut members = Vec::with_capacity(runs.len());
    for (member, run) in &runs {
        let mut train_config = TrainConfig::new(d_in, run.d_sae, arch_config(run)?, total_steps);
        train_config.seed = seed;
        train_config.metrics_every = config.metrics_every;
        if let Some(lr) = run.lr {
            train_config.lr = lr;
        }
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
