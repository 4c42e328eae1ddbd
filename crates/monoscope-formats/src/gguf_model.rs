//! GGUF file → [`LoadedModel`] for the architectures llama.cpp defines that monoscope runs:
//! `llama`, `mistral`, `qwen2`, `qwen3`, `phi3`, `gemma`, `gemma2`, `gemma3`, `olmo2`,
//! `gptneox` and `gpt2`.
//!
//! GGUF names (`blk.N.attn_q.weight`) are mapped to the canonical names of [`crate::model`],
//! and what the blocks compute to a [`BlockConfig`] as llama.cpp computes it. Its converter
//! permutes `llama` Q/K rows so that RoPE rotates adjacent pairs, hence
//! [`RopeLayout::AdjacentPairs`]; the other rotary families keep Hugging Face's rows and rotate
//! half-split pairs. It also stores Gemma's norms as the multiplier `1 + w`, which is what the
//! canonical norms hold.

use std::path::Path;

use crate::error::{FormatError, Result};
use crate::gguf::{GgufFile, MetadataValue};
use crate::gguf_tokenizer::tokenizer_from_gguf;
use crate::loader::{TensorSink, check_sizes, sha256_files};
use crate::model::{
    Architecture, BlockConfig, LoadedModel, MlpActivation, ModelConfig, NormPlacement, QkNorm,
    RopeLayout, RopeScaling,
};

const SUPPORTED: &str =
    "llama, mistral, qwen2, qwen3, phi3, gemma, gemma2, gemma3, olmo2, gptneox, gpt2";

/// Load a GGUF checkpoint: config from `{arch}.*` metadata, tokenizer from `tokenizer.ggml.*`,
/// every tensor kept in its stored type (quantised ones as their blocks).
pub fn load_gguf(path: &Path) -> Result<LoadedModel> {
    let g = GgufFile::open(path)?;
    let arch_key = "general.architecture";
    let arch_name = g
        .opt_str(arch_key)?
        .ok_or_else(|| FormatError::MissingKey {
            path: path.to_path_buf(),
            key: arch_key.into(),
        })?
        .to_string();
    let architecture = match arch_name.as_str() {
        "llama" | "mistral" | "qwen2" | "phi3" => Architecture::Llama,
        "qwen3" => Architecture::Qwen3,
        "gemma" => Architecture::Gemma,
        "gemma2" => Architecture::Gemma2,
        "gemma3" => Architecture::Gemma3,
        "olmo2" => Architecture::Olmo2,
        "gptneox" => Architecture::GptNeox,
        "gpt2" => Architecture::Gpt2,
        _ => {
            return Err(FormatError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                arch: arch_name,
                supported: SUPPORTED,
            });
        }
    };
    let config = read_config(&g, &arch_name, architecture)?;
    check_sizes(path, &config)?;
    let tokenizer = tokenizer_from_gguf(&g)?;
    let mut config = config;
    config.bos_token_id = tokenizer.bos_id();
    config.eos_token_ids = tokenizer.eos_ids().to_vec();

    let mut sink = TensorSink::new(path);
    load_tensors(&g, &mut config, &mut sink)?;

    let name = model_name(path, g.opt_str("general.name")?);
    Ok(LoadedModel {
        config,
        tensors: sink.tensors,
        tokenizer,
        name,
        sha256: sha256_files(&[path.to_path_buf()])?,
    })
}

/// The file name without its quantisation suffix (`SmolLM2-135M-Instruct.Q4_1.gguf` →
/// `SmolLM2-135M-Instruct`): users chose and recognise it, while `general.name` is often a
/// training-run label. `general.name` only when the file name is empty.
fn model_name(path: &Path, general_name: Option<&str>) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = match stem.rsplit_once(['.', '-']) {
        Some((base, q)) if !base.is_empty() && is_quant_label(q) => base.to_string(),
        _ => stem,
    };
    match (stem.is_empty(), general_name) {
        (true, Some(n)) => n.trim().to_string(),
        _ => stem,
    }
}

/// `Q4_1`, `q8_0`, `Q4_K_M`, `F16`, `BF16`, `IQ2_XS`...
fn is_quant_label(s: &str) -> bool {
    let u = s.to_ascii_uppercase();
    let body = u
        .strip_prefix("IQ")
        .or_else(|| u.strip_prefix("BF"))
        .or_else(|| u.strip_prefix('Q'))
        .or_else(|| u.strip_prefix('F'));
    body.is_some_and(|b| b.starts_with(|c: char| c.is_ascii_digit()))
}

