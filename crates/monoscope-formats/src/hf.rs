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
use crate::loader::{TensorSink, sha256_files, transpose};
use crate::model::{Architecture, HostTensor, LoadedModel, ModelConfig, RopeLayout};
use crate::tokenizer::Tokenizer;

const SUPPORTED: &str = "llama, mistral, qwen2, gpt2";

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
        Architecture::Llama => load_llama(&st, &mut config, &mut sink)?,
        Architecture::Gpt2 => load_gpt2(&st, &mut config, &mut sink)?,
    }

    let tok_path = dir.join("tokenizer.json");
    let template = chat_template(dir)?;
    let tokenizer = Tokenizer::from_tokenizer_json(
        &tok_path,
        config.bos_token_id,
        config.eos_token_ids.clone(),
        template.as_deref(),
    )?;
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

/// Typed access to `config.json` with errors naming the key.
struct Cfg<'a> {
    path: &'a Path,
    v: &'a Value,
}

impl Cfg<'_> {
    fn bad(&self, key: &str, detail: String) -> FormatError {
        FormatError::BadValue {
            path: self.path.to_path_buf(),
            key: key.into(),
            detail,
        }
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(|u| Some(u as usize)).ok_or_else(|| {
                self.bad(key, format!("expected a non-negative integer, found {v}"))
            }),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| FormatError::MissingKey {
            path: self.path.to_path_buf(),
            key: key.into(),
        })
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.bad(key, format!("expected a number, found {v}"))),
        }
    }

    /// An id or list of ids (`eos_token_id` is either).
    fn ids(&self, key: &str) -> Result<Vec<u32>> {
        let one = |v: &Value| {
            v.as_u64()
                .and_then(|u| u32::try_from(u).ok())
                .ok_or_else(|| self.bad(key, format!("expected a token id, found {v}")))
        };
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    }
}

fn parse_config(path: &Path, v: &Value) -> Result<ModelConfig> {
    let c = Cfg { path, v };
    let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
    let bos_token_id = c.ids("bos_token_id")?.first().copied();
    let eos_token_ids = c.ids("eos_token_id")?;
    match model_type {
        "llama" | "mistral" | "qwen2" => {
            let d_model = c.usize("hidden_size")?;
            let n_heads = c.usize("num_attention_heads")?;
            let n_kv_heads = c.opt_usize("num_key_value_heads")?.unwrap_or(n_heads);
            let head_dim = match c.opt_usize("head_dim")? {
                Some(h) => h,
                None if n_heads > 0 && d_model % n_heads == 0 => d_model / n_heads,
                None => {
                    return Err(c.bad(
                        "num_attention_heads",
                        format!("{n_heads} does not divide hidden_size {d_model}"),
                    ));
                }
            };
            if n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
                return Err(c.bad(
                    "num_key_value_heads",
                    format!("{n_kv_heads} does not divide {n_heads} heads"),
                ));
            }
            let norm_eps = c.opt_f64("rms_norm_eps")?.unwrap_or(1e-6);
            Ok(ModelConfig {
                architecture: Architecture::Llama,
                n_layers: c.usize("num_hidden_layers")?,
                d_model,
                n_heads,
                n_kv_heads,
                head_dim,
                d_ff: c.usize("intermediate_size")?,
                vocab_size: c.usize("vocab_size")?,
                max_positions: c.opt_usize("max_position_embeddings")?.unwrap_or(2048),
                norm_eps,
                rope_theta: c.opt_f64("rope_theta")?.unwrap_or(10_000.0),
                rope_layout: RopeLayout::HalfSplit,
                tied_embeddings: v
                    .get("tie_word_embeddings")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                bos_token_id,
                eos_token_ids,
            })
        }
        "gpt2" => {
            let d_model = c.usize("n_embd")?;
            let n_heads = c.usize("n_head")?;
            if n_heads == 0 || d_model % n_heads != 0 {
                return Err(c.bad(
                    "n_head",
                    format!("{n_heads} does not divide n_embd {d_model}"),
                ));
            }
            Ok(ModelConfig {
                architecture: Architecture::Gpt2,
                n_layers: c.usize("n_layer")?,
                d_model,
                n_heads,
                n_kv_heads: n_heads,
                head_dim: d_model / n_heads,
                d_ff: c.opt_usize("n_inner")?.unwrap_or(4 * d_model),
                vocab_size: c.usize("vocab_size")?,
                max_positions: c.usize("n_positions")?,
                norm_eps: c.opt_f64("layer_norm_epsilon")?.unwrap_or(1e-5),
                rope_theta: 10_000.0,
                rope_layout: RopeLayout::HalfSplit,
                tied_embeddings: true,
                bos_token_id,
                eos_token_ids,
            })
        }
        other => Err(FormatError::UnsupportedArchitecture {
            path: path.to_path_buf(),
            arch: other.to_string(),
            supported: SUPPORTED,
        }),
    }
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

    /// Read `name` (resolved) as f32, checking its stored shape against `expected`.
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
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
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
}

fn load_llama(st: &Shards, c: &mut ModelConfig, sink: &mut TensorSink) -> Result<()> {
    let d = c.d_model;
    let (q_rows, kv_rows) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
    st.take(
        sink,
        "embed_tokens.weight",
        "embed_tokens".into(),
        &[c.vocab_size, d],
        true,
    )?;
    for l in 0..c.n_layers {
        let src = |s: &str| format!("layers.{l}.{s}");
        let dst = |s: &str| format!("layers.{l}.{s}");
        st.take(
            sink,
            &src("input_layernorm.weight"),
            dst("attn_norm.weight"),
            &[d],
            true,
        )?;
        st.take(
            sink,
            &src("post_attention_layernorm.weight"),
            dst("mlp_norm.weight"),
            &[d],
            true,
        )?;
        for (p, rows) in [("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)] {
            st.take(
                sink,
                &src(&format!("self_attn.{p}.weight")),
                dst(&format!("{p}.weight")),
                &[rows, d],
                true,
            )?;
            st.take(
                sink,
                &src(&format!("self_attn.{p}.bias")),
                dst(&format!("{p}.bias")),
                &[rows],
                false,
            )?;
        }
        st.take(
            sink,
            &src("self_attn.o_proj.weight"),
            dst("o_proj.weight"),
            &[d, q_rows],
            true,
        )?;
        st.take(
            sink,
            &src("mlp.gate_proj.weight"),
            dst("gate_proj.weight"),
            &[c.d_ff, d],
            true,
        )?;
        st.take(
            sink,
            &src("mlp.up_proj.weight"),
            dst("up_proj.weight"),
            &[c.d_ff, d],
            true,
        )?;
        st.take(
            sink,
            &src("mlp.down_proj.weight"),
            dst("down_proj.weight"),
            &[d, c.d_ff],
            true,
        )?;
    }
    st.take(sink, "norm.weight", "final_norm.weight".into(), &[d], true)?;
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

/// The Jinja chat template: `chat_template.jinja`, else `tokenizer_config.json`'s
/// `chat_template` (a string, or a list of named templates of which `default` is used).
fn chat_template(dir: &Path) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|e| FormatError::io(&jinja, e));
    }
    let tc = dir.join("tokenizer_config.json");
    if !tc.is_file() {
        return Ok(None);
    }
    let v = read_json(&tc)?;
    Ok(match v.get("chat_template") {
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
