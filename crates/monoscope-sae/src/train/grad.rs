//! Loss and gradients of one batch, written by hand.
//!
//! With `x_c = x − b_dec`, `z = x_c·W_encᵀ_t + b_enc`, `f = σ(z)`, `x̂ = f·W_dec + b_dec`,
//! `e = x̂ − x` and `B` rows, every architecture minimises `(1/B)·Σ‖e‖²` plus its own term:
//!
//! | architecture | σ | extra term | gradient notes |
//! |---|---|---|---|
//! | ReLU+L1 | relu | `(λ/B)·Σ f_i‖W_dec,i‖` | penalty also pulls on ‖W_dec,i‖ |
//! | TopK | relu of the k largest z per row | AuxK | only active latents get gradients |
//! | BatchTopK | relu of the k·B largest z in the batch | AuxK | as TopK |
//! | JumpReLU | `z·[z > θ]` | `(λ/B)·Σ [z > θ]` | θ through the rectangle-kernel STE |
//!
//! Shared: `∂/∂x̂ = G = (2/B)·e`; `∂/∂W_dec = fᵀG`; `∂/∂f = G·W_decᵀ`; `∂/∂W_enc = x_cᵀ·∂z`;
//! `∂/∂b_enc = Σ ∂z`; `∂/∂b_dec = Σ G − W_enc·(Σ ∂z)` (it enters through x_c as well).
//!
//! ReLU+L1 and JumpReLU (dense early in training) run as five `gemm` products over blocks of
//! rows. TopK and BatchTopK run the one dense product they need (the encoder) and do the rest
//! as sparse-dense products over the active latents, grouped by latent so that each latent's
//! gradient rows are written by one thread in a fixed order (deterministic, no atomics).

use rayon::prelude::*;

use super::config::{ArchConfig, TrainConfig};
use super::params::Params;
use crate::kernels::{View, axpy, dot, matmul, top_k};
use crate::sae::ENCODE_BLOCK_ROWS;

/// Loss parts and statistics of one batch (losses as the optimiser sees them).
#[derive(Clone, Debug, Default)]
pub(crate) struct BatchStats {
    /// `(1/B)·Σ‖e‖²`
    pub mse_loss: f64,
    pub sparsity_loss: f64,
    pub aux_loss: f64,
    /// `Σ‖e‖²`
    pub sq_err: f64,
    /// `Σ‖x − x̄‖²` over the batch (denominator of the FVU).
    pub variance: f64,
    /// Active latents summed over rows.
    pub active: u64,
    /// Rows in which each latent was active.
    pub fired: Vec<u32>,
    /// Smallest selected activation (BatchTopK's threshold estimate); +∞ if none.
    pub min_active: f32,
}

impl BatchStats {
    pub(crate) fn loss(&self) -> f64 {
        self.mse_loss + self.sparsity_loss + self.aux_loss
    }
}

/// Computes the loss of batch `x` (already normalised, `[B, d_in]`) and writes every gradient
/// into `g` (overwriting it). `coeff` is the current sparsity coefficient, `dead` the AuxK
/// mask of latents considered dead.
pub(crate) fn loss_and_grads(
    p: &Params,
    cfg: &TrainConfig,
    x: &[f32],
    coeff: f32,
    dead: Option<&[bool]>,
    g: &mut Params,
) -> BatchStats {
    let mut stats = match cfg.architecture {
        ArchConfig::ReluL1 { .. } | ArchConfig::JumpRelu { .. } => dense(p, cfg, x, coeff, g),
        ArchConfig::TopK { .. } | ArchConfig::BatchTopK { .. } => sparse(p, cfg, x, dead, g),
    };
    stats.variance = variance(x, cfg.d_in);
    // x_c = x − b_dec: the encoder's part of ∂/∂b_dec is −W_enc·(Σ ∂z).
    let mut back = vec![0.0; cfg.d_in];
    matmul(
        &mut back,
        View::rows(&g.b_enc, 1, cfg.d_sae),
        View::rows(&p.w_enc_t, cfg.d_sae, cfg.d_in),
        false,
    );
    g.b_dec.iter_mut().zip(&back).for_each(|(g, b)| *g -= b);
    stats
}