fn usize_key(g: &GgufFile, key: &str) -> Result<usize> {
    let v = g.req_u64(key)?;
    usize::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| g.bad_value(key, format!("{v} is not a positive size")))
}

fn read_config(g: &GgufFile, arch: &str, architecture: Architecture) -> Result<ModelConfig> {
    let k = |s: &str| format!("{arch}.{s}");
    let n_layers = usize_key(g, &k("block_count"))?;
    // Every block has weights of its own, so the file cannot have fewer tensors than blocks;
    // checked before anything is sized by the block count.
    if n_layers > g.tensors().len() {
        return Err(g.bad_value(
            &k("block_count"),
            format!(
                "{n_layers} blocks, but the file holds only {} tensors",
                g.tensors().len()
            ),
        ));
    }
    let d_model = usize_key(g, &k("embedding_length"))?;
    let d_ff = usize_key(g, &k("feed_forward_length"))?;
    let n_heads = usize_key(g, &k("attention.head_count"))?;
    let n_kv_heads = match g.get(&k("attention.head_count_kv")) {
        Some(_) => usize_key(g, &k("attention.head_count_kv"))?,
        None => n_heads,
    };
    if n_heads % n_kv_heads != 0 {
        return Err(g.bad_value(
            &k("attention.head_count_kv"),
            format!("{n_kv_heads} does not divide the head count {n_heads}"),
        ));
    }
    let head_dim = match g.get(&k("attention.key_length")) {
        Some(_) => usize_key(g, &k("attention.key_length"))?,
        None if d_model % n_heads == 0 => d_model / n_heads,
        None => {
            return Err(g.bad_value(
                &k("attention.head_count"),
                format!("{n_heads} heads do not divide embedding_length {d_model}"),
            ));
        }
    };
    let eps_key = if architecture.layer_norm() {
        k("attention.layer_norm_epsilon")
    } else {
        k("attention.layer_norm_rms_epsilon")
    };
    let norm_eps = g
        .opt_f64(&eps_key)?
        .ok_or_else(|| FormatError::MissingKey {
            path: g.path().to_path_buf(),
            key: eps_key.clone(),
        })?;
    let rope_theta = g.opt_f64(&k("rope.freq_base"))?.unwrap_or(10_000.0);
    let mut block = block_config(
        g,
        arch,
        architecture,
        [n_layers, d_model, n_heads, head_dim],
    )?;
    if let Some(rd) = g.opt_u64(&k("rope.dimension_count"))?
        && architecture.rotary()
        && rd as usize != head_dim
    {
        let rd = rd as usize;
        if architecture != Architecture::GptNeox
            || rd == 0
            || rd > head_dim
            || !rd.is_multiple_of(2)
        {
            return Err(g.bad_value(
                &k("rope.dimension_count"),
                format!(
                    "partial rotary embeddings ({rd} of head_dim {head_dim}) are not supported"
                ),
            ));
        }
        block.rotary_dim = Some(rd);
    }
    let max_positions = usize_key(g, &k("context_length"))?;
    let rope_scaling = match architecture {
        Architecture::Gpt2 => None,
        _ => rope_scaling(g, arch, head_dim)?,
    };
    Ok(ModelConfig {
        architecture,
        n_layers,
        d_model,
        n_heads,
        n_kv_heads,
        head_dim,
        d_ff,
        vocab_size: 0, // from token_embd, below
        max_positions,
        norm_eps,
        rope_theta,
        // llama.cpp rotates adjacent pairs for `llama` and `mistral` (its converter permutes
        // Q/K rows to match) but pairs offset by half the rotated width for the others (rows
        // as in Hugging Face): `llama_model_rope_type` in its sources.
        rope_layout: match arch {
            "llama" | "mistral" => RopeLayout::AdjacentPairs,
            _ => RopeLayout::HalfSplit,
        },
        rope_scaling,
        block,
        tied_embeddings: true,
        bos_token_id: None,
        eos_token_ids: Vec::new(),
    })
}

