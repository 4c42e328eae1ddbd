//! ReLU+L1 (while its codes are dense) and JumpReLU: five `gemm` products per block of rows,
//! gradients accumulated block by block.

use rayon::prelude::*;

use super::{BatchStats, Scratch, add_colsum, blocks, decoder_norms, encode_unbiased, l1_penalty};
use crate::kernels::{View, matmul};
use crate::sae::ENCODE_BLOCK_ROWS;
use crate::train::config::{ArchConfig, TrainConfig};
use crate::train::params::Params;

/// `probed`: rows whose unbiased pre-activations `scratch.z` already holds.
pub(super) fn run(
    p: &Params,
    cfg: &TrainConfig,
    x: &[f32],
    coeff: f32,
    probed: usize,
    scratch: &mut Scratch,
    g: &mut Params,
) -> BatchStats {
    let (d, s) = (cfg.d_in, cfg.d_sae);
    let n = x.len() / d;
    let inv_b = 1.0 / n as f32;
    for t in g.tensors_mut() {
        t.par_chunks_mut(1 << 16).for_each(|c| c.fill(0.0));
    }
    let jump = match cfg.architecture {
        ArchConfig::JumpRelu { bandwidth, .. } => Some(bandwidth),
        _ => None,
    };
    let theta: Vec<f32> = p.threshold.iter().map(|t| t.max(0.0)).collect();
    let norms = decoder_norms(p, d);
    let mut colsum_f = vec![0.0f32; s];
    let mut fired = vec![0u32; s];
    let mut dtheta = vec![0.0f32; s];
    let mut row_sq_err = Vec::with_capacity(n);
    let mut min_active = f32::INFINITY;
    let Scratch { xc, z, f, gf } = scratch;
    for rows in blocks(n, probed, ENCODE_BLOCK_ROWS) {
        let c = rows.len();
        let xc = &xc[rows.start * d..rows.end * d];
        let block = &x[rows.start * d..rows.end * d];
        if rows.start > 0 || probed == 0 {
            encode_unbiased(p, xc, c, s, d, z);
        }
        let z = &mut z[..c * s];
        f.resize(c * s, 0.0);
        let f = &mut f[..c * s];
        z.par_chunks_mut(s)
            .zip(f.par_chunks_mut(s))
            .for_each(|(z, f)| {
                z.iter_mut().zip(&p.b_enc).for_each(|(z, b)| *z += b);
                match jump {
                    Some(_) => f
                        .iter_mut()
                        .zip(&*z)
                        .zip(&theta)
                        .for_each(|((f, z), t)| *f = if *z > *t && *z > 0.0 { *z } else { 0.0 }),
                    None => f.iter_mut().zip(&*z).for_each(|(f, z)| *f = z.max(0.0)),
                }
            });
        let mut gout = p.b_dec.repeat(c);
        matmul(
            &mut gout,
            View::rows(f, c, s),
            View::rows(&p.w_dec, s, d),
            true,
        );
        let row_sq: Vec<f64> = gout
            .par_chunks_mut(d)
            .zip(block.par_chunks(d))
            .map(|(e, x)| {
                let mut sq = 0.0f64;
                for (e, x) in e.iter_mut().zip(x) {
                    *e -= x;
                    sq += f64::from(*e) * f64::from(*e);
                    *e *= 2.0 * inv_b;
                }
                sq
            })
            .collect();
        row_sq_err.extend(row_sq);
        // ∂/∂f = G·W_decᵀ
        gf.resize(c * s, 0.0);
        let gf = &mut gf[..c * s];
        matmul(
            gf,
            View::rows(&gout, c, d),
            View::rows(&p.w_dec, s, d).t(),
            false,
        );
        // Column statistics (firing counts, Σf, θ's STE gradient) before ∂f becomes ∂z.
        const COLS: usize = 256;
        let (f, z) = (&*f, &*z);
        let col_mins: Vec<f32> = fired
            .par_chunks_mut(COLS)
            .zip(colsum_f.par_chunks_mut(COLS))
            .zip(dtheta.par_chunks_mut(COLS))
            .enumerate()
            .map(|(ci, ((fired, csum), dth))| {
                let mut min = f32::INFINITY;
                let base = ci * COLS;
                for r in 0..c {
                    let row = r * s + base;
                    for j in 0..fired.len() {
                        let fv = f[row + j];
                        if fv > 0.0 {
                            fired[j] += 1;
                            csum[j] += fv;
                            min = min.min(fv);
                        }
                        if let Some(eps) = jump {
                            let t = theta[base + j];
                            // Rectangle kernel: |z − θ| < ε/2. Pseudo-derivatives (Rajamanoharan
                            // et al. 2024): ∂JumpReLU/∂θ = −θ/ε, ∂H(z−θ)/∂θ = −1/ε.
                            if (z[row + j] - t).abs() < 0.5 * eps {
                                dth[j] += -(t / eps) * gf[row + j] - coeff * inv_b / eps;
                            }
                        }
                    }
                }
                min
            })
            .collect();
        min_active = col_mins.into_iter().fold(min_active, f32::min);
        // ∂z = ∂f·σ'(z) (+ the L1 term for ReLU), in place.
        gf.par_chunks_mut(s)
            .zip(z.par_chunks(s))
            .for_each(|(gz, z)| match jump {
                Some(_) => gz
                    .iter_mut()
                    .zip(z)
                    .zip(&theta)
                    .for_each(|((g, z), t)| *g = if *z > *t && *z > 0.0 { *g } else { 0.0 }),
                None => gz.iter_mut().zip(z).zip(&norms).for_each(|((g, z), nrm)| {
                    *g = if *z > 0.0 {
                        *g + coeff * inv_b * nrm
                    } else {
                        0.0
                    }
                }),
            });
        matmul(
            &mut g.w_dec,
            View::rows(f, c, s).t(),
            View::rows(&gout, c, d),
            true,
        );
        matmul(
            &mut g.w_enc_t,
            View::rows(gf, c, s).t(),
            View::rows(xc, c, d),
            true,
        );
        add_colsum(&mut g.b_enc, gf, s);
        add_colsum(&mut g.b_dec, &gout, d);
    }
    let active: u64 = fired.iter().map(|&v| u64::from(v)).sum();
    let sparsity_loss = match jump {
        Some(_) => {
            for ((g, d), t) in g.threshold.iter_mut().zip(&dtheta).zip(&p.threshold) {
                // θ is used as relu(t): no gradient where t ≤ 0.
                *g = if *t > 0.0 { *d } else { 0.0 };
            }
            f64::from(coeff) * active as f64 / n as f64
        }
        None => l1_penalty(g, p, d, coeff, n, &colsum_f, &norms),
    };
    let sq_err = row_sq_err.iter().sum::<f64>();
    BatchStats {
        mse_loss: sq_err / n as f64,
        sparsity_loss,
        sq_err,
        row_sq_err,
        active,
        fired,
        min_active,
        ..Default::default()
    }
}
