//! Analyses across a family of sparse autoencoders trained on the same batches (a train stage's
//! main SAE and its sweep members), after *Scaling Monosemanticity*: how features split as the
//! dictionary grows, and which concepts of a list each dictionary size has a feature for,
//! against how often the concept occurs.
//!
//! # Contract with other stages
//!
//! Stage kind `split`. Inputs: `sae` (artifact `sae`: the train stage's main SAE; the family is
//! the train stage directory's `sweep.json`), `store` (artifact `activation-store`: the store
//! the family was trained on), `model` (artifact `model`, optional: its tokenizer decodes the
//! top tokens). Output `split` (artifact `split`): the stage directory with `split.json`
//! (`monoscope_artifacts::split`).
//!
//! Stage kind `coverage`. Inputs as `split` (the `model` input, or the `model` key, is required:
//! its tokenizer turns concept terms into token ids). Output `coverage` (artifact `coverage`):
//! the stage directory with `coverage.json`, `coverage.svg` and `coverage.png`
//! (`monoscope_artifacts::coverage`).
//!
//! Both read the last `max_tokens` rows of the store, which are the train stage's held-out
//! shards when the store has more rows than that.
//!
//! # Parts
//!
//! - [`family`]: finding and loading the family from the main SAE's directory, smallest first.
//! - [`scan`]: choosing the hook, the rows to read, and encoding them with every member.
//! - [`index`]: codes turned around: for each feature, the rows it fires on.
//! - [`tokens`]: loading only the tokenizer of a model (a GGUF file or a Hugging Face directory).
//! - [`split`]: parents by decoder cosine and by co-activation, families, top tokens.
//! - [`coverage`]: concept lists, term occurrences, the most specific feature, frequency bins.
//! - [`plot`]: the coverage curve as SVG and PNG, drawn by hand.
//! - [`split_stage`], [`coverage_stage`]: the stage kinds, their parameters and order of work.
//! - `error`: [`AnalysisError`].

pub mod coverage;
pub mod coverage_stage;
mod error;
pub mod family;
pub mod index;
pub mod plot;
pub mod scan;
pub mod split;
pub mod split_stage;
pub mod tokens;

pub use coverage_stage::{Coverage, CoverageConfig};
pub use error::AnalysisError;
pub use family::{Family, Member, load_family};
pub use split_stage::{Split, SplitConfig};
