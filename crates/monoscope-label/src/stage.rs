//! The `autointerp-label` stage: evidence, labels, scores, summary.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use monoscope_core::{
    Artifact, ArtifactKind, CancelToken, DeviceSpec, PortSpec, Progress, Stage, StageContext,
    StageDescription, StageError, Work, part_dir, port_names, register_stage,
};
use monoscope_lm::{Model, ModelSpec};
use monoscope_sae::Sae;
use monoscope_store::Store;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::config::{ExplainerKind, LabelConfig};
use crate::evidence::{self, EvidenceOptions, Observer};
use crate::explainer::{
    Explainer, HttpExplainer, HttpSettings, LocalExplainer, ResponseCache, StatisticalExplainer,
};
use crate::format::{EvidenceMeta, FeatureEvidence, LabelOutputs, Summary};
use crate::labelling::{LabelOptions, label_features};
use crate::{LabelError, summary};

/// Labels the features of an SAE from an activation store.
#[derive(Debug)]
pub struct AutointerpLabel;

impl Stage for AutointerpLabel {
    type Config = LabelConfig;

    const PARTS: Option<&'static str> =
        Some("a contiguous range of the features (evidence, sample and labels)");

    fn description() -> StageDescription {
        StageDescription {
            kind: "autointerp-label".into(),
            doc: "Per-feature evidence (top and quantile contexts, histogram, logit effects), labels from a model or statistics, detection and fuzzing scores".into(),
            inputs: vec![
                PortSpec::artifact(port_names::SAE, ArtifactKind::SAE, "the SAE directory (SAELens layout)"),
                PortSpec::artifact(port_names::STORE, ArtifactKind::ACTIVATION_STORE, "the activation store it was trained on"),
                PortSpec::artifact(port_names::MODEL, ArtifactKind::MODEL, "the model the store was captured from (else `model`)").optional(),
            ],
            outputs: vec![PortSpec::artifact(
                port_names::LABELS,
                ArtifactKind::LABELS,
                "the stage directory: evidence.jsonl, evidence.meta.json, labels.jsonl, summary.json",
            )],
        }
    }

    fn run(config: LabelConfig, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let summary = match &ctx.work {
            Work::Merge { parts } => {
                let dirs: Vec<PathBuf> = (0..parts.len())
                    .map(|i| part_dir(&ctx.stage_dir, i))
                    .collect();
                crate::parts::merge(&dirs, &ctx.stage_dir)?
            }
            work => {
                let part = work.part();
                let sae = ctx.recv_artifact(port_names::SAE)?.path;
                let store = ctx.recv_artifact(port_names::STORE)?.path;
                let model =
                    monoscope_fetch::stages::model_input(ctx, port_names::MODEL, &config.model)?;
                let inputs = Inputs {
                    sae,
                    store,
                    model,
                    device: ctx.device,
                };
                label(
                    &config,
                    &inputs,
                    &ctx.stage_dir,
                    ctx.seed,
                    &ctx.progress,
                    &ctx.cancel,
                    part,
                )?
            }
        };
        let metadata = serde_json::json!({
            "labelled": summary.labelled,
            "live": summary.live,
            "explainer": summary.explainer,
        });
        let dir = ctx.stage_dir.clone();
        ctx.emit_artifact(
            port_names::LABELS,
            Artifact::new(ArtifactKind::LABELS, dir).with_metadata(metadata),
        )
    }
}

register_stage!(AutointerpLabel);

/// Where the stage's inputs are.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// SAELens (or sparsify) directory.
    pub sae: PathBuf,
    pub store: PathBuf,
    /// The model the store was captured from.
    pub model: PathBuf,
    /// Where the model (and a local explainer model) runs.
    pub device: DeviceSpec,
}

struct StageObserver<'a> {
    progress: &'a Progress,
    cancel: &'a CancelToken,
}

impl Observer for StageObserver<'_> {
    fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
    fn rows_done(&self, _pass: u8, rows: u64) {
        self.progress.inc(rows);
    }
}

fn load_model(path: &Path, config: &LabelConfig, device: DeviceSpec) -> Result<Model, LabelError> {
    Ok(ModelSpec::new(path)
        .with_matmul(config.matmul)
        .with_precision(config.precision)
        .with_device(monoscope_device::open(device)?)
        .load()?)
}

/// The hook to read: the configured one, the SAE's, or the store's only one.
fn choose_hook(config: &LabelConfig, sae: &Sae, store: &Store) -> Result<String, LabelError> {
    if let Some(h) = config
        .hook
        .clone()
        .or_else(|| sae.metadata.hook_name.clone())
    {
        store.hook_index(&h)?;
        return Ok(h);
    }
    match store.manifest().hooks.as_slice() {
        [only] => Ok(only.clone()),
        hooks => Err(LabelError::Invalid(format!(
            "{}: the store has hooks {hooks:?} and the SAE names none: set `hook`",
            store.dir().display()
        ))),
    }
}

