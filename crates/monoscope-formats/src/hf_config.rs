//! `config.json` of a Hugging Face checkpoint → [`ModelConfig`], for every supported
//! `model_type`. Every field that changes the arithmetic is either read into the config or,
//! when set to something monoscope does not compute, refused with its key and value.

use std::path::Path;

use serde_json::Value;

use crate::error::{FormatError, Result};
use crate::model::{
    Architecture, BlockConfig, MlpActivation, ModelConfig, NormPlacement, QkNorm, RopeLayout,
    RopeScaling,
};

pub(crate) const SUPPORTED: &str =
    "llama, mistral, qwen2, qwen3, phi3, gemma, gemma2, gemma3_text, olmo2, gpt_neox, gpt2";

/// Typed access to one JSON object of `config.json`, with errors naming the key (under
/// `prefix` for a nested object such as `rope_scaling`).
pub(crate) struct Cfg<'a> {
    pub path: &'a Path,
    pub v: &'a Value,
    pub prefix: String,
}

impl<'a> Cfg<'a> {
    pub fn new(path: &'a Path, v: &'a Value) -> Self {
        Self {
            path,
            v,
            prefix: String::new(),
        }
    }

    fn nested(&self, key: &str, v: &'a Value) -> Self {
        Self {
            path: self.path,
            v,
            prefix: format!("{}{key}.", self.prefix),
        }
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub fn bad(&self, key: &str, detail: String) -> FormatError {
        FormatError::BadValue {
            path: self.path.to_path_buf(),
            key: self.name(key),
            detail,
        }
    }

    fn unsupported(&self, key: &str, value: &Value, detail: impl Into<String>) -> FormatError {
        FormatError::UnsupportedSetting {
            path: self.path.to_path_buf(),
            key: self.name(key),
            value: value.to_string(),
            detail: detail.into(),
        }
    }

    fn missing(&self, key: &str) -> FormatError {
        FormatError::MissingKey {
            path: self.path.to_path_buf(),
            key: self.name(key),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }

    /// Whether the config has `key` at all, null included (an explicit null overrides a
    /// family's default where an absent key does not).
    fn has(&self, key: &str) -> bool {
        self.v.get(key).is_some()
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|u| Some(u as usize)).ok_or_else(|| {
                self.bad(key, format!("expected a non-negative integer, found {v}"))
            }),
        }
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.bad(key, format!("expected a number, found {v}"))),
        }
    }

    fn f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?.ok_or_else(|| self.missing(key))
    }

    fn positive(&self, key: &str, v: f64) -> Result<f64> {
        if v > 0.0 && v.is_finite() {
            Ok(v)
        } else {
            Err(self.bad(key, format!("{v} must be a positive number")))
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.bad(key, format!("expected true or false, found {v}"))),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.bad(key, format!("expected a string, found {v}"))),
        }
    }

    /// An id or list of ids (`eos_token_id` is either).
    pub fn ids(&self, key: &str) -> Result<Vec<u32>> {
        let one = |v: &Value| {
            v.as_u64()
                .and_then(|u| u32::try_from(u).ok())
                .ok_or_else(|| self.bad(key, format!("expected a token id, found {v}")))
        };
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    }

    /// Refuses `key` when it is `true`.
    fn refuse_true(&self, key: &str, why: &str) -> Result<()> {
        if self.opt_bool(key)? == Some(true) {
            return Err(self.unsupported(key, &Value::Bool(true), why));
        }
        Ok(())
    }
}

/// More layers than any model has; a count read from a file is held to it before it sizes the
/// per-layer tables built ahead of the weights (the weights themselves bound it only later).
const MAX_LAYERS: usize = 1 << 16;

/// A layer count under `key`, at most [`MAX_LAYERS`].
fn layer_count(c: &Cfg, key: &str) -> Result<usize> {
    let n = c.usize(key)?;
    if n > MAX_LAYERS {
        return Err(c.bad(
            key,
            format!("{n} layers is more than the {MAX_LAYERS} this reader accepts"),
        ));
    }
    Ok(n)
}