/// What a block computes, from the architecture and its `{arch}.*` keys, as llama.cpp's
/// graph for that architecture computes it.
fn block_config(
    g: &GgufFile,
    arch: &str,
    architecture: Architecture,
    [n_layers, d_model, n_heads, head_dim]: [usize; 4],
) -> Result<BlockConfig> {
    let k = |s: &str| format!("{arch}.{s}");
    let mut block = BlockConfig::default();
    let window = || -> Result<Option<usize>> {
        g.opt_u64(&k("attention.sliding_window"))?
            .map(|w| usize::try_from(w).ok().filter(|&w| w > 0))
            .map(|w| {
                w.ok_or_else(|| g.bad_value(&k("attention.sliding_window"), "must be positive"))
            })
            .transpose()
    };
    match architecture {
        Architecture::Gpt2 => block.mlp = MlpActivation::GeluTanh,
        // Pythia's `hidden_act` is the exact (erf) GELU.
        Architecture::GptNeox => {
            block.mlp = MlpActivation::Gelu;
            block.parallel_residual = g.opt_bool(&k("use_parallel_residual"))?.unwrap_or(true);
        }
        // A window the file states is honoured (Mistral); Phi-3's llama.cpp turns off.
        Architecture::Llama if arch != "phi3" => block.sliding_window = window()?,
        Architecture::Qwen3 => block.qk_norm = QkNorm::PerHead,
        Architecture::Olmo2 => {
            block.norm_placement = NormPlacement::Post;
            block.qk_norm = QkNorm::AllHeads;
        }
        Architecture::Gemma | Architecture::Gemma2 | Architecture::Gemma3 => {
            block.mlp = MlpActivation::GeGluTanh;
            block.embedding_multiplier = Some(f64::from((d_model as f32).sqrt()));
            if architecture != Architecture::Gemma {
                block.norm_placement = NormPlacement::PreAndPost;
                block.attn_logit_softcap = g.opt_f64(&k("attn_logit_softcapping"))?;
                block.final_logit_softcap = g.opt_f64(&k("final_logit_softcapping"))?;
                // llama.cpp scales queries by 1/√(d_model / n_heads) for the 27B models
                // (their `query_pre_attn_scalar`), by 1/√head_dim otherwise.
                let largest = n_layers
                    == if architecture == Architecture::Gemma2 {
                        46
                    } else {
                        62
                    };
                let scalar = if largest { d_model / n_heads } else { head_dim };
                block.attn_scale = Some(1.0 / (scalar as f64).sqrt());
                // llama.cpp's defaults: Gemma 2 always slides (4096), every even layer;
                // Gemma 3 where a window is stated, all but every sixth layer.
                block.sliding_window = match (window()?, architecture) {
                    (None, Architecture::Gemma2) => Some(4096),
                    (w, _) => w,
                };
                let pattern = if architecture == Architecture::Gemma2 {
                    2
                } else {
                    6
                };
                block.sliding_layers =
                    sliding_layers(g, &k("attention.sliding_window_pattern"), n_layers, pattern)?;
            }
            if architecture == Architecture::Gemma3 {
                block.qk_norm = QkNorm::PerHead;
                block.local_rope_theta =
                    Some(g.opt_f64(&k("rope.freq_base_swa"))?.unwrap_or(10_000.0));
            }
        }
        _ => {}
    }
    Ok(block)
}

/// Per layer, whether it attends through the window: `key` as a period `n` (every `n`-th
/// layer global) or one boolean per layer (true: windowed), else the family's period.
fn sliding_layers(g: &GgufFile, key: &str, n_layers: usize, period: usize) -> Result<Vec<bool>> {
    let period = match g.get(key) {
        None => period,
        Some(MetadataValue::Array(values)) => {
            let flags: Option<Vec<bool>> = values.iter().map(MetadataValue::as_bool).collect();
            return match flags {
                Some(f) if f.len() == n_layers => Ok(f),
                _ => Err(g.bad_value(key, format!("expected {n_layers} booleans, one per layer"))),
            };
        }
        Some(_) => match g.opt_u64(key)? {
            Some(p) if p > 0 => p as usize,
            p => return Err(g.bad_value(key, format!("{p:?} must be a positive period"))),
        },
    };
    Ok((0..n_layers).map(|l| (l + 1) % period != 0).collect())
}

