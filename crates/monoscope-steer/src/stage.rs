//! The `steer` stage: its configuration and its run.

use std::path::{Path, PathBuf};

use monoscope_core::{
    Artifact, ArtifactKind, PortSpec, Stage, StageConfig, StageContext, StageDescription,
    StageError, port_names, register_stage,
};
use monoscope_lm::{MatmulKind, Model, ModelSpec, Precision};
use serde::{Deserialize, Serialize};

use crate::SteerError;
use crate::attribute::{Attribution, AttributionOptions};
use crate::edit::Mode;
use crate::experiment::{ExperimentSpec, RunSettings};
use crate::features::{FeatureRef, FeatureSpec, FeatureTable};
use crate::report::{Report, Scale, Settings};
use crate::steerer::Steerer;
use monoscope_artifacts::steer::Contrast;

/// One experiment: features, how they are edited, the sweep and the words to watch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ExperimentConfig {
    /// One feature: an id, `"label:<words>"` (search the labels) or `"text:<text>"` (the
    /// feature that fires most on the text).
    pub feature: Option<FeatureRef>,
    /// Several features edited together (same forms as `feature`).
    pub features: Vec<FeatureRef>,
    pub mode: Mode,
    /// Strengths as multiples of each feature's maximum activation (train's `eval.json`).
    pub multiples: Option<Vec<f32>>,
    /// Strengths in the SAE's raw units instead of `multiples`.
    pub values: Option<Vec<f32>>,
    /// Words whose probability after each prompt is measured (default: the features' most
    /// promoted tokens).
    pub targets: Vec<String>,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        ExperimentConfig {
            feature: Default::default(),
            features: Default::default(),
            mode: Mode::Clamp,
            multiples: Default::default(),
            values: Default::default(),
            targets: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SteerConfig {
    /// Model when the `model` input is not connected: a path or a known name.
    #[serde(default = "default_model")]
    pub model: String,
    /// Hook to steer at (default: the SAE's `metadata.hook_name`).
    #[serde(default)]
    pub hook: Option<String>,
    /// What to steer: `[{ feature = 123 | "label:…" | "text:…", mode = "clamp", multiples =
    /// [0, 2, 5, 10], targets = ["bridge"] }]`.
    pub experiments: Vec<ExperimentConfig>,
    /// Prompts generated from with and without each edit.
    #[serde(default = "default_prompts")]
    pub prompts: Vec<String>,
    /// Wrap each prompt in the model's chat template as a user message.
    #[serde(default = "yes")]
    pub chat: bool,
    /// Text on which the next-token KL between plain and steered model is measured.
    #[serde(default = "default_neutral")]
    pub neutral_text: String,
    /// Tokens generated per prompt and strength.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// 0: greedy. Otherwise seeded sampling, the same seed with and without the edit.
    #[serde(default)]
    pub temperature: f64,
    /// Nucleus sampling: keep the most likely tokens up to this probability (1: all).
    #[serde(default = "default_top_p")]
    pub top_p: f64,
    /// Sampling seed (default: the pipeline seed).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Arithmetic of the model's linear layers: `f32` (the reference) or `int8`.
    #[serde(default)]
    pub matmul: MatmulKind,
    /// Float type of the model's weights and matrix products on a GPU device: `f32`, `f16` or
    /// `bf16` (residual stream, norms and softmax stay f32). The CPU takes `f32` only.
    #[serde(default)]
    pub precision: Precision,
    /// Also edit the first position (the attention sink, which the SAE never saw in training).
    #[serde(default)]
    pub steer_first_position: bool,
    /// Attributions to compute into `attributions.json`: `[{ prompt = "The capital of France
    /// is", target = " Paris" }]`. Each feature's attribution to the target's log-probability
    /// at each position by a backward pass, beside the real effect of ablating the strongest.
    /// They run on the `f32` arithmetic whatever `matmul` says.
    #[serde(default)]
    pub attributions: Vec<AttributionConfig>,
    /// (feature, position) entries kept per attribution.
    #[serde(default = "default_attribution_top")]
    pub attribution_top: usize,
    /// Of those, how many are ablated for real.
    #[serde(default = "default_attribution_ablate")]
    pub attribution_ablate: usize,
    /// Contrastive searches into `contrasts.json`: `[{ name = "France", positive =
    /// "texts/france.txt", negative = "texts/other.txt" }]`, one text per line, paths relative
    /// to the working directory.
    #[serde(default)]
    pub contrasts: Vec<ContrastConfig>,
    /// Features kept per contrastive search.
    #[serde(default = "default_contrast_top")]
    pub contrast_top: usize,
}

/// One attribution: a prompt and the continuation whose log-probability is explained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributionConfig {
    pub prompt: String,
    /// The continuation, e.g. `" Paris"` (mind the leading space).
    pub target: String,
    /// Put the prompt in the model's chat template as a user message.
    #[serde(default)]
    pub chat: bool,
}