fn variance(x: &[f32], d: usize) -> f64 {
    let n = (x.len() / d) as f64;
    let mut mean = vec![0.0f64; d];
    for r in x.chunks(d) {
        mean.iter_mut()
            .zip(r)
            .for_each(|(m, v)| *m += f64::from(*v));
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let total = crate::kernels::sum_sq(x);
    total - n * mean.iter().map(|m| m * m).sum::<f64>()
}

/// `dst[i] += Σ_r m[r, i]` over the rows of `m` (`[rows, cols]`), parallel over columns.
fn add_colsum(dst: &mut [f32], m: &[f32], cols: usize) {
    const COLS: usize = 512;
    dst.par_chunks_mut(COLS).enumerate().for_each(|(c, d)| {
        for row in m.chunks(cols) {
            axpy(d, 1.0, &row[c * COLS..c * COLS + d.len()]);
        }
    });
}

fn fill_zero(g: &mut Params) {
    for t in g.tensors_mut() {
        t.par_chunks_mut(1 << 16).for_each(|c| c.fill(0.0));
    }
}

/// ReLU+L1 and JumpReLU: dense products over blocks of rows, gradients accumulated.
fn dense(p: &Params, cfg: &TrainConfig, x: &[f32], coeff: f32, g: &mut Params) -> BatchStats {
    let (d, s) = (cfg.d_in, cfg.d_sae);
    let n = x.len() / d;
    let inv_b = 1.0 / n as f32;
    fill_zero(g);
    let jump = match cfg.architecture {
        ArchConfig::JumpRelu { bandwidth, .. } => Some(bandwidth),
        _ => None,
    };
    let theta: Vec<f32> = p.threshold.iter().map(|t| t.max(0.0)).collect();
    let norms: Vec<f32> = p.w_dec.chunks(d).map(|r| dot(r, r).sqrt()).collect();
    let mut colsum_f = vec![0.0f32; s];
    let mut fired = vec![0u32; s];
    let mut dtheta = vec![0.0f32; s];
    let mut sq_err = 0.0f64;
    let mut min_active = f32::INFINITY;
    for block in x.chunks(ENCODE_BLOCK_ROWS * d) {
        let c = block.len() / d;
        let xc: Vec<f32> = block
            .chunks(d)
            .flat_map(|r| r.iter().zip(&p.b_dec).map(|(a, b)| a - b))
            .collect();
        let mut z = p.b_enc.repeat(c);
        matmul(
            &mut z,
            View::rows(&xc, c, d),
            View::rows(&p.w_enc_t, s, d).t(),
            true,
        );
        let mut f = z.clone();
        f.par_chunks_mut(s).for_each(|row| match jump {
            Some(_) => row
                .iter_mut()
                .zip(&theta)
                .for_each(|(v, t)| *v = if *v > *t && *v > 0.0 { *v } else { 0.0 }),
            None => row.iter_mut().for_each(|v| *v = v.max(0.0)),
        });
        let mut gout = p.b_dec.repeat(c);
        matmul(
            &mut gout,
            View::rows(&f, c, s),
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
        sq_err += row_sq.iter().sum::<f64>();
        // ∂/∂f = G·W_decᵀ
        let mut gf = vec![0.0f32; c * s];
        matmul(
            &mut gf,
            View::rows(&gout, c, d),
            View::rows(&p.w_dec, s, d).t(),
            false,
        );
        // Column statistics (firing counts, Σf, θ's STE gradient) before ∂f becomes ∂z.
        const COLS: usize = 256;
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
            View::rows(&f, c, s).t(),
            View::rows(&gout, c, d),
            true,
        );
        matmul(
            &mut g.w_enc_t,
            View::rows(&gf, c, s).t(),
            View::rows(&xc, c, d),
            true,
        );
        add_colsum(&mut g.b_enc, &gf, s);
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
        None => {
            // ∂/∂W_dec,i of (λ/B)·(Σ_b f_bi)·‖W_dec,i‖.
            g.w_dec
                .par_chunks_mut(d)
                .zip(p.w_dec.par_chunks(d))
                .enumerate()
                .for_each(|(i, (g, w))| {
                    if norms[i] > 0.0 {
                        axpy(g, coeff * inv_b * colsum_f[i] / norms[i], w);
                    }
                });
            let total: f64 = colsum_f
                .iter()
                .zip(&norms)
                .map(|(c, n)| f64::from(*c) * f64::from(*n))
                .sum();
            f64::from(coeff) * total / n as f64
        }
    };
    BatchStats {
        mse_loss: sq_err / n as f64,
        sparsity_loss,
        sq_err,
        active,
        fired,
        min_active,
        ..Default::default()
    }
}

/// One active (row, latent) pair of the sparse path.
#[derive(Clone, Copy)]
struct Entry {
    latent: u32,
    act: f32,
    /// ∂loss/∂z for this pair, filled in after the decoder pass.
    dz: f32,
}

/// TopK and BatchTopK: dense encoder, sparse everything else.
fn sparse(
    p: &Params,
    cfg: &TrainConfig,
    x: &[f32],
    dead: Option<&[bool]>,
    g: &mut Params,
) -> BatchStats {
    let (d, s) = (cfg.d_in, cfg.d_sae);
    let n = x.len() / d;
    let inv_b = 1.0 / n as f32;
    let xc: Vec<f32> = x
        .par_chunks(d)
        .flat_map_iter(|r| r.iter().zip(&p.b_dec).map(|(a, b)| a - b))
        .collect();
    let n_dead = dead.map_or(0, |m| m.iter().filter(|&&v| v).count());
    let auxk = cfg.auxk().filter(|_| n_dead > 0);
    let (k, batch) = match cfg.architecture {
        ArchConfig::TopK { k, .. } => (k, false),
        ArchConfig::BatchTopK { k, .. } => (k, true),
        _ => unreachable!("sparse path is only for TopK and BatchTopK"),
    };
    // Per-row candidates: BatchTopK keeps more than k per row; rows whose whole candidate
    // list clears the batch threshold are re-encoded below, so the selection is exact.
    let per_row = if batch { (4 * k).max(k + 16).min(s) } else { k };
    let mut main: Vec<Vec<(u32, f32)>> = Vec::with_capacity(n);
    let mut aux: Vec<Vec<(u32, f32)>> = Vec::with_capacity(n);
    for (bi, block) in xc.chunks(ENCODE_BLOCK_ROWS * d).enumerate() {
        let c = block.len() / d;
        let z = encode_block(p, block, c, s, d);
        let sel: Vec<_> = z
            .par_chunks(s)
            .map(|row| {
                let mut m = Vec::with_capacity(per_row);
                top_k(row, per_row, None, &mut m);
                m.retain(|e| e.1 > 0.0);
                let mut a = Vec::new();
                if let (Some((k_aux, _)), Some(mask)) = (auxk, dead) {
                    top_k(row, k_aux.min(n_dead), Some(mask), &mut a);
                    a.retain(|e| e.1 > 0.0);
                }
                (m, a)
            })
            .collect();
        debug_assert_eq!(main.len(), bi * ENCODE_BLOCK_ROWS);
        for (m, a) in sel {
            main.push(m);
            aux.push(a);
        }
    }
    if batch {
        select_batch_top_k(p, &xc, &mut main, k * n, per_row, s, d);
    }
    let to_entries = |rows: Vec<Vec<(u32, f32)>>| -> Vec<Vec<Entry>> {
        rows.into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|(latent, act)| Entry {
                        latent,
                        act,
                        dz: 0.0,
                    })
                    .collect()
            })
            .collect()
    };
    let mut main = to_entries(main);
    let mut aux = to_entries(aux);

    // Decoder: x̂ = b_dec + Σ f_i·W_dec,i; G = (2/B)(x̂ − x); ∂z_i = G·W_dec,i.
    let w_dec = &p.w_dec;
    let decode = |y: &mut [f32], entries: &[Entry]| {
        for e in entries {
            let i = e.latent as usize;
            axpy(y, e.act, &w_dec[i * d..(i + 1) * d]);
        }
    };
    let mut gout = p.b_dec.repeat(n);
    let row_sq: Vec<f64> = gout
        .par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .zip(main.par_iter_mut())
        .map(|((y, x), entries)| {
            decode(y, entries);
            let mut sq = 0.0f64;
            for (y, x) in y.iter_mut().zip(x) {
                *y -= x;
                sq += f64::from(*y) * f64::from(*y);
                *y *= 2.0 * inv_b;
            }
            for e in entries.iter_mut() {
                let i = e.latent as usize;
                e.dz = dot(y, &w_dec[i * d..(i + 1) * d]);
            }
            sq
        })
        .collect();
    let sq_err: f64 = row_sq.iter().sum();

    // AuxK (Gao et al.): dead latents reconstruct the residual r = x − x̂ (no bias, no
    // gradient through r): L_aux = α·scale·(1/B)·Σ‖ê − r‖², scale = min(n_dead / k_aux, 1).
    let mut gaux = Vec::new();
    let mut aux_loss = 0.0f64;
    if let Some((k_aux, alpha)) = auxk {
        let scale = (n_dead as f32 / k_aux as f32).min(1.0);
        let w = alpha * scale;
        gaux = vec![0.0f32; n * d];
        let row_aux: Vec<f64> = gaux
            .par_chunks_mut(d)
            .zip(gout.par_chunks(d))
            .zip(aux.par_iter_mut())
            .map(|((ga, ge), entries)| {
                decode(ga, entries);
                let mut sq = 0.0f64;
                for (a, ge) in ga.iter_mut().zip(ge) {
                    // ge = (2/B)·e with e = −r, so ê − r = ê + e.
                    let diff = *a + ge * 0.5 / inv_b;
                    sq += f64::from(diff) * f64::from(diff);
                    *a = 2.0 * w * inv_b * diff;
                }
                for e in entries.iter_mut() {
                    let i = e.latent as usize;
                    e.dz = dot(ga, &w_dec[i * d..(i + 1) * d]);
                }
                sq
            })
            .collect();
        aux_loss = f64::from(w) * row_aux.iter().sum::<f64>() / n as f64;
    }

    // Group by latent (counting sort, rows in order) and write each latent's gradient rows.
    let mut count = vec![0usize; s + 1];
    for e in main.iter().chain(&aux).flatten() {
        count[e.latent as usize + 1] += 1;
    }
    let mut fired = vec![0u32; s];
    for e in main.iter().flatten() {
        fired[e.latent as usize] += 1;
    }
    for i in 0..s {
        count[i + 1] += count[i];
    }
    let offsets = count.clone();
    // (row, act, dz, from the aux set)
    let mut grouped = vec![(0u32, 0.0f32, 0.0f32, false); count[s]];
    for (set, rows) in [(false, &main), (true, &aux)] {
        for (r, entries) in rows.iter().enumerate() {
            for e in entries {
                let slot = &mut count[e.latent as usize];
                grouped[*slot] = (r as u32, e.act, e.dz, set);
                *slot += 1;
            }
        }
    }
    g.w_dec
        .par_chunks_mut(d)
        .zip(g.w_enc_t.par_chunks_mut(d))
        .zip(g.b_enc.par_iter_mut())
        .enumerate()
        .for_each(|(i, ((gd, ge), gb))| {
            gd.fill(0.0);
            ge.fill(0.0);
            *gb = 0.0;
            for &(r, act, dz, is_aux) in &grouped[offsets[i]..offsets[i + 1]] {
                let r = r as usize;
                let out = if is_aux { &gaux } else { &gout };
                axpy(gd, act, &out[r * d..(r + 1) * d]);
                axpy(ge, dz, &xc[r * d..(r + 1) * d]);
                *gb += dz;
            }
        });
    g.b_dec.fill(0.0);
    add_colsum(&mut g.b_dec, &gout, d);
    let active = main.iter().map(|r| r.len() as u64).sum();
    let min_active = main
        .iter()
        .flatten()
        .map(|e| e.act)
        .fold(f32::INFINITY, f32::min);
    BatchStats {
        mse_loss: sq_err / n as f64,
        aux_loss,
        sq_err,
        active,
        fired,
        min_active,
        ..Default::default()
    }
}