/// The `ModelConfig` of a `config.json`.
pub(crate) fn parse_config(path: &Path, v: &Value) -> Result<ModelConfig> {
    let c = Cfg::new(path, v);
    let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
    let architecture = match model_type {
        "llama" | "mistral" | "qwen2" | "phi3" => Architecture::Llama,
        "qwen3" => Architecture::Qwen3,
        "gemma" => Architecture::Gemma,
        "gemma2" => Architecture::Gemma2,
        "gemma3_text" => Architecture::Gemma3,
        "olmo2" => Architecture::Olmo2,
        "gpt_neox" => Architecture::GptNeox,
        "gpt2" => return gpt2(&c),
        other => {
            return Err(FormatError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                arch: other.to_string(),
                supported: SUPPORTED,
            });
        }
    };
    let neox = architecture == Architecture::GptNeox;
    let d_model = c.usize("hidden_size")?;
    let n_heads = c.usize("num_attention_heads")?;
    let n_kv_heads = c.opt_usize("num_key_value_heads")?.unwrap_or(n_heads);
    let head_dim = match c.opt_usize("head_dim")? {
        Some(h) => h,
        None if n_heads > 0 && d_model.is_multiple_of(n_heads) => d_model / n_heads,
        None => {
            return Err(c.bad(
                "num_attention_heads",
                format!("{n_heads} does not divide hidden_size {d_model}"),
            ));
        }
    };
    if n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
        return Err(c.bad(
            "num_key_value_heads",
            format!("{n_kv_heads} does not divide {n_heads} heads"),
        ));
    }
    // Each family's default, where a config leaves it out (it matters to RoPE scalings).
    let max_positions = c
        .opt_usize("max_position_embeddings")?
        .unwrap_or(match model_type {
            "mistral" | "gemma3_text" => 131_072,
            "qwen2" | "qwen3" => 32_768,
            "gemma" | "gemma2" => 8192,
            "phi3" => 4096,
            _ => 2048,
        });
    let gemma = matches!(
        architecture,
        Architecture::Gemma | Architecture::Gemma2 | Architecture::Gemma3
    );
    let mut block = BlockConfig::default();
    // The key each family's modeling code reads: Gemma 2/3 `hidden_activation` only, Gemma 1
    // `hidden_act` (which its config turns from "gelu" into the tanh GELU), the rest
    // `hidden_act`.
    let mlp_key = if matches!(architecture, Architecture::Gemma2 | Architecture::Gemma3) {
        "hidden_activation"
    } else {
        "hidden_act"
    };
    block.mlp = match (architecture, c.opt_str(mlp_key)?) {
        (Architecture::GptNeox, Some("gelu" | "gelu_python") | None) => MlpActivation::Gelu,
        (
            Architecture::GptNeox,
            Some("gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_python_tanh"),
        ) => MlpActivation::GeluTanh,
        (Architecture::Gemma, Some("gelu")) => MlpActivation::GeGluTanh,
        (_, Some("gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" | "gelu_python_tanh") | None)
            if gemma =>
        {
            MlpActivation::GeGluTanh
        }
        (_, Some("silu" | "swish") | None) if !gemma => MlpActivation::SwiGlu,
        (_, Some(other)) => {
            return Err(c.unsupported(
                mlp_key,
                &Value::String(other.into()),
                if gemma {
                    "supported: gelu_pytorch_tanh"
                } else if neox {
                    "supported: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast"
                } else {
                    "supported: silu"
                },
            ));
        }
        (_, None) => unreachable!("every family has a default activation above"),
    };
    c.refuse_true(
        "use_bidirectional_attention",
        "bidirectional attention is not implemented",
    )?;
    if c.opt_bool("is_causal")? == Some(false) {
        return Err(c.unsupported(
            "is_causal",
            &Value::Bool(false),
            "bidirectional attention is not implemented",
        ));
    }
    let qwen = matches!(model_type, "qwen2" | "qwen3");
    // Only Qwen's modeling code reads `use_sliding_window`; Llama, Mistral and Phi-3 ignore it.
    if qwen && c.opt_bool("use_sliding_window")? == Some(true) {
        // Qwen: layers from `max_window_layers` on attend through the window.
        block.sliding_window = Some(c.usize("sliding_window")?);
        block.sliding_layers =
            sliding_layers(&c, architecture, layer_count(&c, "num_hidden_layers")?)?;
    }
    match architecture {
        // Llama's modeling code never reads `sliding_window`; Mistral's defaults to 4096.
        Architecture::Llama if model_type == "mistral" => {
            block.sliding_window = window_or(&c, Some(4096))?;
        }
        Architecture::Llama if model_type == "phi3" => {
            block.sliding_window = window_or(&c, None)?;
        }
        Architecture::Qwen3 => block.qk_norm = QkNorm::PerHead,
        Architecture::Gemma => {}
        Architecture::Gemma2 | Architecture::Gemma3 => {
            block.norm_placement = NormPlacement::PreAndPost;
            // transformers' defaults where a key is absent (an explicit null: none).
            let gemma2 = architecture == Architecture::Gemma2;
            let softcap = |key: &str, default: f64| -> Result<Option<f64>> {
                if c.has(key) {
                    c.opt_f64(key)
                } else {
                    Ok(gemma2.then_some(default))
                }
            };
            block.attn_logit_softcap = softcap("attn_logit_softcapping", 50.0)?;
            block.final_logit_softcap = softcap("final_logit_softcapping", 30.0)?;
            let scalar = c.opt_f64("query_pre_attn_scalar")?.unwrap_or(256.0);
            block.attn_scale = Some(1.0 / c.positive("query_pre_attn_scalar", scalar)?.sqrt());
            block.sliding_window = window_or(&c, Some(4096))?;
            block.sliding_layers =
                sliding_layers(&c, architecture, layer_count(&c, "num_hidden_layers")?)?;
            if architecture == Architecture::Gemma3 {
                block.qk_norm = QkNorm::PerHead;
            }
        }
        Architecture::Olmo2 => {
            block.norm_placement = NormPlacement::Post;
            block.qk_norm = QkNorm::AllHeads;
        }
        Architecture::GptNeox => {
            block.parallel_residual = c.opt_bool("use_parallel_residual")?.unwrap_or(true);
        }
        _ => {}
    }
    if gemma {
        // transformers multiplies by √hidden_size rounded to the activations' dtype (f32 here).
        block.embedding_multiplier = Some(f64::from((d_model as f32).sqrt()));
    }
    for key in ["attention_dropout", "hidden_dropout"] {
        // Dropout only acts in training; listed so that a reader sees it was considered.
        let _ = c.opt_f64(key);
    }
    let rope = rope(&c, architecture, max_positions)?;
    if model_type == "phi3" && matches!(rope.scaling, Some(RopeScaling::Yarn { .. })) {
        let key = if c.get("rope_scaling").is_some() {
            "rope_scaling.type"
        } else {
            "rope_parameters.rope_type"
        };
        return Err(FormatError::UnsupportedSetting {
            path: c.path.to_path_buf(),
            key: key.into(),
            value: "\"yarn\"".into(),
            detail: "Phi-3 reads yarn as longrope with yarn's attention factor; not implemented"
                .into(),
        });
    }
    if let Some(f) = rope.partial_rotary_factor {
        let dim = (head_dim as f64 * f) as usize;
        if dim == 0 || !dim.is_multiple_of(2) || dim > head_dim {
            return Err(c.bad(
                rope.partial_key
                    .as_deref()
                    .unwrap_or("partial_rotary_factor"),
                format!("{f} of head_dim {head_dim} is not an even number of dimensions"),
            ));
        }
        if dim < head_dim {
            block.rotary_dim = Some(dim);
        }
    }
    block.local_rope_theta = rope.local_theta;
    if let Some(RopeScaling::LongRope {
        short_factors,
        long_factors,
        ..
    }) = &rope.scaling
    {
        let pairs = block.rotary_dim.unwrap_or(head_dim) / 2;
        let section = if c.get("rope_parameters").is_some() {
            "rope_parameters"
        } else {
            "rope_scaling"
        };
        for (key, list) in [
            ("short_factor", short_factors),
            ("long_factor", long_factors),
        ] {
            if list.len() != pairs {
                return Err(c.bad(
                    &format!("{section}.{key}"),
                    format!("{} factors for {pairs} rotated pairs", list.len()),
                ));
            }
        }
    }
    let (eps_key, eps_default) = match model_type {
        "gpt_neox" => ("layer_norm_eps", 1e-5),
        "phi3" | "olmo2" => ("rms_norm_eps", 1e-5),
        _ => ("rms_norm_eps", 1e-6),
    };
    Ok(ModelConfig {
        architecture,
        n_layers: layer_count(&c, "num_hidden_layers")?,
        d_model,
        n_heads,
        n_kv_heads,
        head_dim,
        d_ff: c.usize("intermediate_size")?,
        vocab_size: c.usize("vocab_size")?,
        max_positions,
        norm_eps: c.opt_f64(eps_key)?.unwrap_or(eps_default),
        rope_theta: rope.theta,
        rope_layout: RopeLayout::HalfSplit,
        rope_scaling: rope.scaling,
        block,
        tied_embeddings: c.opt_bool("tie_word_embeddings")?.unwrap_or(gemma),
        bos_token_id: c.ids("bos_token_id")?.first().copied(),
        eos_token_ids: c.ids("eos_token_id")?,
    })
}

