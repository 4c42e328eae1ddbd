//! Sparse autoencoders for monoscope: the model, its file formats, training and evaluation.
//!
//! * [`Sae`] — an inference SAE in SAELens's layout (`W_enc [d_in, d_sae]`, `W_dec [d_sae,
//!   d_in]`, biases, JumpReLU `threshold`), encoding to dense or [`SparseCodes`] and decoding.
//! * [`format`] — SAELens directories (read/write, atomic), sparsify directories and
//!   multi-layer releases (read), Gemma Scope `params.npz` (read).
//! * [`norm`] — the input scale (median or mean-square norm brought to √d_in), folded into
//!   saved weights, and the threshold of massive rows.
//! * [`train`] — [`TrainConfig`], [`Trainer`] (ReLU+L1, TopK+AuxK, BatchTopK, JumpReLU),
//!   computing on the host or on a burn device ([`Compute`]), [`train::fit`] (several SAEs
//!   on one stream, periodic checkpoints with the data position, resuming bit-identically);
//!   [`StepMetrics`] for logging.
//! * [`eval`] — held-out metrics and `eval.json` ([`EvalReport`]), plus the hook for the
//!   model-level splice metrics ([`SpliceEvaluator`]).
//!
//! Design: the forward and backward passes are written by hand on top of the `gemm` crate
//! (the kernel under burn's flex backend) rather than through burn's autodiff. The gradients
//! of these SAEs are short closed forms, and writing them out lets TopK touch only the k
//! active latents per row in the decoder and in both weight gradients, so its only dense
//! product is the encoder's. On a GPU the same closed forms run as burn tensor ops (dense
//! products with masked codes, no autodiff): [`Compute::Burn`] trains on any burn device,
//! with the bookkeeping, checkpoints and export shared with the host path;
//! [`Compute::BurnHalf`] runs its matrix products in f16 or bf16
//! ([`Compute::for_device_with_products`] checks the device has them); and
//! [`Compute::for_device`] keeps the host kernels for burn's CPU device. Inference
//! ([`Sae`]) stays on the host; the train stage implements [`SpliceEvaluator`] with the
//! model (`monoscope_train::ModelSplice`) against the same [`Sae`].

mod error;
pub mod eval;
pub mod format;
mod kernels;
mod metrics;
pub mod norm;
mod sae;
pub mod train;

pub use error::SaeError;
pub use eval::{
    EvalReport, Evaluator, MassiveRows, SpliceEvaluator, SpliceReport, SpliceWithoutMassive,
    evaluate,
};
pub use format::{
    SaeInfo, load_gemma_scope, load_sae, load_saelens, load_sparsify, read_sae_info, save_saelens,
};
pub use metrics::StepMetrics;
pub use norm::{InputScale, NormSample, estimate_input_scale};
pub use sae::{Architecture, Sae, SaeMetadata, SparseCodes};
pub use train::{
    AdamConfig, ArchConfig, AuxKConfig, BDecInit, Compute, Optimizer, REFERENCE_BATCH, TrainConfig,
    Trainer, UNIT_DECODER_ENCODER_NORM, default_lr,
};
