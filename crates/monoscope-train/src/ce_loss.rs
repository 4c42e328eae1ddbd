//! The train stage's CE-loss splice: which model to load, which windows to score, progress and
//! cancellation between batches of windows.

use std::ops::Range;
use std::path::PathBuf;

use monoscope_core::{StageContext, StageError};
use monoscope_lm::ModelSpec;
use monoscope_sae::{Sae, SpliceEvaluator, SpliceReport, SpliceWithoutMassive};
use monoscope_store::Store;

use crate::TrainStageConfig;
use crate::error::TrainStageError;
use crate::splice::{ModelSplice, cached_default_model, held_out_windows};

/// Windows per evaluation call; progress and cancellation are checked between calls.
const WINDOWS_PER_CALL: usize = 16;

/// Where the splice reads its windows: held-out rows of a store at one hook, and the norm
/// above which an activation is massive (the report also gives the score with those left
/// clean).
pub(crate) struct HeldOut<'a> {
    pub store: &'a Store,
    pub rows: Range<u64>,
    pub hook: &'a str,
    pub massive_norm: f32,
}

/// The splice report of each SAE (in order; the model is loaded and the windows are built
/// once), or why there is none (`Ok(Err(reason))`: disabled or no model at hand). A `model`
/// input that is not the model the store was captured with is an error.
pub(crate) fn run(
    held: HeldOut<'_>,
    saes: &[Sae],
    model_input: Option<PathBuf>,
    config: &TrainStageConfig,
    ctx: &mut StageContext<'_>,
) -> Result<Result<Vec<SpliceReport>, String>, StageError> {
    if config.splice_tokens == 0 {
        return Ok(Err("splice_tokens = 0".into()));
    }
    let HeldOut {
        store,
        rows: holdout_rows,
        hook,
        massive_norm,
    } = held;
    let manifest = store.manifest();
    let from_input = model_input.is_some();
    let Some(path) = model_input.or_else(|| cached_default_model(&manifest.model.name)) else {
        return Ok(Err(format!(
            "no `model` input, and the store's model `{}` is not a known default in the cache; \
             connect one: inputs = {{ store = \"<capture>.store\", model = \"<fetch-model>.model\" }}",
            manifest.model.name
        )));
    };
    ctx.progress
        .set_message(format!("splice: loading {}", path.display()));
    let device = monoscope_device::open(ctx.device).map_err(StageError::other)?;
    let model = ModelSpec::new(&path)
        .with_matmul(config.matmul)
        .with_precision(config.precision)
        .with_device(device)
        .load()
        .map_err(TrainStageError::from)?;
    if model.sha256() != manifest.model.sha256 {
        let problem = format!(
            "{}: model sha256 {} differs from the one the store {} was captured with ({})",
            path.display(),
            model.sha256(),
            store.dir().display(),
            manifest.model.sha256
        );
        return match from_input {
            true => Err(TrainStageError::Invalid(problem).into()),
            false => Ok(Err(problem)),
        };
    }
    let hook = model.hook(hook).map_err(TrainStageError::from)?;
    // Capture prepends BOS unless told not to (older stores do not record it: the default).
    let prepend_bos = manifest
        .metadata
        .get("prepend_bos")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(true);
    let bos = model.tokenizer().bos_id().filter(|_| prepend_bos);
    let windows = held_out_windows(
        store,
        holdout_rows,
        bos,
        manifest.context_length,
        config.splice_tokens,
    )
    .map_err(TrainStageError::from)?;
    if windows.is_empty() {
        return Ok(Err(
            "the held-out rows hold no window of two or more tokens".into(),
        ));
    }
    let total = windows.len();
    let mut parts: Vec<Vec<SpliceReport>> = vec![Vec::new(); saes.len()];
    for (i, chunk) in windows.chunks(WINDOWS_PER_CALL).enumerate() {
        ctx.cancel.check()?;
        ctx.progress.set_message(format!(
            "splice: windows {}/{total} through the model",
            i * WINDOWS_PER_CALL
        ));
        let mut splice = ModelSplice::new(&model, hook, chunk.to_vec(), bos.is_some())
            .with_massive_norm(massive_norm);
        if splice.predictions() > 0 {
            for (sae, parts) in saes.iter().zip(&mut parts) {
                parts.push(splice.evaluate_splice(sae).map_err(TrainStageError::from)?);
            }
        }
    }
    Ok(Ok(parts.iter().map(|p| combine(p)).collect()))
}

/// Merges reports over disjoint sets of predictions (means weighted by their counts).
fn combine(parts: &[SpliceReport]) -> SpliceReport {
    let n: u64 = parts.iter().map(|p| p.tokens).sum();
    let mean = |f: fn(&SpliceReport) -> f64| {
        parts.iter().map(|p| f(p) * p.tokens as f64).sum::<f64>() / n.max(1) as f64
    };
    let mut report = SpliceReport::new(
        mean(|p| p.ce_loss_clean),
        mean(|p| p.ce_loss_with_sae),
        mean(|p| p.ce_loss_zero_ablation),
        mean(|p| p.kl_div_with_sae),
    );
    report.tokens = n;
    report.massive = parts[0].massive.as_ref().map(|first| {
        let with_sae = mean(|p| {
            p.massive
                .as_ref()
                .map_or(p.ce_loss_with_sae, |m| m.ce_loss_with_sae)
        });
        SpliceWithoutMassive {
            norm_threshold: first.norm_threshold,
            positions: parts
                .iter()
                .filter_map(|p| p.massive.as_ref())
                .map(|m| m.positions)
                .sum(),
            ce_loss_with_sae: with_sae,
            ce_loss_score: (report.ce_loss_zero_ablation - with_sae)
                / (report.ce_loss_zero_ablation - report.ce_loss_clean),
        }
    });
    report
}