fn gpt2(c: &Cfg) -> Result<ModelConfig> {
    let d_model = c.usize("n_embd")?;
    let n_heads = c.usize("n_head")?;
    if n_heads == 0 || !d_model.is_multiple_of(n_heads) {
        return Err(c.bad(
            "n_head",
            format!("{n_heads} does not divide n_embd {d_model}"),
        ));
    }
    let mlp = match c.opt_str("activation_function")? {
        Some("gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_python_tanh") | None => {
            MlpActivation::GeluTanh
        }
        Some("gelu" | "gelu_python") => MlpActivation::Gelu,
        Some(other) => {
            return Err(c.unsupported(
                "activation_function",
                &Value::String(other.into()),
                "supported: gelu_new, gelu_pytorch_tanh, gelu_fast, gelu_python_tanh, gelu",
            ));
        }
    };
    c.refuse_true(
        "scale_attn_by_inverse_layer_idx",
        "attention scaled by layer index is not implemented",
    )?;
    // `reorder_and_upcast_attn` only computes the scores in f32, which monoscope always does.
    if c.opt_bool("scale_attn_weights")? == Some(false) {
        return Err(c.unsupported(
            "scale_attn_weights",
            &Value::Bool(false),
            "unscaled attention is not implemented",
        ));
    }
    Ok(ModelConfig {
        architecture: Architecture::Gpt2,
        n_layers: layer_count(c, "n_layer")?,
        d_model,
        n_heads,
        n_kv_heads: n_heads,
        head_dim: d_model / n_heads,
        d_ff: match c.opt_usize("n_inner")? {
            Some(ff) => ff,
            None => d_model
                .checked_mul(4)
                .ok_or_else(|| c.bad("n_embd", format!("4 × {d_model} overflows")))?,
        },
        vocab_size: c.usize("vocab_size")?,
        max_positions: c.usize("n_positions")?,
        norm_eps: c.opt_f64("layer_norm_epsilon")?.unwrap_or(1e-5),
        rope_theta: 10_000.0,
        rope_layout: RopeLayout::HalfSplit,
        rope_scaling: None,
        block: BlockConfig {
            mlp,
            ..BlockConfig::default()
        },
        tied_embeddings: true,
        bos_token_id: c.ids("bos_token_id")?.first().copied(),
        eos_token_ids: c.ids("eos_token_id")?,
    })
}

