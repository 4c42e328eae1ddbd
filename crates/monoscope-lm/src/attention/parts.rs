//! What an attention call works with, on either path: the rotary tables, the head shapes and
//! one layer's KV cache.

use burn::prelude::*;

/// cos/sin of `position * theta^(-2i/head_dim)` for i < head_dim/2, shaped `[batch, seq, 1,
/// head_dim/2]` to broadcast over heads.
#[derive(Debug, Clone)]
pub(crate) struct Rope {
    cos: Tensor<4>,
    sin: Tensor<4>,
    /// The same tables on the host, `[batch * seq, head_dim/2]`, for the fused kernel.
    cos_host: Vec<f32>,
    sin_host: Vec<f32>,
}

impl Rope {
    /// `positions` is row-major `[batch, seq]`.
    pub fn new(
        positions: &[usize],
        batch: usize,
        seq: usize,
        head_dim: usize,
        theta: f64,
        device: &Device,
    ) -> Self {
        let half = head_dim / 2;
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| theta.powf(-2.0 * i as f64 / head_dim as f64))
            .collect();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for f in &inv_freq {
                let angle = p as f64 * f;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
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

    /// Rotates pairs (i, i + head_dim/2) of `x[batch, seq, heads, head_dim]`.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let half = x.dims()[3] / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.narrow(3, half, half);
        let (c, s) = (self.cos.clone(), self.sin.clone());
        let r1 = x1.clone() * c.clone() - x2.clone() * s.clone();
        let r2 = x1 * s + x2 * c;
        Tensor::cat(vec![r1, r2], 3)
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
