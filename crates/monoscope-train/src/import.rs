//! The `import-sae` stage: a published SAE — an SAELens directory, a sparsify hookpoint
//! directory, or Gemma Scope's `params.npz` — brought into a pipeline without training, so that
//! label, cluster, steer and the browser work on it as on a trained one. It is saved in the
//! SAELens layout (the one every stage reads) under the stage directory, and with a store
//! connected it is evaluated on the store's rows (`eval.json`: FVU, L0, per-feature frequency and
//! maximum activation, which steering by multiples of the maximum needs).

use std::path::Path;

use monoscope_artifacts::train::TrainOutputs;
use monoscope_core::{
    Artifact, ArtifactKind, PortSpec, Stage, StageConfig, StageContext, StageDescription,
    StageError, port_names, register_stage,
};
use monoscope_sae::{Evaluator, load_sae, save_saelens};
use monoscope_store::{SequentialOptions, Store};
use serde::{Deserialize, Serialize};

use crate::error::TrainStageError;

/// Brings a published SAE into a pipeline.
#[derive(Debug)]
pub struct ImportSae;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportSaeConfig {
    /// The SAE: an SAELens or sparsify directory (one hookpoint of a multi-layer release), or
    /// Gemma Scope's `params.npz` (or the directory holding it).
    pub path: String,
    /// The hook it reads (TransformerLens name), when its files do not say or say otherwise.
    #[serde(default)]
    pub hook: Option<String>,
    /// Store rows to evaluate on, at most, from its start (with `store` connected).
    #[serde(default = "default_eval_rows")]
    pub eval_rows: u64,
}

fn default_eval_rows() -> u64 {
    65_536
}

impl StageConfig for ImportSaeConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if !Path::new(&self.path).exists() {
            problems.push((
                "path".into(),
                format!("= {:?}: no such file or directory", self.path),
            ));
        }
        if self.eval_rows == 0 {
            problems.push(("eval_rows".into(), "= 0: must be positive".into()));
        }
        problems
    }
}

impl Stage for ImportSae {
    type Config = ImportSaeConfig;

    fn description() -> StageDescription {
        StageDescription {
            kind: "import-sae".into(),
            doc: "Brings a published SAE (SAELens, sparsify, Gemma Scope params.npz) into the pipeline; evaluates it on a store when one is connected".into(),
            inputs: vec![PortSpec::artifact(
                port_names::STORE,
                ArtifactKind::ACTIVATION_STORE,
                "a store of the SAE's hook, to evaluate it on (eval.json)",
            )
            .optional()],
            outputs: vec![PortSpec::artifact(
                port_names::SAE,
                ArtifactKind::SAE,
                "the SAE directory (SAELens layout)",
            )],
        }
    }

    fn run(config: ImportSaeConfig, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let outputs = TrainOutputs::new(ctx.stage_dir.as_path());
        ctx.progress.set_message(format!("loading {}", config.path));
        let mut sae = load_sae(Path::new(&config.path)).map_err(TrainStageError::from)?;
        if let Some(hook) = &config.hook {
            sae.metadata.hook_name = Some(hook.clone());
        }
        let mut summary = serde_json::json!({
            "source": config.path, "d_in": sae.d_in, "d_sae": sae.d_sae,
            "architecture": sae.architecture.saelens_name(),
            "hook_name": sae.metadata.hook_name,
        });
        if ctx.has_input(port_names::STORE) {
            let store_path = ctx.recv_artifact(port_names::STORE)?.path;
            let store = Store::open(&store_path).map_err(TrainStageError::from)?;
            let hook = sae.metadata.hook_name.clone().ok_or_else(|| {
                TrainStageError::Invalid(format!(
                    "{}: the SAE's files name no hook: set `hook` to the store's ({})",
                    config.path,
                    store.manifest().hooks.join(", ")
                ))
            })?;
            if store.d_model() != sae.d_in {
                return Err(TrainStageError::Invalid(format!(
                    "{}: the store's rows are {} wide but the SAE takes d_in = {}",
                    store_path.display(),
                    store.d_model(),
                    sae.d_in
                ))
                .into());
            }
            let rows = config.eval_rows.min(store.row_count());
            ctx.progress.set_length(rows);
            ctx.progress
                .set_message(format!("evaluating on {rows} rows"));
            let mut evaluator = Evaluator::new(&sae, 0.1);
            let mut seen = 0u64;
            let options = SequentialOptions::new(hook, 4096);
            for batch in store.sequential(options).map_err(TrainStageError::from)? {
                ctx.cancel.check()?;
                let batch = batch.map_err(TrainStageError::from)?;
                let take = ((rows - seen) as usize).min(batch.activations.len() / sae.d_in);
                evaluator
                    .add(&batch.activations[..take * sae.d_in])
                    .map_err(TrainStageError::from)?;
                seen += take as u64;
                ctx.progress.set_position(seen);
                if seen >= rows {
                    break;
                }
            }
            let report = evaluator.finish();
            summary["fvu"] = report.fvu.into();
            summary["l0"] = report.l0.into();
            summary["eval_rows"] = seen.into();
            outputs.write_eval(&report)?;
        }
        let sae_dir = outputs.sae_dir();
        save_saelens(&sae, &sae_dir).map_err(TrainStageError::from)?;
        tracing::info!(stage = ctx.stage_id, "imported: {summary}");
        ctx.emit_artifact(
            port_names::SAE,
            Artifact::new(ArtifactKind::SAE, sae_dir).with_metadata(summary),
        )
    }
}

register_stage!(ImportSae);
