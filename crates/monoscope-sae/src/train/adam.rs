//! Adam/AdamW, fused and in place: one pass over parameter, gradient and both moments.

use rayon::prelude::*;

use super::config::AdamConfig;

/// Elements per parallel task: large enough to amortise scheduling, small enough to balance.
const CHUNK: usize = 1 << 15;

/// One Adam step on one tensor at step `t` (1-based), with the gradient multiplied by
/// `grad_scale` (gradient clipping) on the fly. Matches `torch.optim.AdamW` (decoupled weight
/// decay applied before the update); with `weight_decay = 0` it is `torch.optim.Adam`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn adam_update(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    lr: f32,
    cfg: &AdamConfig,
    t: u64,
    grad_scale: f32,
) {
    let (b1, b2) = (cfg.beta1, cfg.beta2);
    let bias1 = 1.0 - (b1 as f64).powf(t as f64);
    let bias2 = 1.0 - (b2 as f64).powf(t as f64);
    let step = (lr as f64 / bias1) as f32;
    let inv_sqrt_bias2 = (1.0 / bias2.sqrt()) as f32;
    let decay = 1.0 - lr * cfg.weight_decay;
    let eps = cfg.eps;
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| {
            for i in 0..p.len() {
                let gi = g[i] * grad_scale;
                m[i] = b1 * m[i] + (1.0 - b1) * gi;
                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                let denom = v[i].sqrt() * inv_sqrt_bias2 + eps;
                p[i] = p[i] * decay - step * m[i] / denom;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two steps checked against values computed by hand from torch's update rule.
    #[test]
    fn matches_torch_adam_rule() {
        let cfg = AdamConfig::default();
        let (mut p, mut m, mut v) = (vec![1.0f32], vec![0.0f32], vec![0.0f32]);
        adam_update(&mut p, &[0.5], &mut m, &mut v, 0.1, &cfg, 1, 1.0);
        // First step: m̂ = g, v̂ = g², update = lr·g/(|g|+eps) ≈ lr.
        assert!((p[0] - 0.9).abs() < 1e-6, "{}", p[0]);
        adam_update(&mut p, &[-0.5], &mut m, &mut v, 0.1, &cfg, 2, 1.0);
        let (m2, v2) = (0.9 * 0.05 + 0.1 * -0.5, 0.999 * 0.000_25 + 0.001 * 0.25);
        let (mh, vh) = (m2 / (1.0 - 0.81), v2 / (1.0 - 0.998_001));
        let want = 0.9 - 0.1 * mh / (f64::sqrt(vh) + 1e-8);
        assert!((p[0] as f64 - want).abs() < 1e-6, "{} vs {want}", p[0]);
    }
}