/// Which layers attend through the window: `layer_types` when the config lists them, else the
/// family's pattern (Gemma 2: even layers; Gemma 3: all but every `sliding_window_pattern`-th;
/// Qwen2/3: those from `max_window_layers` on).
fn sliding_layers(c: &Cfg, architecture: Architecture, n_layers: usize) -> Result<Vec<bool>> {
    if let Some(types) = c.get("layer_types") {
        let list = types
            .as_array()
            .ok_or_else(|| c.bad("layer_types", format!("expected a list, found {types}")))?;
        if list.len() != n_layers {
            return Err(c.bad(
                "layer_types",
                format!("{} entries for {n_layers} layers", list.len()),
            ));
        }
        return list
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(c.unsupported(
                    "layer_types",
                    t,
                    "supported: sliding_attention, full_attention",
                )),
            })
            .collect();
    }
    Ok(match architecture {
        Architecture::Gemma2 => (0..n_layers).map(|l| l % 2 == 0).collect(),
        Architecture::Llama | Architecture::Qwen3 => {
            let first = c.usize("max_window_layers")?;
            (0..n_layers).map(|l| l >= first).collect()
        }
        _ => {
            let pattern = c.opt_usize("sliding_window_pattern")?.unwrap_or(6).max(1);
            (0..n_layers).map(|l| (l + 1) % pattern != 0).collect()
        }
    })
}

