//! GGUF file → [`LoadedModel`] for the Llama family (`llama`, `mistral`, `qwen2`) and `gpt2`.
//!
//! GGUF names (`blk.N.attn_q.weight`) are mapped to the canonical names of [`crate::model`].
//! llama.cpp's converter permutes Llama Q/K rows so that RoPE rotates adjacent pairs, hence
//! [`RopeLayout::AdjacentPairs`].

use std::path::Path;

use crate::error::{FormatError, Result};
use crate::gguf::GgufFile;
use crate::gguf_tokenizer::tokenizer_from_gguf;
use crate::loader::{TensorSink, sha256_files};
use crate::model::{
    Architecture, BlockConfig, LoadedModel, MlpActivation, ModelConfig, RopeLayout, RopeScaling,
};

const SUPPORTED: &str = "llama, mistral, qwen2, gpt2";

/// Load a GGUF checkpoint: config from `{arch}.*` metadata, tokenizer from `tokenizer.ggml.*`,
/// every tensor dequantised to f32.
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
        "llama" | "mistral" | "qwen2" => Architecture::Llama,
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
    let eps_key = match architecture {
        Architecture::Gpt2 => k("attention.layer_norm_epsilon"),
        _ => k("attention.layer_norm_rms_epsilon"),
    };
    let norm_eps = g
        .opt_f64(&eps_key)?
        .ok_or_else(|| FormatError::MissingKey {
            path: g.path().to_path_buf(),
            key: eps_key.clone(),
        })?;
    let rope_theta = g.opt_f64(&k("rope.freq_base"))?.unwrap_or(10_000.0);
    if architecture == Architecture::Llama
        && let Some(rd) = g.opt_u64(&k("rope.dimension_count"))?
        && rd as usize != head_dim
    {
        return Err(g.bad_value(
            &k("rope.dimension_count"),
            format!("partial rotary embeddings ({rd} of head_dim {head_dim}) are not supported"),
        ));
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
        // llama.cpp rotates adjacent pairs for `llama` (its converter permutes Q/K rows to
        // match) but pairs offset by half the rotated width for `qwen2` (rows as in Hugging
        // Face): `llama_model_rope_type` in its sources.
        rope_layout: match arch {
            "qwen2" => RopeLayout::HalfSplit,
            _ if architecture == Architecture::Gpt2 => RopeLayout::HalfSplit, // no RoPE at all
            _ => RopeLayout::AdjacentPairs,
        },
        rope_scaling,
        block: match architecture {
            Architecture::Gpt2 => BlockConfig {
                mlp: MlpActivation::GeluTanh,
                ..BlockConfig::default()
            },
            _ => BlockConfig::default(),
        },
        tied_embeddings: true,
        bos_token_id: None,
        eos_token_ids: Vec::new(),
    })
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
    let (q_rows, kv_rows) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
    let gpt2 = c.architecture == Architecture::Gpt2;

    take(
        g,
        sink,
        "token_embd.weight",
        "embed_tokens".into(),
        &[c.vocab_size, d],
        true,
    )?;
    if gpt2 {
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
    // LayerNorm models (GPT-2) carry a bias on every norm and projection; RMSNorm models only
    // optionally (Qwen2) on q/k/v.
    for l in 0..c.n_layers {
        let src = |s: &str| format!("blk.{l}.{s}");
        let dst = |s: &str| format!("layers.{l}.{s}");
        for (s, name) in [("attn_norm", "attn_norm"), ("ffn_norm", "mlp_norm")] {
            take(
                g,
                sink,
                &src(&format!("{s}.weight")),
                dst(&format!("{name}.weight")),
                &[d],
                true,
            )?;
            take(
                g,
                sink,
                &src(&format!("{s}.bias")),
                dst(&format!("{name}.bias")),
                &[d],
                gpt2,
            )?;
        }
        let qkv = src("attn_qkv.weight");
        if g.tensor_info(&qkv).is_some() {
            let rows = [q_rows, kv_rows, kv_rows];
            let t = g.tensor_host(&qkv)?;
            sink.put_split_qkv(&qkv, l, "weight", rows, t)?;
            let qkv_b = src("attn_qkv.bias");
            if g.tensor_info(&qkv_b).is_some() {
                let t = g.tensor_host(&qkv_b)?;
                sink.put_split_qkv(&qkv_b, l, "bias", rows, t)?;
            } else if gpt2 {
                return Err(sink.missing(&qkv_b));
            }
        } else {
            let parts = [
                ("attn_q", "q_proj", q_rows),
                ("attn_k", "k_proj", kv_rows),
                ("attn_v", "v_proj", kv_rows),
            ];
            for (s, name, rows) in parts {
                take(
                    g,
                    sink,
                    &src(&format!("{s}.weight")),
                    dst(&format!("{name}.weight")),
                    &[rows, d],
                    true,
                )?;
                take(
                    g,
                    sink,
                    &src(&format!("{s}.bias")),
                    dst(&format!("{name}.bias")),
                    &[rows],
                    gpt2,
                )?;
            }
        }
        take(
            g,
            sink,
            &src("attn_output.weight"),
            dst("o_proj.weight"),
            &[d, q_rows],
            true,
        )?;
        take(
            g,
            sink,
            &src("attn_output.bias"),
            dst("o_proj.bias"),
            &[d],
            gpt2,
        )?;
        if !gpt2 {
            take(
                g,
                sink,
                &src("ffn_gate.weight"),
                dst("gate_proj.weight"),
                &[c.d_ff, d],
                true,
            )?;
        }
        take(
            g,
            sink,
            &src("ffn_up.weight"),
            dst("up_proj.weight"),
            &[c.d_ff, d],
            true,
        )?;
        take(
            g,
            sink,
            &src("ffn_up.bias"),
            dst("up_proj.bias"),
            &[c.d_ff],
            gpt2,
        )?;
        take(
            g,
            sink,
            &src("ffn_down.weight"),
            dst("down_proj.weight"),
            &[d, c.d_ff],
            true,
        )?;
        take(
            g,
            sink,
            &src("ffn_down.bias"),
            dst("down_proj.bias"),
            &[d],
            gpt2,
        )?;
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
        gpt2,
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
