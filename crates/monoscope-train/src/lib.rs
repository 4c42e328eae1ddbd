//! The `train` stage: a sparse autoencoder trained on an activation store or a capture's stream.
//!
//! - `stage`: reads one hook of the store with the seeded shuffled reader (or, with the
//!   `activations` input connected, of the stream: see `stream`), holding the last
//!   shards out; estimates the input scale on the first batches; trains with `monoscope-sae`;
//!   logs `metrics.jsonl`; evaluates on the held-out shards (`eval.json`: L0, FVU, dead and
//!   dense fractions, density histogram, per-feature frequency and maximum activation, and the
//!   CE-loss splice); saves the SAE in the SAELens layout (`sae/cfg.json` +
//!   `sae/sae_weights.safetensors`, input scale folded in).
//! - [`splice`]: [`ModelSplice`], the model-level metrics (`ce_loss_score`, KL) with the SAE
//!   spliced in at its hook, on windows rebuilt from held-out store rows.
//! - `stream`: training from a capture's `activations` stream instead of a store: held-out
//!   rows from its start, a seeded mixing buffer, resumable by reading the stream again.
//! - `saes`: the main SAE and the sweep's members: trainer settings, directories, the fit's
//!   fingerprint, the fit itself (`monoscope_sae::train::fit`: the loop, metrics, periodic
//!   checkpoints and resuming) with the stage's progress and cancellation, and saving.
//! - `ce_loss`: the stage's CE-loss scoring with [`splice`]: which model it splices into
//!   (the `model` input, else the cached default the store was captured with), progress and
//!   cancellation.
//! - `hooks`: `hooks = [...]`, one SAE per hook in `hooks/<hook>/`, and the stage's
//!   `parts = N`: each part trains a share of the hooks, the merge links them into the stage.
//! - `import`: the `import-sae` stage ([`ImportSae`]): a published SAE (SAELens, sparsify,
//!   Gemma Scope) saved in the SAELens layout, evaluated on a store when one is connected.
//! - `config`: [`TrainStageConfig`], with [`SweepMember`]s: more SAEs trained on the same
//!   batches in the same pass (`sweep/<name>/`, compared in `sweep.json`); `error`:
//!   [`TrainStageError`].

mod ce_loss;
mod config;
mod error;
mod hooks;
mod import;
mod saes;
pub mod splice;
mod stage;
mod stream;

pub use config::{ArchitectureName, SweepMember, TrainStageConfig};
pub use error::TrainStageError;
pub use import::{ImportSae, ImportSaeConfig};
pub use splice::{ModelSplice, held_out_windows};
pub use stage::Train;