/// The whole stage on paths: what [`AutointerpLabel::run`] does after receiving its inputs.
pub fn run_label(
    config: &LabelConfig,
    inputs: &Inputs,
    out_dir: &Path,
    pipeline_seed: u64,
    progress: &Progress,
    cancel: &CancelToken,
) -> Result<Summary, LabelError> {
    label(
        config,
        inputs,
        out_dir,
        pipeline_seed,
        progress,
        cancel,
        None,
    )
}

/// As [`run_label`]; with `part = Some((i, N))`, keeps only the `i`-th of `N` contiguous
/// feature ranges (evidence is gathered for every feature, as a TopK code depends on all of
/// them, and the sample of features to label is the whole run's).
fn label(
    config: &LabelConfig,
    inputs: &Inputs,
    out_dir: &Path,
    pipeline_seed: u64,
    progress: &Progress,
    cancel: &CancelToken,
    part: Option<(usize, usize)>,
) -> Result<Summary, LabelError> {
    let started = Instant::now();
    let outputs = LabelOutputs::new(out_dir);
    let seed = config.seed.unwrap_or(pipeline_seed);
    let sae = monoscope_sae::load_sae(&inputs.sae)?;
    let store = Store::open(&inputs.store)?;
    let hook = choose_hook(config, &sae, &store)?;
    progress.set_message(format!("loading {}", inputs.model.display()));
    let model = load_model(&inputs.model, config, inputs.device)?;
    let captured_by = &store.manifest().model;
    if captured_by.sha256 != model.sha256() {
        return Err(LabelError::Invalid(format!(
            "{}: the store was captured from {} (sha256 {}), but the model given is {} ({}, sha256 {}); \
             connect or name the store's model so that its tokens decode correctly",
            inputs.store.display(),
            captured_by.name,
            captured_by.sha256,
            model.name(),
            inputs.model.display(),
            model.sha256()
        )));
    }

    let options = EvidenceOptions {
        hook: hook.clone(),
        top_n: config.top_n,
        window: config.window,
        quantiles: config.quantiles,
        quantile_examples: config.quantile_examples,
        random_examples: config.random_examples,
        histogram_bins: config.histogram_bins,
        seed,
    };
    progress.set_length(3 * store.row_count());
    progress.set_message(format!(
        "evidence: 3 passes over {} tokens",
        store.row_count()
    ));
    let token_text = |id: u32| model.tokenizer().token_str(id);
    let observer = StageObserver { progress, cancel };
    let mut evidence = evidence::collect_evidence(&sae, &store, &options, &token_text, &observer)?;
    let sample: std::collections::HashSet<u32> = choose_features(&evidence, config, seed)
        .iter()
        .map(|e| e.feature)
        .collect();
    if let Some((index, count)) = part {
        let keep = Work::share(index, count, sae.d_sae);
        evidence.retain(|e| keep.contains(&(e.feature as usize)));
    }
    progress.set_message("logit effects");
    let hook_name = model
        .hook(&hook)
        .map_err(|e| LabelError::Invalid(e.to_string()))?;
    evidence::logit_effects(
        &model,
        &sae,
        &hook_name,
        &mut evidence,
        config.logit_tokens,
        &token_text,
    )?;
    outputs.write_evidence(&evidence)?;
    let meta = EvidenceMeta {
        hook,
        d_sae: sae.d_sae,
        tokens: store.row_count(),
        window: config.window,
        sae: inputs.sae.display().to_string(),
        store: inputs.store.display().to_string(),
        model: model.name().to_string(),
    };
    outputs.write_evidence_meta(&meta)?;
    let seconds_evidence = started.elapsed().as_secs_f64();

    let cache = || ResponseCache::new(config.cache.then(ResponseCache::default_dir));
    let explainer_model = match (&config.explainer, &config.explainer_model) {
        (ExplainerKind::Local, Some(spec)) => Some(load_model(
            &monoscope_fetch::resolve_model(spec)?,
            config,
            inputs.device,
        )?),
        _ => None,
    };
    // (explainer, calls at once, features per call)
    type Chosen<'a> = (Box<dyn Explainer + 'a>, usize, usize);
    let (explainer, concurrency, batch): Chosen<'_> = match config.explainer {
        ExplainerKind::Statistical => (Box::new(StatisticalExplainer), 1, 1),
        ExplainerKind::Local => {
            let m = explainer_model.as_ref().unwrap_or(&model);
            (
                Box::new(LocalExplainer::new(m, cache(), config.max_new_tokens)?),
                1,
                config.explain_batch,
            )
        }
        ExplainerKind::Http => {
            let api_key = match &config.http.api_key_env {
                None => None,
                Some(var) => Some(std::env::var(var).map_err(|_| {
                    LabelError::Invalid(format!(
                        "http.api_key_env = {var:?}: that environment variable is not set"
                    ))
                })?),
            };
            let settings = HttpSettings {
                url: config.http.url.clone(),
                model: config.http.model.clone(),
                api_key,
                timeout: Duration::from_secs_f64(config.http.timeout_s),
                max_retries: config.http.max_retries,
                backoff: Duration::from_millis(config.http.backoff_ms),
                max_tokens: config.http.max_tokens,
            };
            (
                Box::new(HttpExplainer::new(settings, cache())),
                config.http.concurrency,
                1,
            )
        }
    };

    let chosen: Vec<&FeatureEvidence> = evidence
        .iter()
        .filter(|e| sample.contains(&e.feature))
        .collect();
    let live = evidence.iter().filter(|e| !e.is_dead()).count();
    let labelling_started = Instant::now();
    progress.set_position(0);
    progress.set_length(chosen.len() as u64);
    progress.set_message(format!(
        "labelling {} features with {}",
        chosen.len(),
        explainer.describe()
    ));
    let label_options = LabelOptions {
        explain_examples: config.explain_examples,
        score: config.score,
        score_examples: config.score_examples,
        baseline: config.baseline,
        concurrency,
        batch,
        seed,
    };
    let labelled = label_features(
        explainer.as_ref(),
        &chosen,
        &label_options,
        &|_| progress.inc(1),
        &|| cancel.is_cancelled(),
    )?;
    let failed = chosen.len() - labelled.records.len();
    if config.explainer != ExplainerKind::Statistical
        && failed as f64 > config.max_failed_fraction * chosen.len() as f64
    {
        // The labels obtained are kept (their answers are cached too); without a completion
        // marker the next run of the pipeline runs this stage again.
        outputs.write_labels(&labelled.records)?;
        let reasons: Vec<String> = labelled
            .skipped
            .iter()
            .map(|(reason, n)| format!("{n}: {reason}"))
            .collect();
        return Err(LabelError::ExplainerFailed {
            failed,
            requested: chosen.len(),
            obtained: labelled.records.len(),
            allowed: config.max_failed_fraction,
            reasons: reasons.join("; "),
            labels: outputs.labels_path(),
            cached: config.cache,
        });
    }
    let (scores, baseline_scores) = summary::summarise(&labelled.records);
    let mut records = labelled.records;
    let rest = match config.statistical_rest && config.explainer != ExplainerKind::Statistical {
        true => {
            let sampled: std::collections::HashSet<u32> =
                chosen.iter().map(|e| e.feature).collect();
            let others: Vec<&FeatureEvidence> = evidence
                .iter()
                .filter(|e| !e.is_dead() && !sampled.contains(&e.feature))
                .collect();
            progress.set_message(format!(
                "statistical labels for {} more features",
                others.len()
            ));
            let options = LabelOptions {
                baseline: false,
                concurrency: 1,
                ..label_options.clone()
            };
            let more = label_features(&StatisticalExplainer, &others, &options, &|_| {}, &|| {
                cancel.is_cancelled()
            })?;
            let count = more.records.len();
            records.extend(more.records);
            records.sort_by_key(|r| r.feature);
            count
        }
        false => 0,
    };
    outputs.write_labels(&records)?;

    let mut skipped = labelled.skipped;
    if rest == 0 && live > chosen.len() {
        skipped.insert(
            format!(
                "not in the sample of max_features = {}",
                config.max_features
            ),
            live - chosen.len(),
        );
    }
    let usage = explainer.usage();
    let summary = Summary {
        features: evidence.len(),
        live,
        dead: evidence.len() - live,
        labelled: records.len() - rest,
        statistical_rest: rest,
        skipped,
        explainer: explainer.describe(),
        scores,
        baseline_scores,
        tokens_in: usage.tokens_in,
        tokens_out: usage.tokens_out,
        cache_hits: usage.cache_hits,
        seconds_evidence,
        seconds_labelling: labelling_started.elapsed().as_secs_f64(),
    };
    outputs.write_summary(&summary)?;
    progress.finish();
    Ok(summary)
}

/// Every live feature for the statistical explainer; a seeded sample of `max_features` live
/// ones, in feature order, for a model.
fn choose_features<'e>(
    evidence: &'e [FeatureEvidence],
    config: &LabelConfig,
    seed: u64,
) -> Vec<&'e FeatureEvidence> {
    let mut live: Vec<&FeatureEvidence> = evidence.iter().filter(|e| !e.is_dead()).collect();
    if config.explainer != ExplainerKind::Statistical && live.len() > config.max_features {
        live.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x4645_4154));
        live.truncate(config.max_features);
        live.sort_by_key(|e| e.feature);
    }
    live
}
