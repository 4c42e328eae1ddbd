//! Pipeline files: reading, layering, validating.
//!
//! A pipeline file is TOML: one `[pipeline]` table (name, seed, run directory, channel
//! capacity), optional `[[plugins]]`, and one table per stage, named by the stage's id:
//!
//! ```toml
//! [pipeline]
//! name = "demo"
//! seed = 7
//!
//! [fetch]
//! kind = "fetch-model"
//!
//! [capture]
//! kind = "capture"
//! input = "fetch"              # or inputs = { model = "fetch.model" }
//! hooks = ["blocks.15.hook_resid_post"]
//! ```
//!
//! Values are layered with figment, later layers winning: each stage kind's built-in defaults,
//! then the file, then `MONOSCOPE_<STAGE>__<KEY>` environment variables, then
//! `--set stage.key=value` overrides. [`load`] resolves the layers, validates everything before
//! any stage runs, and returns a [`Pipeline`] (stages in dependency order, with each value's
//! provenance) or [`ConfigErrors`], one [`Problem`] per mistake.
//!
//! - [`source`]: reading the file and reporting syntax errors with line and column.
//! - [`layers`]: the figment stack and where each value came from.
//! - [`graph`]: stage ids, kinds, inputs, port types and cycles.
//! - `scale`: [`Backend`], and the [`SlurmResources`] of a stage's jobs.
//! - `spec`: [`StageSpec`], a validated stage, and [`Endpoint`], where an input comes from.

mod graph;
mod layers;
mod pipeline;
mod problems;
mod scale;
mod source;
mod spec;

pub use layers::{CommandLineOverride, parse_override};
pub use pipeline::{
    Isolation, Pipeline, PipelineSettings, PluginEntry, load, load_with_env, plugin_entries,
    plugin_paths,
};
pub use problems::{ConfigErrors, Problem};
pub use scale::{Backend, SlurmResources};
pub use spec::{Endpoint, StageSpec};
