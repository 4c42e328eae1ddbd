//! The numeric building blocks of a block: norms, rotary embeddings, attention and MLPs, each a
//! handful of whole-tensor burn operations over `[batch * seq, features]` matmuls. These are the
//! reference arithmetic and every non-CPU device's path; on the CPU (`flex`) device RMSNorm,
//! SwiGLU and the attention core (RoPE included) dispatch to the host kernels of
//! `crate::fused` and `crate::attention` unless the caller's `host` flag (the model's
//! [`crate::ModelOptions::host_kernels`]) is off.

use burn::prelude::*;
use burn::tensor::activation::{gelu, gelu_approximate, silu};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use crate::attention::{AttnShape, LayerCache, Rope};
use monoscope_formats::MlpActivation;

use crate::hooks::HookRunner;
use crate::weights::{BlockWeights, NormWeights};
use crate::{HookName, HookPoint, LmError};

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

/// `host`: whether the host kernel may run (it does when `x` is on the CPU device, too).
pub(crate) fn norm(
    x: Tensor<3>,
    w: &NormWeights,
    kind: NormKind,
    eps: f64,
    host: bool,
) -> Tensor<3> {
    if host && kind == NormKind::Rms && w.bias.is_none() && crate::fused::on_host(&x) {
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

/// What one layer's attention computes beyond causal `softmax(q·k / √head_dim)` with full RoPE.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AttnExtras {
    /// Scale on q·k; `None`: 1/√head_dim.
    pub scale: Option<f64>,
    /// Scores `s` become `c · tanh(s / c)`.
    pub softcap: Option<f64>,
    /// Keys more than `window - 1` columns before the query are invisible.
    pub window: Option<usize>,
    /// RMSNorm epsilon of the q/k norms.
    pub qk_norm_eps: f64,
}

impl AttnExtras {
    /// Whether the host kernel (plain scaled causal attention) computes this layer.
    fn plain(&self) -> bool {
        self.scale.is_none() && self.softcap.is_none() && self.window.is_none()
    }
}

/// Causal (grouped-query) self-attention of `x[batch, seq, d_model]` (already normalised), with
/// the output projection. `mask` says which keys are padding; causality is applied by the
/// kernel, aligned to the end of the keys so that cached positions come first. Returns
/// `hook_attn_out` before any post-norm. On the CPU device the fused host kernel runs when
/// `host` is set and the layer is plain (see [`AttnExtras`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_block(
    x: Tensor<3>,
    w: &BlockWeights,
    s: AttnShape,
    rope: Option<&Rope>,
    mask: KeyMask,
    extras: AttnExtras,
    cache: Option<&mut Option<LayerCache>>,
    (layer, hooks): (usize, &mut HookRunner),
    host: bool,
) -> Result<Tensor<3>, LmError> {
    let [b, t, d] = x.dims();
    let mut qkv = w.qkv.forward(x.reshape([b * t, d]));
    let qkv_hooks = [
        HookPoint::Q(layer),
        HookPoint::K(layer),
        HookPoint::V(layer),
    ]
    .map(HookName::new);
    if qkv_hooks.iter().any(|h| hooks.active(h)) {
        let widths = [
            s.n_heads * s.head_dim,
            s.n_kv_heads * s.head_dim,
            s.n_kv_heads * s.head_dim,
        ];
        let mut parts = Vec::with_capacity(3);
        let mut start = 0;
        for (hook, width) in qkv_hooks.into_iter().zip(widths) {
            let part = qkv.clone().narrow(1, start, width).reshape([b, t, width]);
            parts.push(hooks.at(hook, part)?.reshape([b * t, width]));
            start += width;
        }
        qkv = Tensor::cat(parts, 1);
    }
    if let (Some(qn), Some(kn)) = (&w.q_norm, &w.k_norm) {
        qkv = qk_norm(qkv, qn, kn, s, extras.qk_norm_eps);
    }
    let full_rope = rope.is_none_or(|r| r.pairs() * 2 == s.head_dim);
    let o = if host && extras.plain() && full_rope && crate::fused::on_host(&qkv) {
        crate::attention::fused(qkv, b, t, s, rope, mask.valid, cache)
    } else {
        let past = cache
            .as_ref()
            .and_then(|c| c.as_ref().map(|c| c.k.dims()[2]))
            .unwrap_or(0);
        let windowed = extras
            .window
            .filter(|&w| past + t > w)
            .map(|w| window_mask(b, t, past, w, mask.valid, &qkv.device()));
        let mask = windowed.as_ref().or(mask.tensor);
        attention_generic(qkv, b, t, s, rope, mask, extras, cache)
    };
    let z = HookName::new(HookPoint::Z(layer));
    let o = if hooks.active(&z) {
        let width = o.dims()[1];
        hooks
            .at(z, o.reshape([b, t, width]))?
            .reshape([b * t, width])
    } else {
        o
    };
    Ok(w.o.forward(o).reshape([b, t, d]))
}