/// One contrastive search between two files of texts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContrastConfig {
    /// What the search looks for, in words.
    pub name: String,
    pub positive: PathBuf,
    pub negative: PathBuf,
}

impl ContrastConfig {
    /// Both files' texts, or the problem with one, naming the key and file.
    fn texts(&self, key: &str) -> Result<(Vec<String>, Vec<String>), (String, String)> {
        let read = |side: &str, path: &Path| {
            let text = std::fs::read_to_string(path).map_err(|e| {
                (
                    format!("{key}.{side}"),
                    format!("= {:?}: cannot read it: {e}", path.display().to_string()),
                )
            })?;
            let texts = crate::contrast::read_texts(&text);
            if texts.len() < 2 {
                return Err((
                    format!("{key}.{side}"),
                    format!(
                        "= {:?}: {} text(s); a contrast needs at least 2 per side (one per line)",
                        path.display().to_string(),
                        texts.len()
                    ),
                ));
            }
            Ok(texts)
        };
        Ok((
            read("positive", &self.positive)?,
            read("negative", &self.negative)?,
        ))
    }
}

fn default_attribution_top() -> usize {
    20
}
fn default_attribution_ablate() -> usize {
    10
}
fn default_contrast_top() -> usize {
    20
}

fn default_model() -> String {
    "smollm2".into()
}
fn default_prompts() -> Vec<String> {
    vec![
        "Tell me about yourself.".into(),
        "What should I write my essay about?".into(),
    ]
}
fn default_neutral() -> String {
    "The committee met on Tuesday to review the budget for the coming year. Several members \
     asked for more time to read the proposal, and the vote was moved to the following week."
        .into()
}
fn default_max_new_tokens() -> usize {
    48
}
fn default_top_p() -> f64 {
    0.9
}
fn yes() -> bool {
    true
}

impl ExperimentConfig {
    /// The experiment in library terms (the checks of [`StageConfig::validate`] are assumed).
    pub fn spec(&self) -> Result<ExperimentSpec, SteerError> {
        let features = self
            .feature
            .iter()
            .chain(&self.features)
            .map(FeatureSpec::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let (scale, multiples) = match (&self.multiples, &self.values) {
            (_, Some(values)) => (Scale::Raw, values.clone()),
            (Some(m), None) => (Scale::MaxActivation, m.clone()),
            (None, None) => (Scale::MaxActivation, default_multiples()),
        };
        Ok(ExperimentSpec {
            features,
            mode: self.mode,
            scale,
            multiples,
            targets: self.targets.clone(),
        })
    }

    fn problems(&self, key: &str) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut push = |k: &str, m: String| problems.push((format!("{key}.{k}"), m));
        if self.feature.is_none() && self.features.is_empty() {
            push("feature", "missing: give `feature` or `features`".into());
        }
        for f in self.feature.iter().chain(&self.features) {
            if let Err(e) = FeatureSpec::parse(f) {
                push("features", e.to_string());
            }
        }
        if self.multiples.is_some() && self.values.is_some() {
            push("values", "give `multiples` or `values`, not both".into());
        }
        if self.mode == Mode::Ablate && (self.multiples.is_some() || self.values.is_some()) {
            push(
                "mode",
                "= \"ablate\" takes no `multiples` or `values` (it clamps to 0)".into(),
            );
        }
        for (k, list) in [("multiples", &self.multiples), ("values", &self.values)] {
            match list.as_deref() {
                Some([]) => push(k, "= []: give at least one strength".into()),
                Some(l) => {
                    if let Some(v) = l.iter().find(|v| !v.is_finite()) {
                        push(k, format!("contains {v}: expected finite numbers"));
                    }
                }
                None => {}
            }
        }
        if self.targets.iter().any(|t| t.trim().is_empty()) {
            push("targets", "contains an empty string".into());
        }
        problems
    }
}

/// The sweep when neither `multiples` nor `values` is given.
pub fn default_multiples() -> Vec<f32> {
    vec![0.0, 2.0, 5.0, 10.0]
}