/// `{arch}.rope.scaling.type` (`none`, `linear`) and the `rope_freqs.weight` tensor, with which
/// llama.cpp's converter stores Llama 3's frequency scaling. Any other type is refused by name.
fn rope_scaling(g: &GgufFile, arch: &str, head_dim: usize) -> Result<Option<RopeScaling>> {
    let type_key = format!("{arch}.rope.scaling.type");
    let declared = match g.opt_str(&type_key)? {
        None | Some("none") => None,
        Some("linear") => {
            let factor_key = format!("{arch}.rope.scaling.factor");
            let factor = g
                .opt_f64(&factor_key)?
                .ok_or_else(|| FormatError::MissingKey {
                    path: g.path().to_path_buf(),
                    key: factor_key.clone(),
                })?;
            if !(factor > 0.0 && factor.is_finite()) {
                return Err(g.bad_value(&factor_key, format!("{factor} must be positive")));
            }
            Some(RopeScaling::Linear { factor })
        }
        Some(other) => {
            return Err(FormatError::UnsupportedSetting {
                path: g.path().to_path_buf(),
                key: type_key,
                value: format!("{other:?}"),
                detail: "supported: none, linear, and Llama 3 frequency factors".into(),
            });
        }
    };
    for factors in ["rope_factors_long.weight", "rope_factors_short.weight"] {
        if g.tensor_info(factors).is_some() {
            return Err(FormatError::UnsupportedSetting {
                path: g.path().to_path_buf(),
                key: factors.into(),
                value: "present".into(),
                detail: "Phi-3's longrope frequency factors are not implemented".into(),
            });
        }
    }
    let Some(info) = g.tensor_info("rope_freqs.weight") else {
        return Ok(declared);
    };
    if declared.is_some() {
        return Err(FormatError::UnsupportedSetting {
            path: g.path().to_path_buf(),
            key: type_key,
            value: "\"linear\" with rope_freqs.weight".into(),
            detail: "both a scaling type and frequency factors".into(),
        });
    }
    let pairs = head_dim / 2;
    if info.shape() != [pairs] {
        return Err(FormatError::ShapeMismatch {
            path: g.path().to_path_buf(),
            tensor: "rope_freqs.weight".into(),
            expected: vec![pairs],
            actual: info.shape(),
        });
    }
    let divisors = g.tensor_f32("rope_freqs.weight")?.to_f32();
    if let Some(d) = divisors.iter().find(|d| !(**d > 0.0 && d.is_finite())) {
        return Err(g.bad_value(
            "rope_freqs.weight",
            format!("frequency factor {d} is not a positive number"),
        ));
    }
    Ok(Some(RopeScaling::FrequencyDivisors {
        divisors: divisors.into_iter().map(f64::from).collect(),
    }))
}

/// Read `src` into `sink` as `dst` after checking its shape. Absent and not `required`:
/// `Ok(false)`.
fn take(
    g: &GgufFile,
    sink: &mut TensorSink,
    src: &str,
    dst: String,
    shape: &[usize],
    required: bool,
) -> Result<bool> {
    let Some(info) = g.tensor_info(src) else {
        return if required {
            Err(sink.missing(src))
        } else {
            Ok(false)
        };
    };
    // Check before dequantising so a wrong file fails fast.
    sink.check(src, shape, &info.shape())?;
    let t = g.tensor_host(src)?;
    sink.put(src, dst, shape, t)?;
    Ok(true)
}

