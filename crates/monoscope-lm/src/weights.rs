//! Turning a [`LoadedModel`]'s canonical `[out, in]` host tensors into the device tensors the
//! forward pass multiplies with.
//!
//! Done once at load, so that the forward pass is nothing but big 2-D matmuls:
//! - every matrix is transposed to `[in, out]` (activations are `[rows, in]`);
//! - Q, K and V are concatenated into one `[d_model, (n_heads + 2 n_kv) head_dim]` matrix, and
//!   SwiGLU's gate and up into one `[d_model, 2 d_ff]` matrix, so each block does three matmuls
//!   plus the output projection;
//! - Q/K rows of checkpoints in the GGUF (`AdjacentPairs`) RoPE layout are permuted into the
//!   `HalfSplit` layout. Attention scores are dot products over a head's dimensions, which a
//!   common permutation of Q and K leaves unchanged, so the model computes exactly the same
//!   function while the forward pass needs only one RoPE kernel.

use std::collections::BTreeMap;

use std::sync::Arc;

use burn::prelude::*;
use monoscope_formats::{
    Architecture, HostData, HostTensor, LoadedModel, ModelConfig, NormPlacement, QkNorm,
    RopeLayout, RopeScaling,
};

use crate::LmError;
use crate::int8::PackedInt8;
use crate::linear::{Linear, WeightFormat, tensor_bytes, to_half, upload};

/// One norm's parameters (RMSNorm when `bias` is `None` and the model is Llama-family).
#[derive(Debug, Clone)]
pub(crate) struct NormWeights {
    pub weight: Tensor<1>,
    pub bias: Option<Tensor<1>>,
}

/// One transformer block's parameters, laid out for `x[rows, in] @ w[in, out]`.
#[derive(Debug, Clone)]
pub(crate) struct BlockWeights {
    /// Absent where the family normalises only after each sublayer (OLMo-2).
    pub attn_norm: Option<NormWeights>,
    /// Applied to the attention output before it joins the residual (Gemma 2/3, OLMo-2).
    pub post_attn_norm: Option<NormWeights>,
    /// RMSNorm weights on the queries and keys, `[head_dim]` or `[heads * head_dim]`.
    pub q_norm: Option<Tensor<1>>,
    pub k_norm: Option<Tensor<1>>,
    /// `[d_model, (n_heads + 2 n_kv_heads) head_dim]`: Q | K | V.
    pub qkv: Linear,
    /// `[n_heads head_dim, d_model]`.
    pub o: Linear,
    pub mlp_norm: Option<NormWeights>,
    pub post_mlp_norm: Option<NormWeights>,
    /// Gated MLPs: `[d_model, 2 d_ff]` gate | up. Others: `[d_model, d_ff]`.
    pub up: Linear,
    /// `[d_ff, d_model]`.
    pub down: Linear,
}

#[derive(Debug, Clone)]
pub(crate) struct ModelWeights {
    /// `[vocab, d_model]`, in the checkpoint's float type.
    pub embed: Tensor<2>,
    /// `[max_positions, d_model]`, GPT-2 only.
    pub positions: Option<Tensor<2>>,
    pub blocks: Vec<BlockWeights>,
    pub final_norm: NormWeights,
    pub unembed: Unembedding,
    /// Whether `unembed` is the embedding itself.
    pub tied: bool,
}

impl ModelWeights {
    /// Bytes held by every weight, a tied unembedding counted once.
    pub fn bytes(&self) -> usize {
        let norm =
            |n: &NormWeights| tensor_bytes(&n.weight) + n.bias.as_ref().map_or(0, tensor_bytes);
        let norms = |n: &Option<NormWeights>| n.as_ref().map_or(0, norm);
        let vector = |v: &Option<Tensor<1>>| v.as_ref().map_or(0, tensor_bytes);
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                norms(&b.attn_norm)
                    + norms(&b.post_attn_norm)
                    + norms(&b.mlp_norm)
                    + norms(&b.post_mlp_norm)
                    + vector(&b.q_norm)
                    + vector(&b.k_norm)
                    + b.qkv.bytes()
                    + b.o.bytes()
                    + b.up.bytes()
                    + b.down.bytes()
            })
            .sum();
        let unembed = match &self.unembed {
            Unembedding::Int8(p) => p.bytes(),
            Unembedding::Dense(_) if self.tied => 0,
            Unembedding::Dense(m) => tensor_bytes(m),
        };
        tensor_bytes(&self.embed)
            + self.positions.as_ref().map_or(0, tensor_bytes)
            + blocks
            + norm(&self.final_norm)
            + unembed
    }
}

