//! The format-neutral description of a transformer checkpoint: its hyper-parameters and its
//! weights under canonical names, in the file's own float type (f32, f16 or bf16;
//! quantised GGUF types dequantised to f32).
//!
//! Every loader (GGUF, Hugging Face directory) produces a [`LoadedModel`]; the model crate builds
//! its burn modules from nothing else. Canonical names follow the Hugging Face Llama layout so that
//! one naming serves every family:
//!
//! | canonical name | shape | notes |
//! |---|---|---|
//! | `embed_tokens` | `[vocab, d_model]` | |
//! | `embed_positions` | `[n_ctx, d_model]` | GPT-2 only (learned positions) |
//! | `layers.{L}.attn_norm.weight` / `.bias` | `[d_model]` | bias: LayerNorm models only; absent with post-norms only |
//! | `layers.{L}.q_proj.weight` | `[n_heads*head_dim, d_model]` | `[out, in]`, as PyTorch's Linear |
//! | `layers.{L}.k_proj.weight`, `v_proj.weight` | `[n_kv_heads*head_dim, d_model]` | |
//! | `layers.{L}.{q,k,v}_proj.bias` | `[out]` | Qwen2 and GPT-2 |
//! | `layers.{L}.o_proj.weight` (`.bias`) | `[d_model, n_heads*head_dim]` | |
//! | `layers.{L}.mlp_norm.weight` / `.bias` | `[d_model]` | absent with post-norms only |
//! | `layers.{L}.post_attn_norm.weight`, `post_mlp_norm.weight` | `[d_model]` | Gemma 2/3, OLMo-2 |
//! | `layers.{L}.q_norm.weight`, `k_norm.weight` | `[head_dim]` or `[heads*head_dim]` | Qwen3, Gemma 3, OLMo-2 |
//! | `layers.{L}.gate_proj.weight` | `[d_ff, d_model]` | gated MLPs only (Phi-3's fused `gate_up_proj` split at load) |
//! | `layers.{L}.up_proj.weight` (`.bias`) | `[d_ff, d_model]` | GPT-2: `c_fc` transposed |
//! | `layers.{L}.down_proj.weight` (`.bias`) | `[d_model, d_ff]` | GPT-2: `c_proj` transposed |
//! | `final_norm.weight` / `.bias` | `[d_model]` | |
//! | `lm_head.weight` | `[vocab, d_model]` | absent when `tied_embeddings` |
//!
//! Norm weights are the multiplier itself: Gemma's `(1 + w)` is added at load. All matrices
//! are stored `[out, in]` whatever the source layout (GPT-2's Conv1D `[in, out]` is
//! transposed at load). Q and K rows are in the order the file's RoPE layout expects; see
//! [`RopeLayout`].

use std::collections::BTreeMap;

/// Which transformer family the weights belong to. The forward pass reads what it computes
/// from [`ModelConfig`]'s fields ([`BlockConfig`]), not from this name, except for the parts a
/// family alone has (GPT-2's learned positions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama, Llama 2/3, SmolLM, Mistral, Qwen2 (with q/k/v biases), Phi-3 (fused projections,
    /// split at load): RMSNorm, RoPE, GQA, SwiGLU.
    Llama,
    /// GPT-2: learned positions, LayerNorm, GELU (tanh approximation), fused attention.
    Gpt2,
    /// Qwen3: Llama with an RMSNorm on each head's query and key.
    Qwen3,
    /// Gemma: RMSNorm with (1 + w), GeGLU, embeddings scaled by √d_model.
    Gemma,
    /// Gemma 2: Gemma with norms after attention and MLP as well, soft-capped attention and
    /// final logits, `query_pre_attn_scalar`, alternating sliding-window layers.
    Gemma2,
    /// Gemma 3 (text): Gemma 2 with q/k norms, a local RoPE base on sliding layers and no
    /// soft-capping.
    Gemma3,
    /// OLMo-2: norms after attention and MLP only, RMSNorm over all query and key heads.
    Olmo2,
    /// GPT-NeoX / Pythia: parallel residual, partial rotary, LayerNorm with biases, GELU.
    GptNeox,
}

impl Architecture {
    /// LayerNorm (with bias) instead of RMSNorm.
    pub fn layer_norm(self) -> bool {
        matches!(self, Self::Gpt2 | Self::GptNeox)
    }

    /// Rotary position embeddings (every family but GPT-2's learned positions).
    pub fn rotary(self) -> bool {
        self != Self::Gpt2
    }
}

/// The MLP's non-linearity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MlpActivation {
    /// `down(silu(gate x) * up x)`.
    #[default]
    SwiGlu,
    /// `down(gelu_tanh(gate x) * up x)` (Gemma).
    GeGluTanh,
    /// `down(gelu_tanh(up x))` (GPT-2).
    GeluTanh,
    /// `down(gelu(up x))` with the exact erf GELU (GPT-NeoX).
    Gelu,
}

