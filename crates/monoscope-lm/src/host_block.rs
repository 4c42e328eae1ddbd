//! Llama-family blocks on host buffers, the path of int8 models on the CPU (`flex`) device.
//!
//! There every kernel of a block (RMSNorm, the integer products, attention, SwiGLU) runs on
//! the host anyway, so the residual stream stays a `Vec<f32>` from one block to the next and
//! burn tensors are built only at hooks that record or change an activation. That drops what
//! the tensor path pays per block: two copies of the shared residual for the norms, two
//! element-wise burn additions into fresh buffers, and the norms' and SwiGLU's f32 outputs,
//! which here go straight into the quantised rows of the products that read them
//! ([`int8::quantize_rows_with`]). The arithmetic is the tensor path's: the same norm, SwiGLU
//! and quantisation, value for value.

use std::mem::take;

use burn::prelude::*;
use rayon::prelude::*;

use crate::attention::{self, Call};
use crate::attention::{AttnShape, LayerCache, Rope};
use crate::fused::{host_vec, rms_norm_row, swiglu_rows_best};
use crate::hooks::HookRunner;
use crate::int8::{self, PackedInt8};
use crate::weights::{BlockWeights, NormWeights};
use crate::{HookName, LmError};

/// The integer weights of one block, when every projection has them and the norms are
/// RMSNorm without bias: the blocks this path can run.
struct Packed<'a> {
    attn_norm: &'a NormWeights,
    mlp_norm: &'a NormWeights,
    qkv: &'a PackedInt8,
    o: &'a PackedInt8,
    up: &'a PackedInt8,
    down: &'a PackedInt8,
}

impl<'a> Packed<'a> {
    fn of(w: &'a BlockWeights) -> Option<Self> {
        let (attn_norm, mlp_norm) = (w.attn_norm.as_ref()?, w.mlp_norm.as_ref()?);
        if attn_norm.bias.is_some() || mlp_norm.bias.is_some() {
            return None;
        }
        Some(Self {
            attn_norm,
            mlp_norm,
            qkv: w.qkv.int8.as_deref()?,
            o: w.o.int8.as_deref()?,
            up: w.up.int8.as_deref()?,
            down: w.down.int8.as_deref()?,
        })
    }
}

/// Whether [`Pass::block`] can run every one of `blocks` (of a model whose blocks are plain
/// SwiGLU blocks: the caller checks that).
pub(crate) fn supported(blocks: &[BlockWeights]) -> bool {
    blocks.iter().all(|w| Packed::of(w).is_some())
}

/// Buffers reused from block to block. Fresh ones of these sizes come from `mmap`, and the
/// kernel zeroing their pages cost ~3% of a forward pass.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// The input of whichever product runs next.
    quant: int8::QuantRows,
    qkv: Vec<f32>,
    heads: Vec<f32>,
    attn: Vec<f32>,
    hidden: Vec<f32>,
    mlp: Vec<f32>,
}

/// What every block of one forward pass shares.
pub(crate) struct Pass<'a> {
    /// `[batch, seq, d_model]`.
    pub dims: [usize; 3],
    pub shape: AttnShape,
    pub rope: Option<&'a Rope>,
    pub keys_valid: Option<&'a [Vec<bool>]>,
    pub eps: f32,
    pub device: &'a Device,
}

impl Pass<'_> {
    /// Block `l` on the residual stream `x` (`[batch, seq, d_model]` row-major), applying its
    /// `attn_out`, `mlp_out` and `resid_post` hooks as the tensor path does. The caller has
    /// checked [`supported`].
    pub fn block(
        &self,
        l: usize,
        x: &mut Vec<f32>,
        w: &BlockWeights,
        cache: Option<&mut Option<LayerCache>>,
        hooks: &mut HookRunner,
        scratch: &mut Scratch,
    ) -> Result<(), LmError> {
        let p = Packed::of(w).expect("the caller checked `supported`");
        let [b, t, _] = self.dims;
        let call = Call {
            batch: b,
            seq: t,
            shape: self.shape,
            rope: self.rope,
            keys_valid: self.keys_valid,
            device: self.device,
        };
        let Scratch {
            quant,
            qkv,
            heads,
            attn,
            hidden,
            mlp,
        } = scratch;
        self.norm(x, p.attn_norm, p.qkv, quant);
        int8::matmul_quantized_into(quant, p.qkv, qkv);
        attention::fused_host(qkv, call, cache, heads);
        int8::quantize_rows_into(heads, b * t, p.o, quant);
        int8::matmul_quantized_into(quant, p.o, attn);
        let out = hooks.at_host(HookName::attn_out(l), take(attn), self.dims, self.device)?;
        add_into(x, &out);
        *attn = out;

        self.norm(x, p.mlp_norm, p.up, quant);
        int8::matmul_quantized_into(quant, p.up, hidden);
        let ff = p.down.k();
        int8::quantize_rows_with(b * t, p.down, quant, |r, row| {
            swiglu_rows_best(&hidden[r * 2 * ff..(r + 1) * 2 * ff], row, ff)
        });
        int8::matmul_quantized_into(quant, p.down, mlp);
        let out = hooks.at_host(HookName::mlp_out(l), take(mlp), self.dims, self.device)?;
        add_into(x, &out);
        *mlp = out;
        *x = hooks.at_host(HookName::resid_post(l), take(x), self.dims, self.device)?;
        Ok(())
    }

    /// RMSNorm of every row of `x`, quantised for `w` into `q` without an f32 copy between.
    fn norm(&self, x: &[f32], norm: &NormWeights, w: &PackedInt8, q: &mut int8::QuantRows) {
        let weight = host_vec(norm.weight.clone());
        let d = weight.len();
        int8::quantize_rows_with(x.len() / d, w, q, |r, row| {
            rms_norm_row(&x[r * d..(r + 1) * d], &weight, self.eps, row)
        });
    }
}

/// `x += y`, element-wise.
fn add_into(x: &mut [f32], y: &[f32]) {
    assert_eq!(
        x.len(),
        y.len(),
        "residual and block output differ in shape"
    );
    x.par_chunks_mut(1 << 14)
        .zip(y.par_chunks(1 << 14))
        .for_each(|(x, y)| x.iter_mut().zip(y).for_each(|(x, y)| *x += y));
}