/// `sliding_window` as transformers reads it: absent gives the family's `default`, null none.
fn window_or(c: &Cfg, default: Option<usize>) -> Result<Option<usize>> {
    if c.has("sliding_window") {
        c.opt_usize("sliding_window")
    } else {
        Ok(default)
    }
}

/// What the RoPE keys of a config say.
struct Rope {
    theta: f64,
    scaling: Option<RopeScaling>,
    partial_rotary_factor: Option<f64>,
    /// The key `partial_rotary_factor` came from, for errors.
    partial_key: Option<String>,
    /// Gemma 3's sliding layers' base.
    local_theta: Option<f64>,
}

const ROPE_TYPES: &str = "default, linear, dynamic, llama3, yarn, longrope";

/// The RoPE base, scaling and partial-rotary factor: top-level keys (`rope_theta`,
/// `rope_scaling`, `partial_rotary_factor`, NeoX's `rotary_emb_base` and `rotary_pct`,
/// Gemma 3's `rope_local_base_freq`) and transformers 5's `rope_parameters` (flat, or per
/// layer type for Gemma 3). A scaling type monoscope does not implement is refused by name.
fn rope(c: &Cfg, architecture: Architecture, max_positions: usize) -> Result<Rope> {
    // GPT-NeoX reads `rotary_emb_base`, the others `rope_theta` (Gemma 3's default: 1e6).
    let theta_keys: &[&str] = if architecture == Architecture::GptNeox {
        &["rotary_emb_base"]
    } else {
        &["rope_theta"]
    };
    let mut theta = None;
    for key in theta_keys {
        theta = theta.or(c.opt_f64(key)?);
    }
    let default_theta = if architecture == Architecture::Gemma3 {
        1_000_000.0
    } else {
        10_000.0
    };
    let mut out = Rope {
        theta: theta.unwrap_or(default_theta),
        scaling: None,
        partial_rotary_factor: None,
        partial_key: None,
        local_theta: c.opt_f64("rope_local_base_freq")?,
    };
    // GPT-NeoX reads `rotary_pct` (default 0.25), the others `partial_rotary_factor`.
    let partial_key = if architecture == Architecture::GptNeox {
        "rotary_pct"
    } else {
        "partial_rotary_factor"
    };
    out.partial_rotary_factor = c.opt_f64(partial_key)?;
    if architecture == Architecture::GptNeox && out.partial_rotary_factor.is_none() {
        out.partial_rotary_factor = Some(0.25);
    }
    out.partial_key = Some(c.name(partial_key));
    let mut section = None;
    // transformers takes `rope_scaling` when both are there.
    for key in ["rope_parameters", "rope_scaling"] {
        if let Some(v) = c.get(key) {
            if !v.is_object() {
                return Err(c.bad(key, format!("expected an object, found {v}")));
            }
            section = Some(c.nested(key, v));
        }
    }
    if let Some(mut params) = section {
        if let Some(local) = params.get("sliding_attention") {
            let local = params.nested("sliding_attention", local);
            let (theta, scaling) = rope_section(&local, max_positions, None, &mut out)?;
            if scaling.is_some() {
                return Err(local.unsupported(
                    "rope_type",
                    local.get("rope_type").unwrap_or(&Value::Null),
                    "scaling on sliding layers is not implemented",
                ));
            }
            out.local_theta = theta.or(out.local_theta);
        }
        if let Some(global) = params.get("full_attention") {
            params = params.nested("full_attention", global);
        }
        let original = c.opt_usize("original_max_position_embeddings")?;
        let (theta, scaling) = rope_section(&params, max_positions, original, &mut out)?;
        out.theta = theta.unwrap_or(out.theta);
        out.scaling = scaling;
    }
    if architecture != Architecture::GptNeox
        && let Some(f) = out.partial_rotary_factor
        && f != 1.0
    {
        return Err(FormatError::UnsupportedSetting {
            path: c.path.to_path_buf(),
            key: out.partial_key.clone().unwrap_or_default(),
            value: f.to_string(),
            detail: "partial rotary embeddings are implemented for gpt_neox only".into(),
        });
    }
    if architecture == Architecture::Gemma3 && out.local_theta.is_none() {
        out.local_theta = Some(10_000.0);
    }
    if architecture != Architecture::Gemma3 {
        out.local_theta = None;
    }
    Ok(out)
}

