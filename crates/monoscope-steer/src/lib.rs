//! The `steer` stage: generate with SAE features clamped, added or ablated, side by side with
//! the plain model, and measure what changed (Scaling Monosemanticity's Golden Gate demo).
//!
//! - [`edit`] — [`FeatureEdit`] and [`SaeSteering`], the [`monoscope_lm::Intervention`] at the
//!   SAE's hook: clamp keeps the SAE's error term, `x' = x + (c − f_i(x))·W_dec,i`; add is
//!   `x + α·W_dec,i`; ablate clamps to 0. It runs at every prompt and generated position
//!   (monoscope-lm's KV-cached generation calls it for each new token), the first position
//!   excepted by default.
//! - [`features`] — [`FeatureTable`] (maximum activation and frequency from the train stage's
//!   `eval.json` beside the SAE directory, labels from `labels.jsonl`) and [`FeatureSpec`]
//!   (`123`, `label:<words>`, `text:<text>`).
//! - [`steerer`] — [`Steerer`]: a model with an SAE at its hook; the features that fire most
//!   on a text (`monoscope features --text`), feature selection, prompts as token ids.
//! - [`contrast`] — contrastive search (`monoscope features --contrast POS NEG`): features
//!   ranked by how much more they fire on one set of texts than another, with the difference's
//!   standard error.
//! - [`attribute`] — features as computational intermediates (`monoscope attribute`): each
//!   feature's attribution to a target's log-probability at each position, by a real backward
//!   pass through the rest of the model (the SAE's error term kept), beside the real effect of
//!   ablating the strongest.
//! - [`measure`] — effects without sampling: target log-probabilities, next-token KL on neutral
//!   text.
//! - [`experiment`] — one experiment: the sweep of strengths, generations with and without the
//!   edit from the same seed, the measurements.
//! - [`report`] — [`Report`]: `report.json` and `report.md`.
//! - [`stage`] — the `steer` stage ([`Steer`], [`SteerConfig`]).
//!
//! ## Contract
//!
//! Stage kind `steer`. Inputs: `sae` (`sae`, required: a SAELens directory; the train stage
//! writes `eval.json` with `feature_max_activation` in its parent), `model` (`model`,
//! optional: else the `model` key, default `smollm2`, resolved through monoscope-fetch),
//! `labels` (`labels`, optional: a directory holding `labels.jsonl`, one
//! `{"feature": u32, "label": str, "explanation": str}` per line). Output `report`
//! (`steering-report`): the stage directory, holding `report.json` (shape in [`report`]) and
//! `report.md`.
//!
//! Without labels, `label:` selection fails with a message saying so. `text:` selection runs
//! the model on BOS + the text, encodes the hook's activations and takes the feature whose
//! peak over the text is highest as a multiple of its training maximum (the raw peak when
//! `eval.json` is absent), among the features whose maximum rests on at least
//! [`MIN_FIRINGS_FOR_MAX`] held-out firings first, skipping BOS and the first token after it,
//! where position features dominate whatever the text ([`Steerer::top_features`]).
//! `monoscope features --text` lists the same ranking.
//!
//! Config keys ([`SteerConfig`]): `model`, `hook`, `experiments = [{ feature | features,
//! mode = "clamp"|"add"|"ablate", multiples | values, targets }]`, `prompts`, `chat`,
//! `neutral_text`, `max_new_tokens`, `temperature` (0: greedy), `top_p`, `seed`,
//! `matmul = "f32"|"int8"`, `steer_first_position`; `attributions = [{ prompt, target, chat }]`
//! with `attribution_top` and `attribution_ablate` (written to `attributions.json`, computed on
//! the `f32` arithmetic), and `contrasts = [{ name, positive, negative }]` with `contrast_top`
//! (files of texts, one per line; written to `contrasts.json`).

pub mod attribute;
pub mod contrast;
pub mod edit;
mod error;
pub mod experiment;
pub mod features;
pub mod measure;
pub use monoscope_artifacts::steer as report;
pub mod stage;
pub mod steerer;

pub use attribute::{Attribution, AttributionEntry, AttributionOptions};
pub use contrast::ContrastHit;
pub use edit::{FeatureEdit, Mode, SaeSteering};
pub use error::SteerError;
pub use experiment::{ExperimentSpec, RunSettings};
pub use features::{FeatureRef, FeatureSpec, FeatureTable};
pub use report::{Effect, ExperimentReport, PromptRun, Report, Scale};
pub use stage::{ExperimentConfig, Steer, SteerConfig, run_steering};
pub use steerer::{FeatureHit, MIN_FIRINGS_FOR_MAX, SelectedFeature, Steerer};
