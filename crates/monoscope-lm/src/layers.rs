//! The numeric building blocks of a block: norms, rotary embeddings, attention and MLPs, each a
//! handful of whole-tensor burn operations over `[batch * seq, features]` matmuls. These are the
//! reference arithmetic and every non-CPU device's path; on the CPU (`flex`) device RMSNorm,
//! SwiGLU and the attention core (RoPE included) dispatch to the host kernels of
//! `crate::fused` and `crate::attention`.

use burn::prelude::*;
use burn::tensor::activation::{gelu_approximate, silu};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use crate::attention::{AttnShape, LayerCache, Rope};
use crate::weights::{BlockWeights, NormWeights};

/// RMSNorm (Llama family) or LayerNorm with bias (GPT-2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum NormKind {
    Rms,
    Layer,
}

/// The normalisation alone, before the elementwise weight and bias (TransformerLens'
/// `hook_normalized`).
pub(crate) fn normalize(x: Tensor<3>, kind: NormKind, eps: f64) -> Tensor<3> {
    match kind {
        NormKind::Rms => {
            let inv = (x.clone().square().mean_dim(2) + eps).sqrt().recip();
            x * inv
        }
        NormKind::Layer => {
            let (var, mean) = x.clone().var_mean_bias(2);
            (x - mean) * (var + eps).sqrt().recip()
        }
    }
}

/// The norm's elementwise weight (and bias).
pub(crate) fn scale(x: Tensor<3>, w: &NormWeights) -> Tensor<3> {
    let y = x * w.weight.clone().unsqueeze::<3>();
    match &w.bias {
        Some(b) => y + b.clone().unsqueeze::<3>(),
        None => y,
    }
}

pub(crate) fn norm(x: Tensor<3>, w: &NormWeights, kind: NormKind, eps: f64) -> Tensor<3> {
    if kind == NormKind::Rms && w.bias.is_none() && crate::fused::on_host(&x) {
        return crate::fused::rms_norm(x, &w.weight, eps);
    }
    scale(normalize(x, kind, eps), w)
}

/// Which keys attention may use besides causality: both forms of the same padding flags.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KeyMask<'a> {
    /// `[batch, 1, seq, past + seq]`, `true` where a key is padding (generic path).
    pub tensor: Option<&'a Tensor<4, Bool>>,
    /// Per row, `past + seq` flags, `true` where a key is a real token (host kernel).
    pub valid: Option<&'a [Vec<bool>]>,
}

/// Causal (grouped-query) self-attention of `x[batch, seq, d_model]` (already normalised), with
/// the output projection. `mask` says which keys are padding; causality is applied by the
/// kernel, aligned to the end of the keys so that cached positions come first. Returns
/// `hook_attn_out`. On the CPU device the fused host kernel of `crate::attention` runs.
pub(crate) fn attention_block(
    x: Tensor<3>,
    w: &BlockWeights,
    s: AttnShape,
    rope: Option<&Rope>,
    mask: KeyMask,
    cache: Option<&mut Option<LayerCache>>,
) -> Tensor<3> {
    let [b, t, d] = x.dims();
    let qkv = w.qkv.forward(x.reshape([b * t, d]));
    let o = if crate::fused::on_host(&qkv) {
        crate::attention::fused(qkv, b, t, s, rope, mask.valid, cache)
    } else {
        attention_generic(qkv, b, t, s, rope, mask.tensor, cache)
    };
    w.o.forward(o).reshape([b, t, d])
}

/// The reference attention in whole-tensor burn ops, any device: `qkv[batch * seq, (heads +
/// 2 kv_heads) head_dim]` to `[batch * seq, heads head_dim]`, extending `cache`.
pub(crate) fn attention_generic(
    qkv: Tensor<2>,
    b: usize,
    t: usize,
    s: AttnShape,
    rope: Option<&Rope>,
    mask: Option<&Tensor<4, Bool>>,
    cache: Option<&mut Option<LayerCache>>,
) -> Tensor<2> {
    let (h, kv, hd) = (s.n_heads, s.n_kv_heads, s.head_dim);
    let qkv = qkv.reshape([b, t, h + 2 * kv, hd]);
    let v = qkv.clone().narrow(2, h + kv, kv);
    // Q and K share one rotation call: they are adjacent in the fused projection.
    let mut qk = qkv.narrow(2, 0, h + kv);
    if let Some(rope) = rope {
        qk = rope.apply(qk);
    }
    let q = qk.clone().narrow(2, 0, h).swap_dims(1, 2);
    let mut k = qk.narrow(2, h, kv).swap_dims(1, 2);
    let mut v = v.swap_dims(1, 2);
    if let Some(slot) = cache {
        if let Some(past) = slot.take() {
            k = Tensor::cat(vec![past.k, k], 2);
            v = Tensor::cat(vec![past.v, v], 2);
        }
        *slot = Some(LayerCache {
            k: k.clone(),
            v: v.clone(),
        });
    }
    let options = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: true,
    };
    let o = attention(q, k, v, mask.cloned(), None, options);
    o.swap_dims(1, 2).reshape([b * t, h * hd])
}

/// The MLP of a block on normalised `x[batch, seq, d_model]`: SwiGLU (`down(silu(gate) * up)`)
/// or GPT-2's `proj(gelu_tanh(fc x + b)) + b`. Returns `hook_mlp_out`.
pub(crate) fn mlp_block(x: Tensor<3>, w: &BlockWeights, swiglu: bool) -> Tensor<3> {
    let [b, t, d] = x.dims();
    let hidden = w.up.forward(x.reshape([b * t, d]));
    let act = if !swiglu {
        gelu_approximate(hidden)
    } else if crate::fused::on_host(&hidden) {
        crate::fused::swiglu(hidden)
    } else {
        let ff = hidden.dims()[1] / 2;
        let gate = hidden.clone().narrow(1, 0, ff);
        silu(gate) * hidden.narrow(1, ff, ff)
    };
    w.down.forward(act).reshape([b, t, d])
}
