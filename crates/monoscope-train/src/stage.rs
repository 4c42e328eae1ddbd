//! The `train` stage: its ports, the choice between a store and a stream, and training from
//! a store (the seeded shuffled reader, the last shards held out).

use std::path::{Path, PathBuf};

use monoscope_core::{
    ArtifactKind, PortSpec, Stage, StageContext, StageDescription, StageError, StreamKind,
    port_names, register_stage,
};
use monoscope_sae::{Evaluator, NormSample};
use monoscope_store::{SequentialOptions, ShuffleOptions, Store};

use crate::config::TrainStageConfig;
use crate::error::TrainStageError;
use monoscope_sae::train::{Batches, FitOptions, Fitted};

/// Trains a sparse autoencoder on an activation store.
#[derive(Debug)]
pub struct Train;

impl Stage for Train {
    type Config = TrainStageConfig;

    const PARTS: Option<&'static str> = Some("a contiguous share of `hooks`, one SAE per hook");

    fn description() -> StageDescription {
        StageDescription {
            kind: "train".into(),
            doc: "Trains a sparse autoencoder on an activation store or a capture's stream; evaluates it and saves it (SAELens layout)"
                .into(),
            inputs: vec![
                PortSpec::artifact(
                    port_names::STORE,
                    ArtifactKind::ACTIVATION_STORE,
                    "the activation store to train on; with `activations`, the capture's store, \
                     read for the CE-loss splice",
                )
                .optional(),
                PortSpec::stream(
                    port_names::ACTIVATIONS,
                    StreamKind::ACTIVATIONS,
                    "a capture's stream to train on instead of a store, once, through a mixing buffer",
                )
                .optional(),
                PortSpec::artifact(
                    port_names::MODEL,
                    ArtifactKind::MODEL,
                    "the captured model, for the CE-loss splice (else its cached default copy)",
                )
                .optional(),
            ],
            outputs: vec![PortSpec::artifact(port_names::SAE, ArtifactKind::SAE, "the SAE directory (SAELens layout)")],
        }
    }

    fn run(config: TrainStageConfig, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        if !config.hooks.is_empty() {
            return crate::hooks::run(&config, ctx);
        }
        if ctx.work != monoscope_core::Work::Whole {
            return Err(TrainStageError::Invalid(
                "`parts` splits the hooks of `hooks`: list the hooks to train there".into(),
            )
            .into());
        }
        let model_path = ctx.optional_artifact(port_names::MODEL)?.map(|a| a.path);
        match (
            ctx.take_input(port_names::ACTIVATIONS),
            ctx.has_input(port_names::STORE),
        ) {
            (Some(stream), _) => crate::stream::train(stream, model_path, &config, ctx),
            (None, true) => {
                let store_path = ctx.recv_artifact(port_names::STORE)?.path;
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

pub(crate) fn train(
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
    let mut reader = |epoch: u64| -> Result<Batches<TrainStageError>, TrainStageError> {
        let batches = shuffled(epoch)?.map(|b| Ok(b?.activations));
        Ok(Box::new(batches))
    };
    let mut estimator = NormSample::new(d_in);
    // Training rows, for the input scale and for BatchTopK's threshold after training.
    let mut sample = Vec::new();
    for batch in shuffled(u64::MAX).map_err(TrainStageError::from)? {
        let batch = batch.map_err(TrainStageError::from)?;
        estimator
            .add(&batch.activations)
            .map_err(TrainStageError::from)?;
        sample.extend_from_slice(&batch.activations);
        if sample.len() >= config.scale_rows * d_in {
            break;
        }
    }
    let scale = estimator
        .scale_by(config.input_scale.into())
        .map_err(TrainStageError::from)?;
    let massive_norm = estimator.massive_norm(config.massive_norm_factor);

    let (runs, members) = crate::saes::members(config, d_in, total_steps, seed, massive_norm, ctx)?;
    let fingerprint = crate::saes::fingerprint(config, seed, &hook, &members[0].config, manifest);
    ctx.progress.set_message(format!(
        "{} × {} on {hook}, scale {scale:.4}{}",
        d_in,
        config.d_sae,
        match config.sweep.len() {
            0 => String::new(),
            n => format!(" (+{n} in the sweep)"),
        }
    ));
    let options = FitOptions {
        scale,
        epochs: config.epochs as u64,
        batch_size: config.batch_size,
        checkpoint_every: config.checkpoint_every,
        fingerprint,
    };
    let Fitted {
        trainers,
        resumed_from_step,
    } = crate::saes::fit(&members, &options, config.precision, &mut reader, ctx)?;

    let saes = crate::saes::export(trainers, &runs, &sample, &hook, Some(&store))?;
    drop(sample);

    // Held-out evaluation on the last shards: one read for every SAE.
    let mut evaluators: Vec<Evaluator> = crate::saes::evaluators(&saes, massive_norm);
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
    let splices = crate::ce_loss::run(
        crate::ce_loss::HeldOut {
            store: &store,
            rows: holdout_rows,
            hook: &hook,
            massive_norm,
        },
        &saes,
        model_path,
        config,
        ctx,
    )?;
    let extra = serde_json::json!({ "resumed_from_step": resumed_from_step });
    crate::saes::save(&runs, &saes, evaluators, splices, &hook, d_in, extra, ctx)
}