/// One `rope_scaling` / `rope_parameters` object: its `rope_theta` (when it has one) and its
/// scaling. `top_original`: the config's own `original_max_position_embeddings` (Phi-3 keeps
/// it beside, not inside, `rope_scaling`).
fn rope_section(
    p: &Cfg,
    max_positions: usize,
    top_original: Option<usize>,
    out: &mut Rope,
) -> Result<(Option<f64>, Option<RopeScaling>)> {
    let theta = p.opt_f64("rope_theta")?;
    if let Some(f) = p.opt_f64("partial_rotary_factor")? {
        out.partial_rotary_factor = Some(f);
        out.partial_key = Some(p.name("partial_rotary_factor"));
    }
    let type_key = if p.get("rope_type").is_some() {
        "rope_type"
    } else {
        "type"
    };
    let kind = p.opt_str(type_key)?.unwrap_or("default");
    let factor = || -> Result<f64> { p.positive("factor", p.f64("factor")?) };
    let scaling = match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear { factor: factor()? }),
        "dynamic" => Some(RopeScaling::Dynamic {
            factor: factor()?,
            original_max_positions: max_positions,
        }),
        "llama3" => {
            let low = p.positive("low_freq_factor", p.f64("low_freq_factor")?)?;
            let high = p.positive("high_freq_factor", p.f64("high_freq_factor")?)?;
            if high <= low {
                return Err(p.bad(
                    "high_freq_factor",
                    format!("{high} must exceed low_freq_factor {low}"),
                ));
            }
            Some(RopeScaling::Llama3 {
                factor: factor()?,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_positions: p.usize("original_max_position_embeddings")?,
            })
        }
        "yarn" => {
            let original = p
                .opt_usize("original_max_position_embeddings")?
                .unwrap_or(max_positions);
            let factor = match p.opt_f64("factor")? {
                Some(f) => p.positive("factor", f)?,
                None => max_positions as f64 / original as f64,
            };
            let mscale = |s: f64| {
                if factor <= 1.0 {
                    1.0
                } else {
                    0.1 * s * factor.ln() + 1.0
                }
            };
            let attention_factor = match (
                p.opt_f64("attention_factor")?,
                p.opt_f64("mscale")?,
                p.opt_f64("mscale_all_dim")?,
            ) {
                (Some(a), _, _) => a,
                (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => mscale(m) / mscale(all),
                _ => mscale(1.0),
            };
            Some(RopeScaling::Yarn {
                factor,
                original_max_positions: original,
                beta_fast: p
                    .opt_f64("beta_fast")?
                    .filter(|&b| b != 0.0)
                    .unwrap_or(32.0),
                beta_slow: p.opt_f64("beta_slow")?.filter(|&b| b != 0.0).unwrap_or(1.0),
                attention_factor,
                truncate: p.opt_bool("truncate")?.unwrap_or(true),
            })
        }
        // "su": the name of the first Phi-3 releases.
        "longrope" | "su" => {
            // transformers lets the config's own value override the section's.
            let original = match (
                top_original,
                p.opt_usize("original_max_position_embeddings")?,
            ) {
                (Some(o), _) | (None, Some(o)) => o,
                (None, None) => return Err(p.missing("original_max_position_embeddings")),
            };
            let factor = match p.opt_f64("factor")? {
                Some(f) => p.positive("factor", f)?,
                None => max_positions as f64 / original as f64,
            };
            let attention_factor = match p.opt_f64("attention_factor")? {
                Some(a) => a,
                None if factor <= 1.0 => 1.0,
                None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
            };
            Some(RopeScaling::LongRope {
                short_factors: positive_list(p, "short_factor")?,
                long_factors: positive_list(p, "long_factor")?,
                original_max_positions: original,
                attention_factor,
            })
        }
        other => {
            return Err(p.unsupported(
                type_key,
                &Value::String(other.into()),
                format!("supported: {ROPE_TYPES}"),
            ));
        }
    };
    Ok((theta, scaling))
}

