//! What an attention call works with, on either path: the rotary tables, the head shapes and
//! one layer's KV cache.

use burn::prelude::*;

use crate::rope::RopeFrequencies;

/// cos/sin of `position * inverse_frequency[i]` (times YaRN's attention factor) for each
/// rotated pair i, shaped `[batch, seq, 1, pairs]` to broadcast over heads.
#[derive(Debug, Clone)]
pub(crate) struct Rope {
    cos: Tensor<4>,
    sin: Tensor<4>,
    /// The same tables on the host, `[batch * seq, pairs]`, for the fused kernel.
    cos_host: Vec<f32>,
    sin_host: Vec<f32>,
}

impl Rope {
    /// `positions` is row-major `[batch, seq]`.
    pub fn new(
        positions: &[usize],
        batch: usize,
        seq: usize,
        frequencies: &RopeFrequencies,
        device: &Device,
    ) -> Self {
        let half = frequencies.inverse.len();
        let scale = frequencies.attention_factor;
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for f in &frequencies.inverse {
                // The angle in f32, as transformers forms it (`inv_freq @ position_ids` in
                // float32): at long positions an f64 angle differs by more than the test
                // tolerance.
                let angle = (p as f32 * *f as f32) as f64;
                cos.push((angle.cos() * scale) as f32);
                sin.push((angle.sin() * scale) as f32);
            }
        }
        let shape = [batch, seq, 1, half];
        Self {
            cos: Tensor::from_data(TensorData::new(cos.clone(), shape), device),
            sin: Tensor::from_data(TensorData::new(sin.clone(), shape), device),
            cos_host: cos,
            sin_host: sin,
        }
    }

    /// cos and sin, `[batch * seq, head_dim/2]` row-major.
    pub fn host(&self) -> (&[f32], &[f32]) {
        (&self.cos_host, &self.sin_host)
    }

    /// Rotated pairs per head: `head_dim / 2`, or fewer with partial rotary.
    pub fn pairs(&self) -> usize {
        self.cos.dims()[3]
    }

    /// Rotates pairs (i, i + rotated/2) of the first `2 * pairs` dimensions of
    /// `x[batch, seq, heads, head_dim]`; the rest pass unchanged (partial rotary).
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let head_dim = x.dims()[3];
        let half = self.pairs();
        let rest =
            (2 * half < head_dim).then(|| x.clone().narrow(3, 2 * half, head_dim - 2 * half));
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.narrow(3, half, half);
        let (c, s) = (self.cos.clone(), self.sin.clone());
        let r1 = x1.clone() * c.clone() - x2.clone() * s.clone();
        let r2 = x1 * s + x2 * c;
        let mut parts = vec![r1, r2];
        parts.extend(rest);
        Tensor::cat(parts, 3)
    }
}

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// Keys and values of earlier positions for one layer, `[batch, n_kv_heads, past, head_dim]`.
#[derive(Debug, Clone)]
pub(crate) struct LayerCache {
    pub k: Tensor<4>,
    pub v: Tensor<4>,
}
