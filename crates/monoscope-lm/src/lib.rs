//! Transformer language models on burn, with TransformerLens-style hooks: the model runtime of
//! monoscope's capture, evaluation and steering stages.
//!
//! - [`load`] / [`Model::from_loaded`]: build a [`Model`] of any
//!   [`monoscope_formats::Architecture`] (Llama 1–3 with every RoPE scaling, Mistral, Qwen2/3,
//!   Phi-3, Gemma 1/2/3, OLMo-2, GPT-NeoX/Pythia, GPT-2) from a GGUF file, a Hugging Face
//!   directory or a [`monoscope_formats::LoadedModel`]. What a block computes comes from
//!   [`monoscope_formats::BlockConfig`]; `tests/transformers_fixtures.rs` holds every family to
//!   transformers' numbers.
//! - [`HookName`]: TransformerLens names — `blocks.{L}.hook_resid_pre|hook_resid_mid|
//!   hook_resid_post|hook_attn_out|hook_mlp_out`, `blocks.{L}.attn.hook_q|k|v|z`,
//!   `blocks.{L}.mlp.hook_pre|hook_post` and `ln_final.hook_normalized` — validated against the
//!   model by [`Model::hook`], each as wide as [`Model::hook_width`] says.
//! - Weights stay in the checkpoint's float type (16-bit stays 16-bit, widened per matrix as it
//!   is multiplied) under the default [`Precision::F32`]; [`Model::weight_bytes`] says what they
//!   occupy. [`Precision::F16`] / [`Precision::Bf16`] (GPU devices; the CPU refuses them) hold
//!   every matrix in that type and run the matmuls in it, the residual stream, norms,
//!   attention scores and softmax staying f32.
//! - [`Model::forward`] with [`ForwardOptions`]: record hooks, replace activations through
//!   [`Interventions`], stop after the last block needed, return [`Logits`].
//! - [`TokenBatch`]: `[batch, seq]` ids with left or right padding.
//! - [`Model::generate`] with [`GenerateOptions`] and [`Sampling`]: KV-cached generation with
//!   interventions at every prompt and generated position; [`Model::log_probs`] and
//!   [`Model::next_token_distribution`] to measure their effect.
//! - [`Model::generate_batch`] and [`Model::next_token_logits`]: many prompts in one batch,
//!   their common prefix run once ([`shared_prefix_len`]); what autointerp's questions need.
//! - [`load_with`] / [`Model::from_loaded_with`] with [`ModelOptions`]: [`MatmulKind::Int8`]
//!   runs the linear layers and unembedding as int8 × int16 integer products on the CPU
//!   device (about twice fp32's rate on AVX2, ~1% relative error per product); the default
//!   [`MatmulKind::F32`] is the reference arithmetic. [`ModelOptions::host_kernels`] `false`
//!   makes the CPU run the device path below (burn's ops), to compare the two without a GPU.
//!   [`ModelSpec`] names a checkpoint, its matmul kind, precision and device in one value.
//! - [`LmError`]: the one error type.
//!
//! Internals: `rope` turns a checkpoint's RoPE scaling into frequencies, `weights` lays
//! checkpoint tensors out for the forward pass (fused projections,
//! one RoPE layout), `layers` holds the numeric kernels, `linear` the projections and their
//! arithmetic, `int8` the integer matrix-product kernels, `fused` the CPU host kernels that
//! beat burn's generic element-wise ops (RMSNorm, SwiGLU), `attention` the CPU host kernel for
//! causal grouped-query attention with RoPE (only the scores at or before each query, no
//! layout copies), `host_block` the int8 CPU path's blocks on host buffers (burn tensors
//! only at active hooks). The host kernels run when tensors are on the `flex` device and the
//! block is a plain one (pre-norm, full RoPE, standard attention) and
//! [`ModelOptions::host_kernels`] is on; the burn ops in `layers` remain the reference, the
//! path of every other device and of every other block (the "device path").
//!
//! On the device path the work stays on the model's device: token ids, positions, RoPE
//! tables and padding masks are built there, the KV cache of [`Model::forward_cached`],
//! [`Model::generate`] and [`Model::generate_batch`] is device tensors, recorded hooks are
//! device tensors until a caller asks for host values ([`ForwardOutput::activation_host`],
//! [`to_host`]), and attention is burn's fused attention op (causal, padding mask, scale and
//! softcap as options; GPU backends get each key head repeated for its query heads, which
//! their kernels cannot share). What crosses to the host per generation step is the last
//! position's logits, which sampling reads.

mod attention;
mod batch;
mod batched;
mod error;
mod forward;
mod fused;
mod generate;
mod hooks;
mod host_block;
mod int8;
mod layers;
mod linear;
mod model;
mod rope;
mod sampling;
mod weights;

pub use batch::{PadSide, TokenBatch};
pub use batched::shared_prefix_len;
pub use error::LmError;
pub use forward::{ForwardOptions, ForwardOutput, KvCache, Logits, to_host};
pub use generate::{GenerateOptions, Generation};
pub use hooks::{HookContext, HookName, HookPoint, Intervention, Interventions};
pub use linear::{MatmulKind, ModelOptions, ModelSpec, Precision};
pub use model::{Model, load, load_with};
pub use sampling::Sampling;

/// Re-exported so that callers build tensors and devices with the same burn this crate uses.
pub use burn::prelude::{Device, Tensor};