impl StageConfig for SteerConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.experiments.is_empty() {
            problems.push((
                "experiments".into(),
                "= []: give at least one experiment".into(),
            ));
        }
        for (n, e) in self.experiments.iter().enumerate() {
            problems.extend(e.problems(&format!("experiments[{n}]")));
        }
        if self.prompts.is_empty() {
            problems.push(("prompts".into(), "= []: give at least one prompt".into()));
        }
        if self.neutral_text.trim().is_empty() {
            problems.push(("neutral_text".into(), "is empty".into()));
        }
        if self.max_new_tokens == 0 {
            problems.push(("max_new_tokens".into(), "= 0: expected at least 1".into()));
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            problems.push((
                "temperature".into(),
                format!(
                    "= {}: expected 0 (greedy) or a positive number",
                    self.temperature
                ),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            problems.push((
                "top_p".into(),
                format!("= {}: expected 0 < top_p <= 1", self.top_p),
            ));
        }
        for (n, a) in self.attributions.iter().enumerate() {
            for (key, value) in [("prompt", &a.prompt), ("target", &a.target)] {
                if value.is_empty() {
                    problems.push((format!("attributions[{n}].{key}"), "is empty".into()));
                }
            }
        }
        if self.attribution_top == 0 {
            problems.push(("attribution_top".into(), "= 0: expected at least 1".into()));
        }
        if self.attribution_ablate > self.attribution_top {
            problems.push((
                "attribution_ablate".into(),
                format!(
                    "= {}: expected at most attribution_top = {}",
                    self.attribution_ablate, self.attribution_top
                ),
            ));
        }
        for (n, c) in self.contrasts.iter().enumerate() {
            let key = format!("contrasts[{n}]");
            if c.name.trim().is_empty() {
                problems.push((format!("{key}.name"), "is empty".into()));
            }
            if let Err(problem) = c.texts(&key) {
                problems.push(problem);
            }
        }
        if self.contrast_top == 0 {
            problems.push(("contrast_top".into(), "= 0: expected at least 1".into()));
        }
        problems
    }
}

/// Generates with SAE features clamped, added or ablated, side by side with the plain model.
#[derive(Debug)]
pub struct Steer;

impl Stage for Steer {
    type Config = SteerConfig;

    fn description() -> StageDescription {
        StageDescription {
            kind: "steer".into(),
            doc: "Clamps, adds or ablates SAE features while generating; reports generations and effects side by side".into(),
            inputs: vec![
                PortSpec::artifact(port_names::SAE, ArtifactKind::SAE, "the SAE (eval.json beside it gives maximum activations)"),
                PortSpec::artifact(port_names::MODEL, ArtifactKind::MODEL, "the model (else `model`)").optional(),
                PortSpec::artifact(port_names::LABELS, ArtifactKind::LABELS, "feature labels (labels.jsonl), for `label:` selection").optional(),
            ],
            outputs: vec![PortSpec::artifact(
                port_names::REPORT,
                ArtifactKind::STEERING_REPORT,
                "the stage directory with report.json and report.md",
            )],
        }
    }

    fn run(config: SteerConfig, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let sae_dir = ctx.recv_artifact(port_names::SAE)?.path;
        let model_path =
            monoscope_fetch::stages::model_input(ctx, port_names::MODEL, &config.model)?;
        let labels_dir = ctx.optional_artifact(port_names::LABELS)?.map(|a| a.path);
        ctx.progress
            .set_message(format!("loading {}", model_path.display()));
        let device = monoscope_device::open(ctx.device).map_err(StageError::other)?;
        let model = ModelSpec::new(model_path.clone())
            .with_matmul(config.matmul)
            .with_precision(config.precision)
            .with_device(device.clone())
            .load()
            .map_err(SteerError::from)?;
        let report = {
            let progress = ctx.progress.clone();
            let cancel = ctx.cancel.clone();
            let mut tick = |what: &str| {
                if cancel.is_cancelled() {
                    return Err(SteerError::Cancelled);
                }
                progress.set_message(what.to_string());
                progress.inc(1);
                Ok(())
            };
            ctx.progress.set_length(planned_steps(&config));
            run_steering(
                &model,
                &sae_dir,
                labels_dir.as_deref(),
                &config,
                ctx.seed,
                &mut tick,
            )
        };
        let report = match report {
            Err(SteerError::Cancelled) => return Err(StageError::Cancelled),
            other => other?,
        };
        let outputs = monoscope_artifacts::steer::SteerOutputs::new(ctx.stage_dir.clone());
        outputs.write_report(&report)?;
        if !config.attributions.is_empty() || !config.contrasts.is_empty() {
            // Gradients need the f32 arithmetic; contrasts use it too, as the CLI does.
            let f32_model;
            let model = if model.matmul_kind() == MatmulKind::F32 {
                &model
            } else {
                ctx.progress
                    .set_message("loading the f32 model for attributions");
                f32_model = ModelSpec::new(model_path.clone())
                    .with_matmul(MatmulKind::F32)
                    .with_device(device)
                    .load()
                    .map_err(SteerError::from)?;
                &f32_model
            };
            let (attributions, contrasts) =
                run_analyses(model, &sae_dir, labels_dir.as_deref(), &config, &ctx.cancel)?;
            if !config.attributions.is_empty() {
                outputs.write_attributions(&attributions)?;
            }
            if !config.contrasts.is_empty() {
                outputs.write_contrasts(&contrasts)?;
            }
        }
        let summary = serde_json::json!({
            "model": report.model, "hook": report.hook, "experiments": report.experiments.len(),
        });
        ctx.emit_artifact(
            port_names::REPORT,
            Artifact::new(ArtifactKind::STEERING_REPORT, ctx.stage_dir.clone())
                .with_metadata(summary),
        )
    }
}

