//! Hugging Face model directory → [`LoadedModel`]: `config.json`, `model.safetensors` or
//! shards listed in `model.safetensors.index.json` (f32/f16/bf16), `tokenizer.json`, and the
//! chat template from `tokenizer_config.json` or `chat_template.jinja`.
//!
//! Llama-family checkpoints use `rotate_half` RoPE ([`RopeLayout::HalfSplit`]); GPT-2's Conv1D
//! weights are stored `[in, out]` and are transposed to `[out, in]` here.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::error::{FormatError, Result};
use crate::hf_config::parse_config;
use crate::loader::{TensorSink, check_sizes, sha256_files, transpose};
use crate::model::{
    Architecture, HostData, HostTensor, LoadedModel, ModelConfig, NormPlacement, QkNorm,
};
use crate::tokenizer::Tokenizer;

/// Load a Hugging Face model directory.
pub fn load_hf_dir(dir: &Path) -> Result<LoadedModel> {
    let cfg_path = dir.join("config.json");
    if !cfg_path.is_file() {
        return Err(FormatError::NotAModel {
            path: dir.to_path_buf(),
            detail: "directory has no config.json".into(),
        });
    }
    let cfg = read_json(&cfg_path)?;
    let mut config = parse_config(&cfg_path, &cfg)?;
    check_sizes(&cfg_path, &config)?;
    let shards = shard_paths(dir)?;
    let maps = shards
        .iter()
        .map(|p| {
            let f = File::open(p).map_err(|e| FormatError::io(p, e))?;
            // SAFETY: read-only map of a file we do not modify.
            unsafe { Mmap::map(&f) }.map_err(|e| FormatError::io(p, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let st = Shards::new(&shards, &maps)?;
    let mut sink = TensorSink::new(dir);
    match config.architecture {
        Architecture::Gpt2 => load_gpt2(&st, &mut config, &mut sink)?,
        Architecture::GptNeox => load_neox(&st, &mut config, &mut sink)?,
        _ => load_llama(&st, &mut config, &mut sink)?,
    }

    let tok_path = dir.join("tokenizer.json");
    let tok_config = tokenizer_config(dir)?;
    let template = chat_template(dir, tok_config.as_ref())?;
    let mut tokenizer = Tokenizer::from_tokenizer_json(
        &tok_path,
        config.bos_token_id,
        config.eos_token_ids.clone(),
        template.as_deref(),
    )?;
    if let Some(tc) = &tok_config {
        // The template sees the tokenizer's own `bos_token`/`eos_token` (transformers'
        // `special_tokens_map`), which may differ from `config.json`'s ids; null means none.
        let mut tokens = tokenizer.template_tokens().clone();
        if let Some(t) = special_token_text(tc, "bos_token") {
            tokens.bos_token = t;
        }
        if let Some(t) = special_token_text(tc, "eos_token") {
            tokens.eos_token = t;
        }
        tokenizer = tokenizer.with_template_tokens(tokens);
    }
    let mut hashed = vec![cfg_path];
    hashed.extend(shards);
    let name = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(LoadedModel {
        config,
        tensors: sink.tensors,
        tokenizer,
        name,
        sha256: sha256_files(&hashed)?,
    })
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| FormatError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| FormatError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The safetensors files of `dir`, in a stable order.
fn shard_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let v = read_json(&index)?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| FormatError::MissingKey {
                path: index.clone(),
                key: "weight_map".into(),
            })?;
        let mut files: Vec<&str> = map.values().filter_map(Value::as_str).collect();
        files.sort_unstable();
        files.dedup();
        return files
            .into_iter()
            .map(|f| {
                let p = dir.join(f);
                if p.is_file() {
                    Ok(p)
                } else {
                    Err(FormatError::MissingShard {
                        path: index.clone(),
                        shard: f.to_string(),
                    })
                }
            })
            .collect();
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(FormatError::NotAModel {
        path: dir.to_path_buf(),
        detail: "no model.safetensors or model.safetensors.index.json".into(),
    })
}

/// All tensors of all shards, by name.
struct Shards<'a> {
    files: Vec<(PathBuf, SafeTensors<'a>)>,
    by_name: BTreeMap<String, usize>,
}

impl<'a> Shards<'a> {
    fn new(paths: &[PathBuf], maps: &'a [Mmap]) -> Result<Self> {
        let mut files = Vec::new();
        let mut by_name = BTreeMap::new();
        for (i, (p, m)) in paths.iter().zip(maps).enumerate() {
            let st = SafeTensors::deserialize(m).map_err(|e| FormatError::Safetensors {
                path: p.clone(),
                detail: e.to_string(),
            })?;
            for n in st.names() {
                by_name.insert(n.to_string(), i);
            }
            files.push((p.clone(), st));
        }
        Ok(Self { files, by_name })
    }

    /// The stored name for `name`, accepting an optional `model.`/`transformer.` prefix.
    fn resolve(&self, name: &str) -> Option<String> {
        ["", "model.", "transformer."]
            .iter()
            .map(|p| format!("{p}{name}"))
            .find(|n| self.by_name.contains_key(n))
    }

    /// Read `name` (resolved) in its stored float type, checking its stored shape against `expected`.
    fn get(&self, sink: &TensorSink, name: &str, expected: &[usize]) -> Result<Option<HostTensor>> {
        let Some(full) = self.resolve(name) else {
            return Ok(None);
        };
        let (path, st) = &self.files[self.by_name[&full]];
        let view = st.tensor(&full).map_err(|e| FormatError::Safetensors {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        sink.check(&full, expected, view.shape())?;
        let b = view.data();
        let data = match view.dtype() {
            Dtype::F32 => HostData::F32(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Dtype::F16 => HostData::F16(
                b.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            Dtype::BF16 => HostData::Bf16(
                b.chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            other => {
                return Err(FormatError::UnsupportedDtype {
                    path: path.clone(),
                    tensor: full,
                    dtype: format!("{other:?}"),
                });
            }
        };
        Ok(Some(HostTensor {
            shape: view.shape().to_vec(),
            data,
        }))
    }

    fn require(&self, sink: &TensorSink, name: &str, expected: &[usize]) -> Result<HostTensor> {
        self.get(sink, name, expected)?
            .ok_or_else(|| sink.missing(name))
    }

    /// Copy `src` to `dst` in `sink`; absent and not `required` is fine.
    fn take(
        &self,
        sink: &mut TensorSink,
        src: &str,
        dst: String,
        shape: &[usize],
        required: bool,
    ) -> Result<bool> {
        match self.get(sink, src, shape)? {
            Some(t) => {
                sink.tensors.insert(dst, t);
                Ok(true)
            }
            None if required => Err(sink.missing(src)),
            None => Ok(false),
        }
    }

    /// A projection: `{src}.weight` (`[out, in]`, required) to `{dst}.weight` and its
    /// `{src}.bias` (`[out]`) to `{dst}.bias`, required only with `bias_required`.
    fn take_linear(
        &self,
        sink: &mut TensorSink,
        src: &str,
        dst: &str,
        shape: [usize; 2],
        bias_required: bool,
    ) -> Result<()> {
        self.take(
            sink,
            &format!("{src}.weight"),
            format!("{dst}.weight"),
            &shape,
            true,
        )?;
        self.take(
            sink,
            &format!("{src}.bias"),
            format!("{dst}.bias"),
            &[shape[0]],
            bias_required,
        )?;
        Ok(())
    }
}

/// Where a Llama-like family keeps its per-block tensors (after the `layers.{L}.` prefix).
struct LlamaNames {
    attn_norm: Option<&'static str>,
    mlp_norm: Option<&'static str>,
    post_attn_norm: Option<&'static str>,
    post_mlp_norm: Option<&'static str>,
}

impl LlamaNames {
    fn of(c: &ModelConfig) -> Self {
        match c.block.norm_placement {
            NormPlacement::Pre => Self {
                attn_norm: Some("input_layernorm"),
                mlp_norm: Some("post_attention_layernorm"),
                post_attn_norm: None,
                post_mlp_norm: None,
            },
            NormPlacement::PreAndPost => Self {
                attn_norm: Some("input_layernorm"),
                mlp_norm: Some("pre_feedforward_layernorm"),
                post_attn_norm: Some("post_attention_layernorm"),
                post_mlp_norm: Some("post_feedforward_layernorm"),
            },
            NormPlacement::Post => Self {
                attn_norm: None,
                mlp_norm: None,
                post_attn_norm: Some("post_attention_layernorm"),
                post_mlp_norm: Some("post_feedforward_layernorm"),
            },
        }
    }
}

/// Llama and the families built like it (Mistral, Qwen2/3, Phi-3, Gemma 1/2/3, OLMo-2).
fn load_llama(st: &Shards, c: &mut ModelConfig, sink: &mut TensorSink) -> Result<()> {
    let d = c.d_model;
    let (q_rows, kv_rows) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
    // Gemma's norms multiply by (1 + w): stored here as the multiplier itself.
    let gemma = matches!(
        c.architecture,
        Architecture::Gemma | Architecture::Gemma2 | Architecture::Gemma3
    );
    let norm = |sink: &mut TensorSink, src: &str, dst: String, len: usize| -> Result<()> {
        let t = st.require(sink, src, &[len])?;
        let t = if gemma {
            let w = t.to_f32().iter().map(|w| w + 1.0).collect();
            HostTensor::f32(t.shape, w)
        } else {
            t
        };
        sink.tensors.insert(dst, t);
        Ok(())
    };
    st.take(
        sink,
        "embed_tokens.weight",
        "embed_tokens".into(),
        &[c.vocab_size, d],
        true,
    )?;
    let names = LlamaNames::of(c);
    let (q_norm_len, k_norm_len) = match c.block.qk_norm {
        QkNorm::None => (0, 0),
        QkNorm::PerHead => (c.head_dim, c.head_dim),
        QkNorm::AllHeads => (q_rows, kv_rows),
    };
    for l in 0..c.n_layers {
        let src = |s: &str| format!("layers.{l}.{s}");
        let dst = |s: &str| format!("layers.{l}.{s}");
        for (name, canonical) in [
            (names.attn_norm, "attn_norm"),
            (names.mlp_norm, "mlp_norm"),
            (names.post_attn_norm, "post_attn_norm"),
            (names.post_mlp_norm, "post_mlp_norm"),
        ] {
            if let Some(name) = name {
                norm(
                    sink,
                    &src(&format!("{name}.weight")),
                    dst(&format!("{canonical}.weight")),
                    d,
                )?;
            }
        }
        if q_norm_len > 0 {
            norm(
                sink,
                &src("self_attn.q_norm.weight"),
                dst("q_norm.weight"),
                q_norm_len,
            )?;
            norm(
                sink,
                &src("self_attn.k_norm.weight"),
                dst("k_norm.weight"),
                k_norm_len,
            )?;
        }
        let fused_qkv = src("self_attn.qkv_proj.weight");
        if st.resolve(&fused_qkv).is_some() {
            // Phi-3: one [q | k | v] projection.
            let w = st.require(sink, &fused_qkv, &[q_rows + 2 * kv_rows, d])?;
            sink.put_split_qkv(&fused_qkv, l, "weight", [q_rows, kv_rows, kv_rows], w)?;
        } else {
            for (p, rows) in [("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)] {
                st.take_linear(
                    sink,
                    &src(&format!("self_attn.{p}")),
                    &dst(p),
                    [rows, d],
                    false,
                )?;
            }
        }
        // `attention_bias` (Llama) also puts a bias on o_proj; `mlp_bias` on all three MLP
        // projections. Taken whenever the file has them, so none is dropped.
        st.take_linear(
            sink,
            &src("self_attn.o_proj"),
            &dst("o_proj"),
            [d, q_rows],
            false,
        )?;
        let fused_gate_up = src("mlp.gate_up_proj.weight");
        let mlp = if st.resolve(&fused_gate_up).is_some() {
            // Phi-3: one [gate | up] projection.
            let w = st.require(sink, &fused_gate_up, &[2 * c.d_ff, d])?;
            let parts = [("gate_proj", c.d_ff), ("up_proj", c.d_ff)];
            sink.put_split(&fused_gate_up, l, "weight", &parts, w)?;
            &[("down_proj", [d, c.d_ff])][..]
        } else {
            &[
                ("gate_proj", [c.d_ff, d]),
                ("up_proj", [c.d_ff, d]),
                ("down_proj", [d, c.d_ff]),
            ][..]
        };
        for (p, shape) in mlp {
            st.take_linear(sink, &src(&format!("mlp.{p}")), &dst(p), *shape, false)?;
        }
    }
    norm(sink, "norm.weight", "final_norm.weight".into(), d)?;
    if !c.tied_embeddings {
        st.take(
            sink,
            "lm_head.weight",
            "lm_head.weight".into(),
            &[c.vocab_size, d],
            true,
        )?;
    }
    Ok(())
}

/// GPT-NeoX / Pythia: `gpt_neox.*` names, LayerNorms with biases, and a fused
/// `query_key_value` whose rows run head by head (`[heads, 3, head_dim]`).
fn load_neox(st: &Shards, c: &mut ModelConfig, sink: &mut TensorSink) -> Result<()> {
    let (d, ff, h, hd) = (c.d_model, c.d_ff, c.n_heads, c.head_dim);
    if c.n_kv_heads != h {
        return Err(FormatError::BadValue {
            path: sink.path.clone(),
            key: "num_key_value_heads".into(),
            detail: format!(
                "{} differs from {h} heads; GPT-NeoX has no GQA",
                c.n_kv_heads
            ),
        });
    }
    st.take(
        sink,
        "gpt_neox.embed_in.weight",
        "embed_tokens".into(),
        &[c.vocab_size, d],
        true,
    )?;
    for l in 0..c.n_layers {
        let src = |s: &str| format!("gpt_neox.layers.{l}.{s}");
        let dst = |s: &str| format!("layers.{l}.{s}");
        for (s, n) in [
            ("input_layernorm", "attn_norm"),
            ("post_attention_layernorm", "mlp_norm"),
        ] {
            for p in ["weight", "bias"] {
                st.take(
                    sink,
                    &src(&format!("{s}.{p}")),
                    dst(&format!("{n}.{p}")),
                    &[d],
                    true,
                )?;
            }
        }
        let name = src("attention.query_key_value.weight");
        let w = st.require(sink, &name, &[3 * h * hd, d])?;
        let w = per_head_qkv_to_blocks(&w, h, hd, d);
        sink.put_split_qkv(&name, l, "weight", [h * hd; 3], w)?;
        let name = src("attention.query_key_value.bias");
        let b = st.require(sink, &name, &[3 * h * hd])?;
        let b = per_head_qkv_to_blocks(&b, h, hd, 1);
        sink.put_split_qkv(&name, l, "bias", [h * hd; 3], b)?;
        for (s, n, shape) in [
            ("attention.dense", "o_proj", [d, h * hd]),
            ("mlp.dense_h_to_4h", "up_proj", [ff, d]),
            ("mlp.dense_4h_to_h", "down_proj", [d, ff]),
        ] {
            st.take_linear(sink, &src(s), &dst(n), shape, true)?;
        }
    }
    for p in ["weight", "bias"] {
        st.take(
            sink,
            &format!("gpt_neox.final_layer_norm.{p}"),
            format!("final_norm.{p}"),
            &[d],
            true,
        )?;
    }
    if !c.tied_embeddings {
        st.take(
            sink,
            "embed_out.weight",
            "lm_head.weight".into(),
            &[c.vocab_size, d],
            true,
        )?;
    }
    Ok(())
}

/// Rows `[heads, 3 (q, k, v), head_dim]` (each `cols` wide) → `[3, heads, head_dim]`.
fn per_head_qkv_to_blocks(
    t: &HostTensor,
    heads: usize,
    head_dim: usize,
    cols: usize,
) -> HostTensor {
    let chunk = head_dim * cols;
    let ranges = (0..3).flat_map(|part| {
        (0..heads).map(move |head| {
            let start = (head * 3 + part) * chunk;
            start..start + chunk
        })
    });
    HostTensor {
        shape: t.shape.clone(),
        data: t.data.gather(ranges),
    }
}

fn load_gpt2(st: &Shards, c: &mut ModelConfig, sink: &mut TensorSink) -> Result<()> {
    let (d, ff) = (c.d_model, c.d_ff);
    st.take(
        sink,
        "wte.weight",
        "embed_tokens".into(),
        &[c.vocab_size, d],
        true,
    )?;
    st.take(
        sink,
        "wpe.weight",
        "embed_positions".into(),
        &[c.max_positions, d],
        true,
    )?;
    for l in 0..c.n_layers {
        let src = |s: &str| format!("h.{l}.{s}");
        let dst = |s: &str| format!("layers.{l}.{s}");
        for (s, n) in [("ln_1", "attn_norm"), ("ln_2", "mlp_norm")] {
            for p in ["weight", "bias"] {
                st.take(
                    sink,
                    &src(&format!("{s}.{p}")),
                    dst(&format!("{n}.{p}")),
                    &[d],
                    true,
                )?;
            }
        }
        // Conv1D weights are [in, out]; check them as stored, then transpose to [out, in].
        let w = st.require(sink, &src("attn.c_attn.weight"), &[d, 3 * d])?;
        sink.put_split_qkv(
            &src("attn.c_attn.weight"),
            l,
            "weight",
            [d; 3],
            transpose(w),
        )?;
        let b = st.require(sink, &src("attn.c_attn.bias"), &[3 * d])?;
        sink.put_split_qkv(&src("attn.c_attn.bias"), l, "bias", [d; 3], b)?;
        for (s, n, in_out) in [
            ("attn.c_proj", "o_proj", [d, d]),
            ("mlp.c_fc", "up_proj", [d, ff]),
            ("mlp.c_proj", "down_proj", [ff, d]),
        ] {
            let w = st.require(sink, &src(&format!("{s}.weight")), &in_out)?;
            sink.tensors
                .insert(dst(&format!("{n}.weight")), transpose(w));
            st.take(
                sink,
                &src(&format!("{s}.bias")),
                dst(&format!("{n}.bias")),
                &[in_out[1]],
                true,
            )?;
        }
    }
    st.take(sink, "ln_f.weight", "final_norm.weight".into(), &[d], true)?;
    st.take(sink, "ln_f.bias", "final_norm.bias".into(), &[d], true)?;
    // GPT-2 checkpoints tie the head; a separate lm_head, when present, wins.
    let head = st.take(
        sink,
        "lm_head.weight",
        "lm_head.weight".into(),
        &[c.vocab_size, d],
        false,
    )?;
    c.tied_embeddings = !head;
    Ok(())
}

/// `tokenizer_config.json`, if the directory has one.
fn tokenizer_config(dir: &Path) -> Result<Option<Value>> {
    let tc = dir.join("tokenizer_config.json");
    if !tc.is_file() {
        return Ok(None);
    }
    read_json(&tc).map(Some)
}

/// The Jinja chat template: `chat_template.jinja`, else `tokenizer_config.json`'s
/// `chat_template` (a string, or a list of named templates of which `default` is used).
fn chat_template(dir: &Path, tok_config: Option<&Value>) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|e| FormatError::io(&jinja, e));
    }
    Ok(match tok_config.and_then(|v| v.get("chat_template")) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .or(list.first())
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    })
}

/// The text of a special token named in `tokenizer_config.json` (`"<s>"`, or an AddedToken
/// object `{"content": "<s>", ...}`): `None` when the key is absent, empty when it is null.
fn special_token_text(tok_config: &Value, key: &str) -> Option<String> {
    match tok_config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => Some(String::new()),
    }
}
