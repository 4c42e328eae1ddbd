//! The `autointerp-label` stage: what each SAE feature responds to, in words, and how well
//! those words predict it.
//!
//! # Parts
//! - [`evidence`]: one streaming computation over an activation store (three passes, memory
//!   bounded by the examples kept) giving each feature's top contexts, quantile samples,
//!   random non-firing contexts, firing frequency, activation histogram, and
//!   ([`evidence::logit_effects`]) the tokens its decoder direction promotes and suppresses.
//! - [`explainer`]: the [`Explainer`] trait and its three backends: the local model through
//!   monoscope's runtime, any OpenAI-compatible HTTP endpoint, and a deterministic statistical
//!   labeller; model answers are kept in a response cache.
//! - [`prompt`]: delphi-style prompts (`<<token>>` marks firing tokens) and answer parsing.
//! - [`score`]: detection and fuzzing, as balanced accuracy.
//! - [`labelling`]: labelling a set of features, concurrently, turning failures into counted
//!   skip reasons.
//! - [`format`]: the files the stage writes, as types: `monoscope_artifacts::label`, which
//!   every reader (the browser, the cluster and steer stages, `monoscope labels show`) goes
//!   through; [`summary`]: their statistics.
//! - `parts`: `parts = N`, contiguous feature ranges, and their merge.
//! - [`AutointerpLabel`] ([`stage`]) and [`LabelConfig`] ([`config`]): the stage itself.
//!
//! # Contract with the other stages
//! Kind `autointerp-label`. Inputs: `sae` (artifact `sae`, required: a SAELens directory),
//! `store` (artifact `activation-store`, required), `model` (artifact `model`, optional: the
//! model the store was captured from; the default model via `monoscope-fetch` otherwise).
//! Output `labels` (artifact `labels`): the stage directory, holding
//! - `evidence.jsonl`: one line per feature in feature order (dead ones too, with empty lists):
//!   `{"feature":u32,"fires":u64,"frequency":f64,"max_activation":f32,"mean_activation":f32,
//!   "histogram":{"edges":[f32],"counts":[u64]},"top":[Context],"quantiles":[{"low":f32,
//!   "high":f32,"examples":[Context]}],"random":[Context],"logits":{"promoted":[{"token":str,
//!   "value":f32}],"suppressed":[...]}}` with `Context = {"row":u64,"doc":u32,"position":u32,
//!   "tokens":[str],"activations":[f32],"focus":u32}` (`row`, `doc`, `position`: the selected
//!   token; `focus`: its index in `tokens`; tokens decoded one by one);
//! - `evidence.meta.json`: hook, d_sae, tokens scanned, window, sae, store and model;
//! - `labels.jsonl`: one line per labelled feature: `{"feature":u32,"label":str,
//!   "explanation":str,"explainer":str,"scores":{"detection":f64|null,"fuzzing":f64|null},
//!   "baseline":{"label":str,"scores":{...}}|null}`;
//! - `summary.json`: [`format::Summary`].

pub mod config;
mod error;
pub mod evidence;
pub mod explainer;
pub use monoscope_artifacts::label as format;
pub mod labelling;
mod parts;
pub mod prompt;
pub mod score;
pub mod stage;
pub mod summary;

pub use config::{ExplainerKind, HttpConfig, LabelConfig};
pub use error::LabelError;
pub use explainer::Explainer;
pub use stage::{AutointerpLabel, Inputs, run_label};
