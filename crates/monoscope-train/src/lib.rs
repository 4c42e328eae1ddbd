//! The `train` stage: a sparse autoencoder trained on an activation store.
//!
//! Reads one hook of the store with the seeded shuffled reader, holding the last shards out;
//! estimates the input scale on the first batches; trains with `monoscope-sae`; logs
//! `metrics.jsonl`; evaluates on the held-out shards (`eval.json`: L0, FVU, dead and dense
//! fractions, density histogram, per-feature frequency and maximum activation); saves the SAE in
//! the SAELens layout (`sae/cfg.json` + `sae/sae_weights.safetensors`, input scale folded in).
//!
//! Not yet: training from the capture stream, several SAEs per stage, periodic checkpoints from
//! the stage (the library supports them), and the CE-loss splice with the model.

mod stage;

pub use stage::{Train, TrainStageConfig, TrainStageError};