/// The unembedding `[vocab, d_model]`, output-major.
#[derive(Debug, Clone)]
pub(crate) enum Unembedding {
    /// In the checkpoint's float type (the embedding itself when tied), multiplied by
    /// `linear::matmul_output_major`.
    Dense(Box<Tensor<2>>),
    /// Packed for the int8 kernels when the model runs them; no float copy is kept.
    Int8(Arc<PackedInt8>),
}

/// Checks the configuration for the things the forward pass relies on.
pub(crate) fn check_config(c: &ModelConfig) -> Result<(), LmError> {
    let fail = |m: String| Err(LmError::Config(m));
    if c.n_layers == 0 || c.d_model == 0 || c.vocab_size == 0 || c.head_dim == 0 {
        return fail(format!(
            "n_layers {}, d_model {}, vocab_size {}, head_dim {} must all be positive",
            c.n_layers, c.d_model, c.vocab_size, c.head_dim
        ));
    }
    if c.n_heads == 0 || c.n_kv_heads == 0 || !c.n_heads.is_multiple_of(c.n_kv_heads) {
        return fail(format!(
            "n_heads {} must be a positive multiple of n_kv_heads {}",
            c.n_heads, c.n_kv_heads
        ));
    }
    if c.architecture.rotary() && !c.head_dim.is_multiple_of(2) {
        return fail(format!("RoPE needs an even head_dim, got {}", c.head_dim));
    }
    if let Some(r) = c.block.rotary_dim
        && (r == 0 || r > c.head_dim || !r.is_multiple_of(2))
    {
        return fail(format!(
            "rotary_dim {r} must be even and within head_dim {}",
            c.head_dim
        ));
    }
    let pairs = c.block.rotary_dim.unwrap_or(c.head_dim) / 2;
    let factor_lists: Vec<&Vec<f64>> = match &c.rope_scaling {
        Some(RopeScaling::FrequencyDivisors { divisors }) => vec![divisors],
        Some(RopeScaling::LongRope {
            short_factors,
            long_factors,
            ..
        }) => vec![short_factors, long_factors],
        _ => Vec::new(),
    };
    if let Some(list) = factor_lists.iter().find(|l| l.len() != pairs) {
        return fail(format!(
            "RoPE scaling has {} frequency factors for {pairs} rotated pairs",
            list.len()
        ));
    }
    if c.architecture == Architecture::Gpt2 && c.n_kv_heads != c.n_heads {
        return fail(format!(
            "GPT-2 has no grouped-query attention, but n_kv_heads {} != n_heads {}",
            c.n_kv_heads, c.n_heads
        ));
    }
    Ok(())
}

struct Source<'a> {
    tensors: &'a BTreeMap<String, HostTensor>,
    architecture: Architecture,
}

impl<'a> Source<'a> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<&'a HostTensor, LmError> {
        let t = self.opt(name, shape)?;
        t.ok_or_else(|| LmError::MissingTensor {
            name: name.to_string(),
            architecture: format!("{:?}", self.architecture),
        })
    }

    fn opt(&self, name: &str, shape: &[usize]) -> Result<Option<&'a HostTensor>, LmError> {
        let Some(t) = self.tensors.get(name) else {
            return Ok(None);
        };
        if t.shape != shape || t.data.len() != shape.iter().product::<usize>() {
            return Err(LmError::TensorShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                actual: t.shape.clone(),
            });
        }
        Ok(Some(t))
    }
}

