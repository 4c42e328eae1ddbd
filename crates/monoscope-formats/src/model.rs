//! The format-neutral description of a transformer checkpoint: its hyper-parameters and its
//! weights under canonical names, already dequantised to f32.
//!
//! Every loader (GGUF, Hugging Face directory) produces a [`LoadedModel`]; the model crate builds
//! its burn modules from nothing else. Canonical names follow the Hugging Face Llama layout so that
//! one naming serves every family:
//!
//! | canonical name | shape | notes |
//! |---|---|---|
//! | `embed_tokens` | `[vocab, d_model]` | |
//! | `embed_positions` | `[n_ctx, d_model]` | GPT-2 only (learned positions) |
//! | `layers.{L}.attn_norm.weight` / `.bias` | `[d_model]` | bias: LayerNorm models only |
//! | `layers.{L}.q_proj.weight` | `[n_heads*head_dim, d_model]` | `[out, in]`, as PyTorch's Linear |
//! | `layers.{L}.k_proj.weight`, `v_proj.weight` | `[n_kv_heads*head_dim, d_model]` | |
//! | `layers.{L}.{q,k,v}_proj.bias` | `[out]` | Qwen2 and GPT-2 |
//! | `layers.{L}.o_proj.weight` (`.bias`) | `[d_model, n_heads*head_dim]` | |
//! | `layers.{L}.mlp_norm.weight` / `.bias` | `[d_model]` | |
//! | `layers.{L}.gate_proj.weight` | `[d_ff, d_model]` | SwiGLU only |
//! | `layers.{L}.up_proj.weight` (`.bias`) | `[d_ff, d_model]` | GPT-2: `c_fc` transposed |
//! | `layers.{L}.down_proj.weight` (`.bias`) | `[d_model, d_ff]` | GPT-2: `c_proj` transposed |
//! | `final_norm.weight` / `.bias` | `[d_model]` | |
//! | `lm_head.weight` | `[vocab, d_model]` | absent when `tied_embeddings` |
//!
//! All matrices are stored `[out, in]` whatever the source layout (GPT-2's Conv1D `[in, out]` is
//! transposed at load). Q and K rows are in the order the file's RoPE layout expects; see
//! [`RopeLayout`].

use std::collections::BTreeMap;

/// Which transformer family the weights belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama, Llama 2/3, SmolLM, Mistral, Qwen2 (with q/k/v biases): RMSNorm, RoPE, GQA, SwiGLU.
    Llama,
    /// GPT-2: learned positions, LayerNorm, GELU (tanh approximation), fused attention.
    Gpt2,
}

/// How rotary embeddings pair up the dimensions of each head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RopeLayout {
    /// Pairs (2i, 2i+1): what GGUF files use (llama.cpp permutes Q/K rows at conversion).
    AdjacentPairs,
    /// Pairs (i, i + head_dim/2): Hugging Face checkpoints (`rotate_half`).
    HalfSplit,
}

/// Hyper-parameters of a checkpoint, read from GGUF metadata or `config.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Hidden width of the MLP.
    pub d_ff: usize,
    pub vocab_size: usize,
    /// Longest context the model was trained for (positions table size for GPT-2).
    pub max_positions: usize,
    /// RMSNorm / LayerNorm epsilon.
    pub norm_eps: f64,
    /// RoPE base frequency (unused by GPT-2).
    pub rope_theta: f64,
    pub rope_layout: RopeLayout,
    /// Whether `lm_head` shares the token embedding matrix.
    pub tied_embeddings: bool,
    /// Beginning-of-sequence token id, if the model uses one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token ids (generation stops on any of them).
    pub eos_token_ids: Vec<u32>,
}

/// One weight matrix or vector, dequantised to f32, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A checkpoint ready to be turned into a model: its config, its tensors under canonical names,
/// its tokenizer, and where it came from.
#[derive(Debug)]
pub struct LoadedModel {
    pub config: ModelConfig,
    pub tensors: BTreeMap<String, HostTensor>,
    pub tokenizer: crate::Tokenizer,
    /// A short, human name ("SmolLM2-135M-Instruct"): the GGUF file name without its
    /// quantisation suffix, or the HF directory name.
    pub name: String,
    /// sha256 of the weights file (GGUF) or of `config.json` plus each shard, in order (HF).
    pub sha256: String,
}
