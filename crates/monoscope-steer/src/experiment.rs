//! Running one experiment: choose its features, then for each step of the sweep generate from
//! every prompt with and without the edit (same seed), and measure the target log-probability
//! change and the KL on neutral text.

use monoscope_lm::{GenerateOptions, Interventions, Sampling};

use crate::SteerError;
use crate::edit::{FeatureEdit, Mode};
use crate::features::FeatureSpec;
use crate::report::{
    Effect, ExperimentReport, PromptRun, Scale, SteeredText, TargetEffect, TargetSummary,
};
use crate::steerer::{SelectedFeature, Steerer};

/// Most promoted tokens per feature used as targets when none are given.
const DEFAULT_TARGETS_PER_FEATURE: usize = 3;

/// What to steer and how strongly.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentSpec {
    pub features: Vec<FeatureSpec>,
    pub mode: Mode,
    pub scale: Scale,
    /// The sweep; ignored for [`Mode::Ablate`] (one step, value 0).
    pub multiples: Vec<f32>,
    /// Empty: each feature's most promoted tokens.
    pub targets: Vec<String>,
}

/// What every experiment shares.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    pub prompts: Vec<String>,
    pub chat: bool,
    pub neutral_text: String,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
}

impl RunSettings {
    /// Greedy decoding when `temperature` is 0, else seeded sampling with top-p.
    pub fn sampling(temperature: f32, top_p: f32, seed: u64) -> Sampling {
        if temperature > 0.0 {
            Sampling::Sample {
                temperature,
                top_k: None,
                top_p: (top_p < 1.0).then_some(top_p),
                seed,
            }
        } else {
            Sampling::Greedy
        }
    }
}

/// Called before each model run with what is about to run; an error stops the experiment
/// (the stage uses it for progress and cancellation).
pub type Tick<'a> = dyn FnMut(&str) -> Result<(), SteerError> + 'a;