/// `format`: how the matrices are held: in the checkpoint's float type, converted to a 16-bit
/// type (the embedding and unembedding too; see [`crate::Precision`]), or packed for the
/// integer kernels (see [`crate::MatmulKind`]).
///
/// Each block's host tensors are dropped from `loaded` as soon as the block is built, so that
/// the host copy shrinks while the device copy grows: loading holds about one copy of the
/// weights (in the checkpoint's own types) at a time, not two.
pub(crate) fn build(
    loaded: &mut LoadedModel,
    device: &Device,
    format: WeightFormat,
) -> Result<ModelWeights, LmError> {
    let int8 = format == WeightFormat::Int8;
    let c = loaded.config.clone();
    let c = &c;
    check_config(c)?;
    let gpt2 = c.architecture == Architecture::Gpt2;
    let d = c.d_model;
    let architecture = c.architecture;

    let vocab = c.vocab_size;
    // Vocabulary-sized matrices are taken out of `loaded`, not copied: each is gigabytes.
    let mut take = |name: &str| -> Result<HostTensor, LmError> {
        let src = Source {
            tensors: &loaded.tensors,
            architecture,
        };
        src.get(name, &[vocab, d])?;
        Ok(loaded.tensors.remove(name).expect("present: checked above"))
    };
    let embed_host = take("embed_tokens")?;
    // With a tied head on the int8 path, the unembedding is packed from the embedding before
    // the embedding goes to the device.
    let tied_int8 = (int8 && c.tied_embeddings)
        .then(|| Arc::new(PackedInt8::from_host_out_in(&embed_host.data, vocab, d)));
    let unembed_host = if c.tied_embeddings {
        None
    } else {
        Some(take("lm_head.weight")?)
    };
    let embed = upload(held(embed_host.data, format), [vocab, d], device);
    let positions = {
        let src = Source {
            tensors: &loaded.tensors,
            architecture,
        };
        if gpt2 {
            let p = src.get("embed_positions", &[c.max_positions, d])?;
            Some(upload(p.to_f32().into(), [c.max_positions, d], device))
        } else {
            None
        }
    };
    loaded.tensors.remove("embed_positions");
    let mut blocks = Vec::with_capacity(c.n_layers);
    for l in 0..c.n_layers {
        blocks.push(build_block(
            &Source {
                tensors: &loaded.tensors,
                architecture,
            },
            c,
            l,
            device,
            format,
        )?);
        let prefix = format!("layers.{l}.");
        loaded.tensors.retain(|name, _| !name.starts_with(&prefix));
    }
    let src = Source {
        tensors: &loaded.tensors,
        architecture,
    };
    let final_norm = norm(&src, "final_norm", d, c.architecture.layer_norm(), device)?;
    let unembed = match (tied_int8, unembed_host) {
        (Some(packed), _) => Unembedding::Int8(packed),
        (None, None) => Unembedding::Dense(Box::new(embed.clone())),
        (None, Some(head)) if int8 => {
            Unembedding::Int8(Arc::new(PackedInt8::from_host_out_in(&head.data, vocab, d)))
        }
        (None, Some(head)) => Unembedding::Dense(Box::new(upload(
            held(head.data, format),
            [vocab, d],
            device,
        ))),
    };
    loaded.tensors.clear();
    Ok(ModelWeights {
        embed,
        positions,
        blocks,
        final_norm,
        unembed,
        tied: c.tied_embeddings,
    })
}

fn build_block(
    src: &Source<'_>,
    c: &ModelConfig,
    l: usize,
    device: &Device,
    format: WeightFormat,
) -> Result<BlockWeights, LmError> {
    let gpt2 = c.architecture == Architecture::Gpt2;
    let layer_norm = c.architecture.layer_norm();
    let d = c.d_model;
    let (q_out, kv_out) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
    let p = |s: &str| format!("layers.{l}.{s}");

    let mut q = src.get(&p("q_proj.weight"), &[q_out, d])?.data.clone();
    let mut k = src.get(&p("k_proj.weight"), &[kv_out, d])?.data.clone();
    let v = &src.get(&p("v_proj.weight"), &[kv_out, d])?.data;
    let permute = !gpt2 && c.rope_layout == RopeLayout::AdjacentPairs;
    if permute {
        q = adjacent_to_half_split(&q, c.head_dim, d);
        k = adjacent_to_half_split(&k, c.head_dim, d);
    }
    let qkv_out = q_out + 2 * kv_out;

    let qb = src.opt(&p("q_proj.bias"), &[q_out])?;
    let kb = src.opt(&p("k_proj.bias"), &[kv_out])?;
    let vb = src.opt(&p("v_proj.bias"), &[kv_out])?;
    let b_qkv = if qb.is_some() || kb.is_some() || vb.is_some() {
        let or_zero = |t: Option<&HostTensor>, n: usize| {
            t.map_or(HostData::F32(vec![0.0; n]), |t| t.data.clone())
        };
        let (mut qb, mut kb) = (or_zero(qb, q_out), or_zero(kb, kv_out));
        if permute {
            qb = adjacent_to_half_split(&qb, c.head_dim, 1);
            kb = adjacent_to_half_split(&kb, c.head_dim, 1);
        }
        Some([qb.into_f32(), kb.into_f32(), or_zero(vb, kv_out).into_f32()].concat())
    } else {
        None
    };
    let qkv = Linear::new(stack(&[&q, &k, v], d)?, [d, qkv_out], b_qkv, format, device);

    let o = src.get(&p("o_proj.weight"), &[d, q_out])?;
    let b_o = bias(src, &p("o_proj.bias"), d)?;
    let o = Linear::new(stack(&[&o.data], q_out)?, [q_out, d], b_o, format, device);

    let ff = c.d_ff;
    let up = src.get(&p("up_proj.weight"), &[ff, d])?;
    let up = if !c.block.mlp.gated() {
        let b = bias(src, &p("up_proj.bias"), ff)?;
        Linear::new(stack(&[&up.data], d)?, [d, ff], b, format, device)
    } else {
        let gate = src.get(&p("gate_proj.weight"), &[ff, d])?;
        let w = stack(&[&gate.data, &up.data], d)?;
        let (b_gate, b_up) = (
            bias(src, &p("gate_proj.bias"), ff)?,
            bias(src, &p("up_proj.bias"), ff)?,
        );
        let b = (b_gate.is_some() || b_up.is_some()).then(|| {
            [
                b_gate.unwrap_or(vec![0.0; ff]),
                b_up.unwrap_or(vec![0.0; ff]),
            ]
            .concat()
        });
        Linear::new(w, [d, 2 * ff], b, format, device)
    };
    let down = src.get(&p("down_proj.weight"), &[d, ff])?;
    let b_down = bias(src, &p("down_proj.bias"), d)?;
    let down = Linear::new(stack(&[&down.data], ff)?, [ff, d], b_down, format, device);

    let pre = c.block.norm_placement != NormPlacement::Post;
    let post = c.block.norm_placement != NormPlacement::Pre;
    let optional_norm = |name: &str, present: bool| -> Result<Option<NormWeights>, LmError> {
        present
            .then(|| norm(src, &p(name), d, layer_norm, device))
            .transpose()
    };
    let (q_norm_len, k_norm_len) = match c.block.qk_norm {
        QkNorm::None => (0, 0),
        QkNorm::PerHead => (c.head_dim, c.head_dim),
        QkNorm::AllHeads => (q_out, kv_out),
    };
    let vector = |name: &str, len: usize| -> Result<Option<Tensor<1>>, LmError> {
        if len == 0 {
            return Ok(None);
        }
        let t = src.get(&p(name), &[len])?;
        Ok(Some(upload(t.to_f32().into(), [len], device)))
    };
    Ok(BlockWeights {
        attn_norm: optional_norm("attn_norm", pre)?,
        post_attn_norm: optional_norm("post_attn_norm", post)?,
        q_norm: vector("q_norm.weight", q_norm_len)?,
        k_norm: vector("k_norm.weight", k_norm_len)?,
        qkv,
        o,
        mlp_norm: optional_norm("mlp_norm", pre)?,
        post_mlp_norm: optional_norm("post_mlp_norm", post)?,
        up,
        down,
    })
}