fn load_tensors(g: &GgufFile, c: &mut ModelConfig, sink: &mut TensorSink) -> Result<()> {
    let d = c.d_model;
    let embd = g
        .tensor_info("token_embd.weight")
        .ok_or_else(|| sink.missing("token_embd.weight"))?;
    c.vocab_size = embd.shape()[0];
    let (q_rows, kv_rows, ff) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.d_ff);
    // LayerNorm models (GPT-2, GPT-NeoX) carry a bias on every norm and projection; RMSNorm
    // models only optionally (Qwen2) on q/k/v.
    let biased = c.architecture.layer_norm();
    let gated = c.block.mlp.gated();
    let (q_norm_len, k_norm_len) = match c.block.qk_norm {
        QkNorm::None => (0, 0),
        QkNorm::PerHead => (c.head_dim, c.head_dim),
        QkNorm::AllHeads => (q_rows, kv_rows),
    };
    let pre = c.block.norm_placement != NormPlacement::Post;
    let post = c.block.norm_placement != NormPlacement::Pre;

    take(
        g,
        sink,
        "token_embd.weight",
        "embed_tokens".into(),
        &[c.vocab_size, d],
        true,
    )?;
    if c.architecture == Architecture::Gpt2 {
        let p = "position_embd.weight";
        take(
            g,
            sink,
            p,
            "embed_positions".into(),
            &[c.max_positions, d],
            true,
        )?;
    }
    for l in 0..c.n_layers {
        let src = |s: &str| format!("blk.{l}.{s}");
        let dst = |s: &str| format!("layers.{l}.{s}");
        // A projection or norm: `{s}.weight` of `shape`, and `{s}.bias` (`[shape[0]]`),
        // required when `biased`.
        let linear = |sink: &mut TensorSink, s: &str, name: &str, shape: &[usize]| {
            let w = src(&format!("{s}.weight"));
            take(g, sink, &w, dst(&format!("{name}.weight")), shape, true)?;
            let b = src(&format!("{s}.bias"));
            take(
                g,
                sink,
                &b,
                dst(&format!("{name}.bias")),
                &shape[..1],
                biased,
            )
        };
        for (s, name, present) in [
            ("attn_norm", "attn_norm", pre),
            ("ffn_norm", "mlp_norm", pre),
            ("post_attention_norm", "post_attn_norm", post),
            ("post_ffw_norm", "post_mlp_norm", post),
        ] {
            if present {
                linear(sink, s, name, &[d])?;
            }
        }
        if q_norm_len > 0 {
            let q = src("attn_q_norm.weight");
            take(g, sink, &q, dst("q_norm.weight"), &[q_norm_len], true)?;
            let k = src("attn_k_norm.weight");
            take(g, sink, &k, dst("k_norm.weight"), &[k_norm_len], true)?;
        }
        let qkv = src("attn_qkv.weight");
        if g.tensor_info(&qkv).is_some() {
            // GPT-2, Phi-3 and GPT-NeoX keep one [q | k | v] projection.
            let rows = [q_rows, kv_rows, kv_rows];
            let t = g.tensor_host(&qkv)?;
            sink.put_split_qkv(&qkv, l, "weight", rows, t)?;
            let qkv_b = src("attn_qkv.bias");
            if g.tensor_info(&qkv_b).is_some() {
                let t = g.tensor_host(&qkv_b)?;
                sink.put_split_qkv(&qkv_b, l, "bias", rows, t)?;
            } else if biased {
                return Err(sink.missing(&qkv_b));
            }
        } else {
            for (s, name, rows) in [
                ("attn_q", "q_proj", q_rows),
                ("attn_k", "k_proj", kv_rows),
                ("attn_v", "v_proj", kv_rows),
            ] {
                linear(sink, s, name, &[rows, d])?;
            }
        }
        linear(sink, "attn_output", "o_proj", &[d, q_rows])?;
        let gate = src("ffn_gate.weight");
        if gated && g.tensor_info(&gate).is_none() {
            // Phi-3: one [gate | up] projection, as in its Hugging Face checkpoint.
            let up = src("ffn_up.weight");
            let info = g.tensor_info(&up).ok_or_else(|| sink.missing(&up))?;
            sink.check(&up, &[2 * ff, d], &info.shape())?;
            let parts = [("gate_proj", ff), ("up_proj", ff)];
            sink.put_split(&up, l, "weight", &parts, g.tensor_host(&up)?)?;
        } else {
            if gated {
                linear(sink, "ffn_gate", "gate_proj", &[ff, d])?;
            }
            linear(sink, "ffn_up", "up_proj", &[ff, d])?;
        }
        linear(sink, "ffn_down", "down_proj", &[d, ff])?;
    }
    take(
        g,
        sink,
        "output_norm.weight",
        "final_norm.weight".into(),
        &[d],
        true,
    )?;
    take(
        g,
        sink,
        "output_norm.bias",
        "final_norm.bias".into(),
        &[d],
        biased,
    )?;
    let has_head = take(
        g,
        sink,
        "output.weight",
        "lm_head.weight".into(),
        &[c.vocab_size, d],
        false,
    )?;
    c.tied_embeddings = !has_head;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_name_drops_quant_suffix() {
        let n = |p: &str, g| model_name(Path::new(p), g);
        assert_eq!(
            n("/m/SmolLM2-135M-Instruct.Q4_1.gguf", Some("x")),
            "SmolLM2-135M-Instruct"
        );
        assert_eq!(n("llama-3-8b-q4_k_m.gguf", None), "llama-3-8b");
        assert_eq!(n("gpt2.F16.gguf", None), "gpt2");
        assert_eq!(n("Qwen2-0.5B.gguf", None), "Qwen2-0.5B");
        assert_eq!(n("SmolLM2-135M.gguf", None), "SmolLM2-135M");
        assert_eq!(n("/", Some("From metadata")), "From metadata");
    }
}