impl MlpActivation {
    pub fn gated(self) -> bool {
        matches!(self, Self::SwiGlu | Self::GeGluTanh)
    }
}

/// Where a block's norms sit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormPlacement {
    /// Before attention and before the MLP.
    #[default]
    Pre,
    /// Before and after each (Gemma 2/3): `x + post_norm(f(pre_norm(x)))`.
    PreAndPost,
    /// Only after each (OLMo-2): `x + post_norm(f(x))`.
    Post,
}

/// Norms on the query and key projections before RoPE.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QkNorm {
    #[default]
    None,
    /// RMSNorm over each head's `head_dim` values, one `[head_dim]` weight (Qwen3, Gemma 3).
    PerHead,
    /// RMSNorm over all heads at once, `[heads * head_dim]` weights (OLMo-2).
    AllHeads,
}

/// What a block computes beyond the Llama default, read from the checkpoint's config. Every
/// field defaults to the Llama behaviour.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct BlockConfig {
    pub mlp: MlpActivation,
    pub norm_placement: NormPlacement,
    pub qk_norm: QkNorm,
    /// `x + attn(ln1 x) + mlp(ln2 x)` (GPT-NeoX).
    pub parallel_residual: bool,
    /// Rotated dimensions of each head when fewer than `head_dim` (partial rotary).
    pub rotary_dim: Option<usize>,
    /// Multiplies the token embeddings (Gemma: √d_model).
    pub embedding_multiplier: Option<f64>,
    /// Attention scores `s` become `c · tanh(s / c)` (Gemma 2).
    pub attn_logit_softcap: Option<f64>,
    /// Final logits `l` become `c · tanh(l / c)` (Gemma 2).
    pub final_logit_softcap: Option<f64>,
    /// Scale on the query·key products; `None`: 1/√head_dim.
    pub attn_scale: Option<f64>,
    /// Keys further back than this many positions (the query's own included) are invisible
    /// to layers marked in `sliding_layers`.
    pub sliding_window: Option<usize>,
    /// Per layer, whether its attention is windowed; empty with a window: every layer.
    pub sliding_layers: Vec<bool>,
    /// RoPE base of the sliding layers, when it differs (Gemma 3); they take no scaling.
    pub local_rope_theta: Option<f64>,
}

impl BlockConfig {
    /// Whether layer `l` attends through the sliding window (and its size).
    pub fn window(&self, l: usize) -> Option<usize> {
        let w = self.sliding_window?;
        (self.sliding_layers.is_empty() || self.sliding_layers.get(l).copied().unwrap_or(false))
            .then_some(w)
    }
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

/// A change to the rotary frequencies `theta^(-2i/head_dim)`, as Hugging Face's `rope_scaling`
/// (or `rope_parameters`) and llama.cpp's `rope_freqs` tensor define them. The arithmetic lives
/// in the model crate; this is the checkpoint's description.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum RopeScaling {
    /// Every frequency divided by `factor` (positions interpolated).
    Linear { factor: f64 },
    /// NTK-aware: once a forward pass reaches past `original_max_positions`, the base grows
    /// with the longest position of that pass.
    Dynamic {
        factor: f64,
        original_max_positions: usize,
    },
    /// Llama 3.1/3.2: low frequencies divided by `factor`, high ones kept, a smooth blend
    /// between the two wavelength bounds.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_positions: usize,
    },
    /// YaRN: a ramp between interpolated and extrapolated frequencies over the dimensions
    /// between `beta_fast` and `beta_slow` rotations, and cos/sin scaled by `attention_factor`.
    Yarn {
        factor: f64,
        original_max_positions: usize,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: f64,
        truncate: bool,
    },
    /// Each frequency divided by its own factor: how llama.cpp stores Llama 3 scaling
    /// (`rope_freqs.weight`, one factor per rotated pair).
    FrequencyDivisors { divisors: Vec<f64> },
    /// LongRoPE (Phi-3): each frequency divided by its own factor, `short_factors` while the
    /// pass stays within `original_max_positions` and `long_factors` once it reaches past
    /// them (for the whole pass, as transformers switches), cos/sin scaled by
    /// `attention_factor`.
    LongRope {
        short_factors: Vec<f64>,
        long_factors: Vec<f64>,
        original_max_positions: usize,
        attention_factor: f64,
    },
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
    /// How the rotary frequencies are stretched for long contexts; `None`: plain RoPE.
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// What the blocks compute beyond the Llama default.
    #[serde(default)]
    pub block: BlockConfig,
    /// Whether `lm_head` shares the token embedding matrix.
    pub tied_embeddings: bool,
    /// Beginning-of-sequence token id, if the model uses one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token ids (generation stops on any of them).
    pub eos_token_ids: Vec<u32>,
}

pub use crate::host_tensor::{HostData, HostTensor};

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