register_stage!(Steer);

/// The stage's attributions and contrastive searches, on `model` (which runs `f32`).
pub fn run_analyses(
    model: &Model,
    sae_dir: &Path,
    labels_dir: Option<&Path>,
    config: &SteerConfig,
    cancel: &monoscope_core::CancelToken,
) -> Result<(Vec<Attribution>, Vec<Contrast>), SteerError> {
    let sae = monoscope_sae::load_sae(sae_dir)?;
    let table = FeatureTable::load(sae_dir, sae.d_sae, labels_dir)?;
    let steerer = Steerer::new(model, sae, config.hook.as_deref(), table)?
        .steer_first_position(config.steer_first_position);
    let options = AttributionOptions {
        top: config.attribution_top,
        ablate: config.attribution_ablate,
        ..AttributionOptions::default()
    };
    let mut attributions = Vec::with_capacity(config.attributions.len());
    for a in &config.attributions {
        if cancel.is_cancelled() {
            return Err(SteerError::Cancelled);
        }
        attributions.push(steerer.attribute(&a.prompt, &a.target, a.chat, options)?);
    }
    let mut contrasts = Vec::with_capacity(config.contrasts.len());
    for (n, c) in config.contrasts.iter().enumerate() {
        if cancel.is_cancelled() {
            return Err(SteerError::Cancelled);
        }
        let (positive, negative) = c
            .texts(&format!("contrasts[{n}]"))
            .map_err(|(key, reason)| SteerError::config(&key, "", reason))?;
        contrasts.push(Contrast {
            name: c.name.clone(),
            positive: display(&c.positive),
            negative: display(&c.negative),
            positive_texts: positive.len(),
            negative_texts: negative.len(),
            hits: steerer.contrast(&positive, &negative, config.contrast_top)?,
        });
    }
    Ok((attributions, contrasts))
}

impl From<SteerError> for StageError {
    fn from(e: SteerError) -> Self {
        match e {
            SteerError::Cancelled => StageError::Cancelled,
            e => StageError::other(e),
        }
    }
}

/// How many times an experiment calls its tick, for the progress bar.
fn planned_steps(config: &SteerConfig) -> u64 {
    let prompts = config.prompts.len() as u64;
    config
        .experiments
        .iter()
        .map(|e| {
            let steps = match (e.mode, &e.multiples, &e.values) {
                (Mode::Ablate, _, _) => 1,
                (_, _, Some(v)) => v.len(),
                (_, Some(m), None) => m.len(),
                (_, None, None) => default_multiples().len(),
            } as u64;
            2 + prompts + steps * (1 + prompts)
        })
        .sum()
}

/// Everything the stage does between loading the model and writing the report (the CLI and
/// the tests call it with a model already loaded).
pub fn run_steering(
    model: &Model,
    sae_dir: &Path,
    labels_dir: Option<&Path>,
    config: &SteerConfig,
    pipeline_seed: u64,
    tick: &mut crate::experiment::Tick<'_>,
) -> Result<Report, SteerError> {
    let problems = config.validate();
    if !problems.is_empty() {
        let lines: Vec<String> = problems
            .iter()
            .map(|(k, m)| format!("  {k}: {m}"))
            .collect();
        return Err(SteerError::InvalidConfig(lines.join("\n")));
    }
    let sae = monoscope_sae::load_sae(sae_dir)?;
    let table = FeatureTable::load(sae_dir, sae.d_sae, labels_dir)?;
    let steerer = Steerer::new(model, sae, config.hook.as_deref(), table)?
        .steer_first_position(config.steer_first_position);
    let seed = config.seed.unwrap_or(pipeline_seed);
    let settings = RunSettings {
        prompts: config.prompts.clone(),
        chat: config.chat,
        neutral_text: config.neutral_text.clone(),
        max_new_tokens: config.max_new_tokens,
        sampling: RunSettings::sampling(config.temperature as f32, config.top_p as f32, seed),
    };
    let experiments = config
        .experiments
        .iter()
        .map(|e| steerer.run_experiment(&e.spec()?, &settings, tick))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Report {
        model: model.name().to_string(),
        hook: steerer.hook().to_string(),
        seed,
        sae: display(sae_dir),
        settings: Settings {
            max_new_tokens: config.max_new_tokens,
            temperature: config.temperature,
            top_p: config.top_p,
            matmul: model.matmul_kind().name().into(),
            steer_first_position: config.steer_first_position,
            neutral_text: config.neutral_text.clone(),
        },
        experiments,
    })
}

fn display(path: &Path) -> String {
    PathBuf::from(path).display().to_string()
}