/// RMSNorm of the queries and keys inside `qkv[rows, (heads + 2 kv) head_dim]`: per head when
/// the weights are `[head_dim]` long, over all heads at once when they span them.
fn qk_norm(qkv: Tensor<2>, qn: &Tensor<1>, kn: &Tensor<1>, s: AttnShape, eps: f64) -> Tensor<2> {
    let [rows, width] = qkv.dims();
    let (h, kv, hd) = (s.n_heads, s.n_kv_heads, s.head_dim);
    let rms = |x: Tensor<2>, w: &Tensor<1>| -> Tensor<2> {
        let inv = (x.clone().square().mean_dim(1) + eps).sqrt().recip();
        x * inv * w.clone().unsqueeze::<2>()
    };
    let q = qkv.clone().narrow(1, 0, h * hd);
    let k = qkv.clone().narrow(1, h * hd, kv * hd);
    let v = qkv.narrow(1, (h + kv) * hd, kv * hd);
    let (q, k) = if qn.dims()[0] == hd {
        (
            rms(q.reshape([rows * h, hd]), qn).reshape([rows, h * hd]),
            rms(k.reshape([rows * kv, hd]), kn).reshape([rows, kv * hd]),
        )
    } else {
        (rms(q, qn), rms(k, kn))
    };
    let out = Tensor::cat(vec![q, k, v], 1);
    debug_assert_eq!(out.dims(), [rows, width]);
    out
}

/// `[batch, 1, seq, past + seq]`, `true` where a key is padding or lies `window` or more
/// columns before its query (queries are the last `seq` columns).
fn window_mask(
    b: usize,
    t: usize,
    past: usize,
    window: usize,
    valid: Option<&[Vec<bool>]>,
    device: &Device,
) -> Tensor<4, Bool> {
    let keys = past + t;
    let mut mask = Vec::with_capacity(b * t * keys);
    for row in 0..b {
        for q in 0..t {
            let q_col = past + q;
            for k in 0..keys {
                let padding = valid.is_some_and(|v| !v[row][k]);
                mask.push(padding || q_col >= k + window);
            }
        }
    }
    Tensor::from_data(TensorData::new(mask, [b, 1, t, keys]), device)
}

/// The reference attention in whole-tensor burn ops, any device: `qkv[batch * seq, (heads +
/// 2 kv_heads) head_dim]` to `[batch * seq, heads head_dim]`, extending `cache`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_generic(
    qkv: Tensor<2>,
    b: usize,
    t: usize,
    s: AttnShape,
    rope: Option<&Rope>,
    mask: Option<&Tensor<4, Bool>>,
    extras: AttnExtras,
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
    // burn's fused attention op is used on every device (causal, with the padding or window
    // mask broadcast over heads, scale and softcap as options), but only the CPU (`flex`)
    // backend's kernel shares a key head among a group of query heads. The GPU backends'
    // flash kernel (cubek) indexes keys and values with the query's head number, and their
    // fallback (also what scale and softcap select there) and autodiff's decomposition are
    // plain batched matmuls that broadcast only size-1 dimensions: for those each key head is
    // repeated for its group. The cache keeps the `kv` heads, so it costs no extra memory
    // between steps.
    let device = q.device();
    if h != kv && (device.is_autodiff() || device != Device::flex()) {
        let group = h / kv;
        let repeat = |x: Tensor<4>| {
            let [b, _, keys, hd] = x.dims();
            x.unsqueeze_dim::<5>(2)
                .repeat_dim(2, group)
                .reshape([b, h, keys, hd])
        };
        k = repeat(k);
        v = repeat(v);
    }
    let options = AttentionModuleOptions {
        scale: extras.scale,
        softcap: extras.softcap,
        is_causal: true,
    };
    let o = attention(q, k, v, mask.cloned(), None, options);
    o.swap_dims(1, 2).reshape([b * t, h * hd])
}

/// The MLP of a block on normalised `x[batch, seq, d_model]`: gated (`down(act(gate) * up)`,
/// SiLU or tanh-GELU) or plain (`down(act(up x + b)) + b`, tanh or exact GELU), with the
/// `mlp.hook_pre` and `mlp.hook_post` hooks of `layer`. Returns `hook_mlp_out` before any
/// post-norm. `host`: whether SwiGLU may run as the host kernel (on the CPU device).
pub(crate) fn mlp_block(
    x: Tensor<3>,
    w: &BlockWeights,
    activation: MlpActivation,
    (layer, hooks): (usize, &mut HookRunner),
    host: bool,
) -> Result<Tensor<3>, LmError> {
    let [b, t, d] = x.dims();
    let mut hidden = w.up.forward(x.reshape([b * t, d]));
    let [ff, _] = w.down.dims();
    let pre = HookName::new(HookPoint::MlpPre(layer));
    if hooks.active(&pre) {
        // The gate half of a gated MLP's fused projection, or the whole up projection.
        let gate = hidden.clone().narrow(1, 0, ff).reshape([b, t, ff]);
        let gate = hooks.at(pre, gate)?.reshape([b * t, ff]);
        hidden = if activation.gated() {
            Tensor::cat(vec![gate, hidden.narrow(1, ff, ff)], 1)
        } else {
            gate
        };
    }
    let act = match activation {
        MlpActivation::GeluTanh => gelu_approximate(hidden),
        MlpActivation::Gelu => gelu(hidden),
        MlpActivation::SwiGlu if host && crate::fused::on_host(&hidden) => {
            crate::fused::swiglu(hidden)
        }
        MlpActivation::SwiGlu | MlpActivation::GeGluTanh => {
            let gate = hidden.clone().narrow(1, 0, ff);
            let gate = if activation == MlpActivation::SwiGlu {
                silu(gate)
            } else {
                gelu_approximate(gate)
            };
            gate * hidden.narrow(1, ff, ff)
        }
    };
    let post = HookName::new(HookPoint::MlpPost(layer));
    let act = if hooks.active(&post) {
        hooks
            .at(post, act.reshape([b, t, ff]))?
            .reshape([b * t, ff])
    } else {
        act
    };
    Ok(w.down.forward(act).reshape([b, t, d]))
}