/// A vocabulary matrix as `format` holds it: 16-bit precision converts it like the linear
/// layers' weights (the unembedding is a matmul too, and a tied one is the embedding itself);
/// otherwise the checkpoint's type (int8 packs its own copy of the unembedding).
fn held(data: HostData, format: WeightFormat) -> HostData {
    match format {
        WeightFormat::Half(dtype) => to_half(data, dtype),
        WeightFormat::Checkpoint | WeightFormat::Int8 => data,
    }
}

fn norm(
    src: &Source<'_>,
    prefix: &str,
    d: usize,
    with_bias: bool,
    device: &Device,
) -> Result<NormWeights, LmError> {
    let w = src.get(&format!("{prefix}.weight"), &[d])?;
    let bias = if with_bias {
        let b = src.get(&format!("{prefix}.bias"), &[d])?;
        Some(upload(b.to_f32().into(), [d], device))
    } else {
        None
    };
    Ok(NormWeights {
        weight: upload(w.to_f32().into(), [d], device),
        bias,
    })
}

fn bias(src: &Source<'_>, name: &str, n: usize) -> Result<Option<Vec<f32>>, LmError> {
    Ok(src.opt(name, &[n])?.map(|t| t.to_f32()))
}

/// Stacks `[out_i, cols]` row blocks into one `[Σ out_i, cols]` matrix and returns its
/// transpose `[cols, Σ out_i]`, in the parts' float type; parts of different float types
/// (a checkpoint mixing them within one projection) are widened to f32 together.
fn stack(parts: &[&HostData], cols: usize) -> Result<HostData, LmError> {
    if let Some(t) = HostData::stack_transposed(parts, cols) {
        return Ok(t);
    }
    let wide: Vec<HostData> = parts.iter().map(|p| p.to_f32().into()).collect();
    let wide: Vec<&HostData> = wide.iter().collect();
    HostData::stack_transposed(&wide, cols)
        .ok_or_else(|| LmError::Config("a fused projection has no parts".into()))
}

/// Reorders each head's rows from RoPE pairs (2i, 2i+1) to pairs (i, i + head_dim/2): new row
/// `i` takes old row `2i`, new row `i + head_dim/2` takes old row `2i + 1`. `cols` is the row
/// length (1 for a bias vector).
pub(crate) fn adjacent_to_half_split(rows: &HostData, head_dim: usize, cols: usize) -> HostData {
    let half = head_dim / 2;
    let heads = rows.len() / (head_dim * cols);
    rows.gather((0..heads).flat_map(move |head| {
        (0..head_dim).map(move |new| {
            let old = if new < half {
                2 * new
            } else {
                2 * (new - half) + 1
            };
            let start = (head * head_dim + old) * cols;
            start..start + cols
        })
    }))
}