/// Pre-activations `[rows, d_sae]` of centred rows.
fn encode_block(p: &Params, xc: &[f32], rows: usize, s: usize, d: usize) -> Vec<f32> {
    let mut z = p.b_enc.repeat(rows);
    matmul(
        &mut z,
        View::rows(xc, rows, d),
        View::rows(&p.w_enc_t, s, d).t(),
        true,
    );
    z
}

/// Keeps, over the whole batch, the `budget` largest positive activations (ties at the
/// threshold are all kept). Rows whose candidate list was full and entirely above the
/// threshold may hold more: they are re-encoded and all their entries above it taken.
fn select_batch_top_k(
    p: &Params,
    xc: &[f32],
    rows: &mut [Vec<(u32, f32)>],
    budget: usize,
    per_row: usize,
    s: usize,
    d: usize,
) {
    let mut all: Vec<f32> = rows.iter().flatten().map(|e| e.1).collect();
    if all.len() <= budget {
        return;
    }
    let (_, tau, _) = all.select_nth_unstable_by(budget - 1, |a, b| b.total_cmp(a));
    let tau = *tau;
    for (r, row) in rows.iter_mut().enumerate() {
        let full = row.len() == per_row && per_row < s;
        if full && row.iter().all(|e| e.1 >= tau) {
            let z = encode_block(p, &xc[r * d..(r + 1) * d], 1, s, d);
            *row = z
                .iter()
                .enumerate()
                .filter(|(_, v)| **v >= tau && **v > 0.0)
                .map(|(i, v)| (i as u32, *v))
                .collect();
        } else {
            row.retain(|e| e.1 >= tau);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Analytic gradients against central finite differences of the loss itself. The losses
    //! are piecewise quadratic in each weight (for a fixed set of active latents), so central
    //! differences are exact up to rounding as long as no latent switches on or off; the
    //! shapes are tiny and the step small so that none does.
    // Index loops mirror the formulas they check.
    #![allow(clippy::needless_range_loop)]
    use super::*;
    use crate::train::config::{AuxKConfig, TrainConfig};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const D: usize = 6;
    const S: usize = 10;
    const B: usize = 7;

    fn setup(arch: ArchConfig, seed: u64) -> (TrainConfig, Params, Vec<f32>) {
        let cfg = TrainConfig::new(D, S, arch, 10);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let jump = matches!(cfg.architecture, ArchConfig::JumpRelu { .. });
        let mut p = Params::zeros(D, S, jump);
        for t in p.tensors_mut() {
            t.iter_mut().for_each(|v| *v = rng.random_range(-0.6..0.6));
        }
        p.threshold.iter_mut().for_each(|t| *t = t.abs() + 0.05);
        let x = (0..B * D).map(|_| rng.random_range(-1.5..1.5)).collect();
        (cfg, p, x)
    }

    fn loss(p: &Params, cfg: &TrainConfig, x: &[f32], coeff: f32, dead: Option<&[bool]>) -> f64 {
        let mut g = Params::zeros(D, S, !p.threshold.is_empty());
        loss_and_grads(p, cfg, x, coeff, dead, &mut g).loss()
    }

    /// Checks every weight and bias (not the threshold, whose gradient is a pseudo-gradient).
    fn check(arch: ArchConfig, coeff: f32, dead: Option<&[bool]>) {
        for seed in 0..3 {
            let (cfg, p, x) = setup(arch.clone(), seed);
            let mut g = Params::zeros(D, S, !p.threshold.is_empty());
            let stats = loss_and_grads(&p, &cfg, &x, coeff, dead, &mut g);
            assert!(stats.loss().is_finite());
            let h = 1e-3f32;
            for (ti, name) in ["w_enc_t", "b_enc", "w_dec", "b_dec"].iter().enumerate() {
                for j in 0..p.tensors()[ti].len() {
                    let mut plus = p.clone();
                    plus.tensors_mut()[ti][j] += h;
                    let mut minus = p.clone();
                    minus.tensors_mut()[ti][j] -= h;
                    let (lp, l0, lm) = (
                        loss(&plus, &cfg, &x, coeff, dead),
                        stats.loss(),
                        loss(&minus, &cfg, &x, coeff, dead),
                    );
                    let h = f64::from(h);
                    let central = (lp - lm) / (2.0 * h);
                    let an = f64::from(g.tensors()[ti][j]);
                    let close = |fd: f64, tol: f64| (fd - an).abs() <= tol * (1.0 + an.abs());
                    // A latent switching on or off inside [−h, h] spoils the central difference
                    // but leaves one of the one-sided ones clean (first-order accurate).
                    let ok = close(central, 2e-3)
                        || close((lp - l0) / h, 1e-2)
                        || close((l0 - lm) / h, 1e-2);
                    assert!(
                        ok,
                        "{arch:?} seed {seed}: {name}[{j}] analytic {an} vs finite differences \
                         {central} / {} / {}",
                        (lp - l0) / h,
                        (l0 - lm) / h
                    );
                }
            }
        }
    }

    #[test]
    fn relu_l1_gradients_match_finite_differences() {
        let arch = ArchConfig::ReluL1 {
            l1_coeff: 0.7,
            l1_warmup_fraction: 0.0,
        };
        check(arch, 0.7, None);
    }

    #[test]
    fn topk_gradients_match_finite_differences_with_auxk() {
        let arch = ArchConfig::TopK {
            k: 3,
            aux: AuxKConfig {
                coeff: 0.5,
                k_aux: Some(2),
            },
        };
        check(arch, 0.0, None);
    }

    /// AuxK's target, the residual, carries no gradient (`e.detach()` in sparsify), so the
    /// finite differences are taken of an independent plain-loop implementation of the loss
    /// with the residual frozen at the unperturbed parameters.
    #[test]
    fn auxk_gradients_match_finite_differences_of_a_reference() {
        let (k, k_aux, alpha) = (3usize, 2usize, 0.5f32);
        let arch = ArchConfig::TopK {
            k,
            aux: AuxKConfig {
                coeff: alpha,
                k_aux: Some(k_aux),
            },
        };
        let dead: Vec<bool> = (0..S).map(|i| i % 3 == 0).collect();
        let n_dead = dead.iter().filter(|&&d| d).count();
        let scale = (n_dead as f64 / k_aux as f64).min(1.0);
        // Returns (loss, residual) with the aux target `r0` when given.
        let reference = |p: &Params, x: &[f32], r0: Option<&[f64]>| -> (f64, Vec<f64>) {
            let (mut total, mut resid) = (0.0, Vec::new());
            for b in 0..B {
                let xb = &x[b * D..(b + 1) * D];
                let z: Vec<f64> = (0..S)
                    .map(|i| {
                        f64::from(p.b_enc[i])
                            + (0..D)
                                .map(|r| {
                                    f64::from(xb[r] - p.b_dec[r]) * f64::from(p.w_enc_t[i * D + r])
                                })
                                .sum::<f64>()
                    })
                    .collect();
                let pick = |allowed: &dyn Fn(usize) -> bool, n: usize| -> Vec<usize> {
                    let mut idx: Vec<usize> = (0..S).filter(|&i| allowed(i)).collect();
                    idx.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
                    idx.truncate(n);
                    idx.retain(|&i| z[i] > 0.0);
                    idx
                };
                let decode = |set: &[usize], bias: bool| -> Vec<f64> {
                    (0..D)
                        .map(|r| {
                            let b0 = if bias { f64::from(p.b_dec[r]) } else { 0.0 };
                            b0 + set
                                .iter()
                                .map(|&i| z[i] * f64::from(p.w_dec[i * D + r]))
                                .sum::<f64>()
                        })
                        .collect()
                };
                let xhat = decode(&pick(&|_| true, k), true);
                let e: Vec<f64> = (0..D).map(|r| xhat[r] - f64::from(xb[r])).collect();
                total += e.iter().map(|v| v * v).sum::<f64>() / B as f64;
                let r: Vec<f64> = match r0 {
                    Some(r0) => r0[b * D..(b + 1) * D].to_vec(),
                    None => e.iter().map(|v| -v).collect(),
                };
                let ehat = decode(&pick(&|i| dead[i], k_aux), false);
                let aux: f64 = (0..D).map(|i| (ehat[i] - r[i]).powi(2)).sum();
                total += f64::from(alpha) * scale * aux / B as f64;
                resid.extend(r);
            }
            (total, resid)
        };
        for seed in 0..3 {
            let (cfg, p, x) = setup(arch.clone(), seed);
            let mut g = Params::zeros(D, S, false);
            let stats = loss_and_grads(&p, &cfg, &x, 0.0, Some(&dead), &mut g);
            let (l0, r0) = reference(&p, &x, None);
            assert!(
                (l0 - stats.loss()).abs() < 1e-4 * (1.0 + l0),
                "{l0} vs {}",
                stats.loss()
            );
            assert!(
                stats.aux_loss > 0.0,
                "seed {seed}: no dead latent was selected"
            );
            let h = 1e-3;
            for ti in 0..4 {
                for j in 0..p.tensors()[ti].len() {
                    let mut plus = p.clone();
                    plus.tensors_mut()[ti][j] += h;
                    let mut minus = p.clone();
                    minus.tensors_mut()[ti][j] -= h;
                    let lp = reference(&plus, &x, Some(&r0)).0;
                    let lm = reference(&minus, &x, Some(&r0)).0;
                    let an = f64::from(g.tensors()[ti][j]);
                    let h = f64::from(h);
                    let close = |fd: f64, tol: f64| (fd - an).abs() <= tol * (1.0 + an.abs());
                    assert!(
                        close((lp - lm) / (2.0 * h), 1e-3)
                            || close((lp - l0) / h, 1e-2)
                            || close((l0 - lm) / h, 1e-2),
                        "seed {seed}: tensor {ti}[{j}] analytic {an} vs {}",
                        (lp - lm) / (2.0 * h)
                    );
                }
            }
        }
    }

    #[test]
    fn batchtopk_gradients_match_finite_differences() {
        let arch = ArchConfig::BatchTopK {
            k: 2,
            threshold_lr: 0.01,
            aux: AuxKConfig::default(),
        };
        check(arch, 0.0, None);
    }

    #[test]
    fn jumprelu_gradients_match_finite_differences_and_threshold_uses_the_ste() {
        let (eps, lambda) = (0.3f32, 0.4f32);
        let arch = ArchConfig::JumpRelu {
            l0_coeff: lambda,
            bandwidth: eps,
            init_threshold: 0.1,
            l0_warmup_fraction: 0.0,
        };
        check(arch.clone(), lambda, None);
        // Threshold: −(θ/ε)·Σ_b ∂L/∂f_bi·K − (λ/B)(1/ε)·Σ_b K, K = [|z − θ| < ε/2].
        let (cfg, p, x) = setup(arch, 11);
        let mut g = Params::zeros(D, S, true);
        loss_and_grads(&p, &cfg, &x, lambda, None, &mut g);
        let mut want = [0.0f64; S];
        for b in 0..B {
            let xc: Vec<f32> = (0..D).map(|r| x[b * D + r] - p.b_dec[r]).collect();
            let z: Vec<f32> = (0..S)
                .map(|i| p.b_enc[i] + dot(&xc, &p.w_enc_t[i * D..(i + 1) * D]))
                .collect();
            let mut e = p.b_dec.clone();
            for i in 0..S {
                if z[i] > p.threshold[i] {
                    axpy(&mut e, z[i], &p.w_dec[i * D..(i + 1) * D]);
                }
            }
            (0..D).for_each(|r| e[r] -= x[b * D + r]);
            for i in 0..S {
                let t = p.threshold[i];
                if (z[i] - t).abs() < eps / 2.0 {
                    let df = 2.0 / B as f32 * dot(&e, &p.w_dec[i * D..(i + 1) * D]);
                    want[i] += f64::from(-(t / eps) * df - lambda / B as f32 / eps);
                }
            }
        }
        assert!(
            want.iter().any(|w| *w != 0.0),
            "no latent near its threshold"
        );
        for i in 0..S {
            assert!(
                (f64::from(g.threshold[i]) - want[i]).abs() < 1e-4,
                "threshold[{i}]"
            );
        }
    }
}