/// A required list of positive numbers under `key`.
fn positive_list(p: &Cfg, key: &str) -> Result<Vec<f64>> {
    let v = p.get(key).ok_or_else(|| p.missing(key))?;
    let list = v
        .as_array()
        .ok_or_else(|| p.bad(key, format!("expected a list of numbers, found {v}")))?;
    list.iter()
        .map(|x| match x.as_f64() {
            Some(f) if f > 0.0 && f.is_finite() => Ok(f),
            _ => Err(p.bad(key, format!("{x} is not a positive number"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A tiny config of `model_type` with `extra` keys on top.
    fn parse(model_type: &str, extra: Value) -> ModelConfig {
        let mut v = json!({
            "model_type": model_type, "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 96,
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        parse_config(Path::new("config.json"), &v).unwrap()
    }

    #[test]
    fn absent_keys_take_the_defaults_transformers_takes() {
        let g2 = parse("gemma2", json!({}));
        assert_eq!(g2.block.attn_logit_softcap, Some(50.0));
        assert_eq!(g2.block.final_logit_softcap, Some(30.0));
        assert_eq!(g2.block.attn_scale, Some(1.0 / 16.0));
        assert_eq!(g2.block.sliding_window, Some(4096));
        let g2 = parse(
            "gemma2",
            json!({"attn_logit_softcapping": null, "sliding_window": null}),
        );
        assert_eq!(g2.block.attn_logit_softcap, None);
        assert_eq!(g2.block.sliding_window, None);
        assert_eq!(parse("gemma3_text", json!({})).rope_theta, 1e6);
        assert_eq!(parse("mistral", json!({})).block.sliding_window, Some(4096));
        assert_eq!(parse("mistral", json!({})).max_positions, 131_072);
        // Llama's modeling code never reads it.
        let llama = parse("llama", json!({"sliding_window": 8}));
        assert_eq!(llama.block.sliding_window, None);
        assert_eq!(parse("phi3", json!({})).norm_eps, 1e-5);
        assert_eq!(parse("olmo2", json!({})).norm_eps, 1e-5);
        assert_eq!(parse("llama", json!({})).norm_eps, 1e-6);
    }

    #[test]
    fn gpt_neox_reads_its_own_rotary_keys() {
        // head_dim 16: a quarter rotates by default; `rope_theta` is not GPT-NeoX's key.
        let neox = parse(
            "gpt_neox",
            json!({"rope_theta": 5.0, "rotary_emb_base": 777.0}),
        );
        assert_eq!(neox.block.rotary_dim, Some(4));
        assert_eq!(neox.rope_theta, 777.0);
        let neox = parse("gpt_neox", json!({"rotary_pct": 0.5}));
        assert_eq!(neox.block.rotary_dim, Some(8));
        assert_eq!(neox.rope_theta, 10_000.0);
    }

    #[test]
    fn activation_aliases_of_the_same_function_are_accepted() {
        assert_eq!(
            parse("llama", json!({"hidden_act": "swish"})).block.mlp,
            MlpActivation::SwiGlu
        );
        // Gemma 1's config turns "gelu" into the tanh GELU; Gemma 2 reads `hidden_activation`.
        assert_eq!(
            parse("gemma", json!({"hidden_act": "gelu"})).block.mlp,
            MlpActivation::GeGluTanh
        );
        assert_eq!(
            parse("gemma2", json!({"hidden_act": "silu"})).block.mlp,
            MlpActivation::GeGluTanh
        );
    }

    #[test]
    fn rope_scaling_wins_over_rope_parameters() {
        let c = parse(
            "llama",
            json!({"rope_parameters": {"rope_type": "linear", "factor": 2.0},
                   "rope_scaling": {"rope_type": "linear", "factor": 8.0}}),
        );
        assert_eq!(c.rope_scaling, Some(RopeScaling::Linear { factor: 8.0 }));
    }
}