impl Steerer<'_> {
    /// Runs `spec` under `settings`.
    pub fn run_experiment(
        &self,
        spec: &ExperimentSpec,
        settings: &RunSettings,
        tick: &mut Tick<'_>,
    ) -> Result<ExperimentReport, SteerError> {
        tick("choosing features")?;
        let features = spec
            .features
            .iter()
            .map(|f| self.select(f))
            .collect::<Result<Vec<_>, _>>()?;
        for (n, f) in features.iter().enumerate() {
            if let Some(first) = features[..n].iter().find(|g| g.id == f.id) {
                return Err(SteerError::selection(
                    &f.selected_by,
                    format!(
                        "chooses feature {}, as `{}` already does",
                        f.id, first.selected_by
                    ),
                ));
            }
        }
        let steps = self.steps(spec, &features)?;
        let (targets, targets_from) = if spec.targets.is_empty() {
            let mut words = Vec::new();
            for f in &features {
                for w in self.promoted_words(f.id, DEFAULT_TARGETS_PER_FEATURE)? {
                    if !words.contains(&w) {
                        words.push(w);
                    }
                }
            }
            (words, "logit_effects")
        } else {
            (spec.targets.clone(), "config")
        };
        let contexts = settings
            .prompts
            .iter()
            .map(|p| self.prompt_ids(p, settings.chat))
            .collect::<Result<Vec<_>, _>>()?;
        let neutral = self.text_ids(&settings.neutral_text)?;
        let plain = Interventions::new();

        tick("unsteered model")?;
        let neutral_logits = self.logits(&neutral, &plain)?;
        let plain_logp = contexts
            .iter()
            .map(|c| self.target_logprobs(c, &targets, &plain))
            .collect::<Result<Vec<_>, _>>()?;
        let mut prompts = Vec::new();
        for (prompt, ids) in settings.prompts.iter().zip(&contexts) {
            tick(&format!("unsteered: {prompt}"))?;
            prompts.push(PromptRun {
                prompt: prompt.clone(),
                chat: settings.chat,
                baseline: self.generate(ids, &plain, settings)?,
                steered: Vec::new(),
            });
        }

        let mut effects = Vec::new();
        for (multiple, values) in steps {
            let edits = features
                .iter()
                .zip(&values)
                .map(|(f, &value)| FeatureEdit {
                    feature: f.id,
                    mode: spec.mode,
                    value,
                })
                .collect();
            let steering = self.interventions(edits)?;
            tick(&format!("×{multiple}: measuring"))?;
            let logp = contexts
                .iter()
                .map(|c| self.target_logprobs(c, &targets, &steering))
                .collect::<Result<Vec<_>, _>>()?;
            let summary = summarise(&targets, &logp, &plain_logp);
            let kl_neutral = self.kl_against(&neutral, &neutral_logits, &steering)?;
            for (run, ids) in prompts.iter_mut().zip(&contexts) {
                tick(&format!("×{multiple}: {}", run.prompt))?;
                let text = self.generate(ids, &steering, settings)?;
                run.steered.push(SteeredText { multiple, text });
            }
            let n = summary.per_target.len().max(1) as f64;
            effects.push(Effect {
                multiple,
                values,
                target_logprob_delta: summary
                    .per_target
                    .iter()
                    .map(|t| t.logprob_delta)
                    .sum::<f64>()
                    / n,
                target_prob: summary.target_prob,
                kl_neutral,
                per_target: summary.per_target,
            });
        }
        Ok(ExperimentReport {
            features,
            mode: spec.mode,
            scale: spec.scale,
            targets: targets.clone(),
            targets_from: targets_from.to_string(),
            baseline: summarise(&targets, &plain_logp, &plain_logp),
            effects,
            prompts,
        })
    }

    /// Each step of the sweep: its multiple and the value for each feature.
    fn steps(
        &self,
        spec: &ExperimentSpec,
        features: &[SelectedFeature],
    ) -> Result<Vec<(f32, Vec<f32>)>, SteerError> {
        if spec.mode == Mode::Ablate {
            return Ok(vec![(0.0, vec![0.0; features.len()])]);
        }
        if spec.multiples.is_empty() {
            return Err(SteerError::config(
                "multiples",
                "[]",
                "give at least one strength",
            ));
        }
        let unit = |f: &SelectedFeature| {
            match spec.scale {
            Scale::Raw => Ok(1.0),
            Scale::MaxActivation => f.max_activation.ok_or_else(|| {
                SteerError::selection(
                    &f.selected_by,
                    format!(
                        "feature {} has no recorded maximum activation (no `feature_max_activation` \
                         in an eval.json beside the SAE directory): give raw values instead",
                        f.id
                    ),
                )
            }),
        }
        };
        let units = features.iter().map(unit).collect::<Result<Vec<f32>, _>>()?;
        Ok(spec
            .multiples
            .iter()
            .map(|&m| (m, units.iter().map(|u| m * u).collect()))
            .collect())
    }

    /// Generates from `ids` under `interventions` and decodes the new text (stop token dropped).
    pub fn generate(
        &self,
        ids: &[u32],
        interventions: &Interventions,
        settings: &RunSettings,
    ) -> Result<String, SteerError> {
        let options = GenerateOptions {
            sampling: settings.sampling,
            ..GenerateOptions::greedy(settings.max_new_tokens)
        }
        .with_interventions(interventions.clone());
        let generation = self.model().generate(ids, &options)?;
        let tokens = match generation.stopped_on {
            Some(_) => &generation.tokens[..generation.tokens.len() - 1],
            None => &generation.tokens[..],
        };
        Ok(self.model().tokenizer().decode(tokens))
    }
}

/// Mean probabilities and log-probability changes over prompts (`logp[prompt][target]`).
fn summarise(targets: &[String], logp: &[Vec<f64>], plain: &[Vec<f64>]) -> TargetSummary {
    let prompts = logp.len().max(1) as f64;
    let per_target: Vec<TargetEffect> = targets
        .iter()
        .enumerate()
        .map(|(t, target)| TargetEffect {
            target: target.clone(),
            prob: logp.iter().map(|row| row[t].exp()).sum::<f64>() / prompts,
            logprob_delta: logp
                .iter()
                .zip(plain)
                .map(|(a, b)| a[t] - b[t])
                .sum::<f64>()
                / prompts,
        })
        .collect();
    TargetSummary {
        target_prob: per_target.iter().map(|t| t.prob).sum(),
        per_target,
    }
}
