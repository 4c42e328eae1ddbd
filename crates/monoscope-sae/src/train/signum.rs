//! Schedule-free sign descent (Defazio et al. 2024, "The Road Less Scheduled", wrapped around
//! sign descent as sparsify does), fused and in place.
//!
//! Three sequences: `z` steps by `−lr·sign(g)`; `x` is the weighted average of the `z`
//! iterates (the weights are `lr_max²`, uniform under a constant rate); the gradient is taken
//! at `y = β·x + (1 − β)·z`. The trainer's parameters hold `y`, the optimizer state holds `z`,
//! and `x` is recovered as `(y − (1 − β)·z) / β`, so the method costs one buffer, as
//! momentum would.

use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 15;

/// One step on one tensor: `y` the parameters (where `g` was taken), `z` the base iterate,
/// `beta` the momentum, `c` the averaging weight of this step's `z` in `x`.
pub(crate) fn signum_update(y: &mut [f32], g: &[f32], z: &mut [f32], lr: f32, beta: f32, c: f32) {
    let keep = 1.0 - beta;
    y.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(z.par_chunks_mut(CHUNK))
        .for_each(|((y, g), z)| {
            for i in 0..y.len() {
                let x = (y[i] - keep * z[i]) / beta;
                z[i] -= lr * sign(g[i]);
                let x = x + c * (z[i] - x);
                y[i] = beta * x + keep * z[i];
            }
        });
}

/// The averaged parameters `x` of a tensor whose `y` and `z` are given (what is exported).
pub(crate) fn average(y: &[f32], z: &[f32], beta: f32) -> Vec<f32> {
    let keep = 1.0 - beta;
    y.par_iter()
        .zip(z.par_iter())
        .map(|(y, z)| (y - keep * z) / beta)
        .collect()
}

/// `torch.sign`: 0 for 0, so a parameter with no gradient (a latent that did not fire) stays.
fn sign(v: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two steps against the three-sequence definition written out in f64.
    #[test]
    fn matches_the_three_sequence_definition() {
        let (beta, lr) = (0.9f64, 0.1f64);
        let mut y = vec![1.0f32, -2.0, 0.5];
        let mut z = y.clone();
        let grads = [[0.3f32, -1.0, 0.0], [-0.2, -0.5, 2.0]];
        let (mut xr, mut zr): (Vec<f64>, Vec<f64>) = (
            y.iter().map(|&v| f64::from(v)).collect(),
            y.iter().map(|&v| f64::from(v)).collect(),
        );
        for (t, g) in grads.iter().enumerate() {
            let c = 1.0 / (t + 1) as f64;
            signum_update(&mut y, g, &mut z, lr as f32, beta as f32, c as f32);
            for i in 0..3 {
                zr[i] -= lr * f64::from(sign(g[i]));
                xr[i] = (1.0 - c) * xr[i] + c * zr[i];
                let yr = beta * xr[i] + (1.0 - beta) * zr[i];
                assert!((f64::from(y[i]) - yr).abs() < 1e-6, "step {t} y[{i}]");
                assert!((f64::from(z[i]) - zr[i]).abs() < 1e-6, "step {t} z[{i}]");
            }
        }
        let x = average(&y, &z, beta as f32);
        for i in 0..3 {
            assert!((f64::from(x[i]) - xr[i]).abs() < 1e-5, "x[{i}]");
        }
    }
}
