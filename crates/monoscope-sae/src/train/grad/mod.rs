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
//! Two paths compute them. [`dense`] runs five `gemm` products over blocks of rows; [`sparse`]
//! runs the one dense product it cannot avoid (the encoder) and does the rest as sparse-dense
//! products over the active latents. TopK and BatchTopK always take the sparse path; ReLU+L1
//! takes it once a probe block shows the codes are sparse enough ([`SPARSE_MAX_DENSITY`]),
//! which is most of a real run (it starts with half the latents active and ends with a few
//! hundred of thousands); JumpReLU stays dense.

mod dense;
mod sparse;
#[cfg(test)]
mod tests;

use std::ops::Range;

use rayon::prelude::*;

use super::config::{ArchConfig, TrainConfig};
use super::params::Params;
use crate::kernels::{View, axpy, count_positive, dot, matmul};
use crate::sae::ENCODE_BLOCK_ROWS;

/// Fraction of active (row, latent) pairs at or below which ReLU+L1 takes the sparse path.
/// The sparse kernels do `4·d_in` multiply-adds per active pair on scattered rows at about
/// 3 GFLOP/s here; the four products they replace cost `8·d_in·d_sae` per row at about
/// 150 GFLOP/s; the two are equal near a density of 4%.
pub(crate) const SPARSE_MAX_DENSITY: f64 = 0.05;

/// Budget of the sparse path's pre-activation buffer. Fewer, larger encoder products pack
/// `W_enc` fewer times per batch (`gemm` packs its right operand once per call).
const SPARSE_BLOCK_BYTES: usize = 128 << 20;

/// Loss parts and statistics of one batch (losses as the optimiser sees them).
#[derive(Clone, Debug, Default)]
pub(crate) struct BatchStats {
    /// `(1/B)·Σ‖e‖²`
    pub mse_loss: f64,
    pub sparsity_loss: f64,
    pub aux_loss: f64,
    /// `Σ‖e‖²`
    pub sq_err: f64,
    /// `‖e‖²` of each row.
    pub row_sq_err: Vec<f64>,
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

/// Buffers reused from step to step: allocating them afresh costs a page fault per 4 KiB.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// Centred input `x − b_dec`, `[B, d_in]`.
    xc: Vec<f32>,
    /// Pre-activations of one block of rows.
    z: Vec<f32>,
    /// The dense path's activations and their gradients for one block.
    f: Vec<f32>,
    gf: Vec<f32>,
}

/// Which path computes the gradients; `Auto` chooses as described in the module docs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Path {
    Auto,
    #[cfg(test)]
    Dense,
    #[cfg(test)]
    Sparse,
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
    scratch: &mut Scratch,
) -> BatchStats {
    loss_and_grads_on(p, cfg, x, coeff, dead, g, scratch, Path::Auto)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn loss_and_grads_on(
    p: &Params,
    cfg: &TrainConfig,
    x: &[f32],
    coeff: f32,
    dead: Option<&[bool]>,
    g: &mut Params,
    scratch: &mut Scratch,
    path: Path,
) -> BatchStats {
    let (d, s) = (cfg.d_in, cfg.d_sae);
    let n = x.len() / d;
    scratch.xc.resize(x.len(), 0.0);
    scratch
        .xc
        .par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(c, x)| {
            c.iter_mut()
                .zip(x)
                .zip(&p.b_dec)
                .for_each(|((c, x), b)| *c = x - b)
        });
    let mut stats = match &cfg.architecture {
        ArchConfig::TopK { k, .. } | ArchConfig::BatchTopK { k, .. } => {
            let select = match cfg.architecture {
                ArchConfig::TopK { .. } => sparse::Select::TopK(*k),
                _ => sparse::Select::BatchTopK(*k),
            };
            sparse::run(p, cfg, x, select, 0.0, dead, 0, scratch, g)
        }
        ArchConfig::JumpRelu { .. } => dense::run(p, cfg, x, coeff, 0, scratch, g),
        ArchConfig::ReluL1 { .. } => {
            // Probe: the first block's pre-activations, which either path then uses.
            let probe = ENCODE_BLOCK_ROWS.min(n);
            encode_unbiased(p, &scratch.xc[..probe * d], probe, s, d, &mut scratch.z);
            let density =
                count_positive(&scratch.z[..probe * s], &p.b_enc) as f64 / (probe * s) as f64;
            let sparse = match path {
                Path::Auto => density <= SPARSE_MAX_DENSITY,
                #[cfg(test)]
                Path::Dense => false,
                #[cfg(test)]
                Path::Sparse => true,
            };
            if sparse {
                sparse::run(
                    p,
                    cfg,
                    x,
                    sparse::Select::Positive,
                    coeff,
                    None,
                    probe,
                    scratch,
                    g,
                )
            } else {
                dense::run(p, cfg, x, coeff, probe, scratch, g)
            }
        }
    };
    stats.variance = variance(x, d);
    // x_c = x − b_dec: the encoder's part of ∂/∂b_dec is −W_enc·(Σ ∂z).
    let mut back = vec![0.0; d];
    matmul(
        &mut back,
        View::rows(&g.b_enc, 1, s),
        View::rows(&p.w_enc_t, s, d),
        false,
    );
    g.b_dec.iter_mut().zip(&back).for_each(|(g, b)| *g -= b);
    stats
}

/// Pre-activations `[rows, d_sae]` of centred rows, without `b_enc` (the consumers add it as
/// they read, which saves a pass that writes it into every row).
fn encode_unbiased(p: &Params, xc: &[f32], rows: usize, s: usize, d: usize, z: &mut Vec<f32>) {
    z.resize(rows * s, 0.0);
    matmul(
        &mut z[..rows * s],
        View::rows(xc, rows, d),
        View::rows(&p.w_enc_t, s, d).t(),
        false,
    );
}

/// Row ranges of a batch of `n` rows: `0..probed` first (its pre-activations are already in
/// the scratch buffer) when `probed > 0`, then blocks of `rows`.
fn blocks(n: usize, probed: usize, rows: usize) -> impl Iterator<Item = Range<usize>> {
    let first = (probed > 0).then_some(0..probed.min(n));
    let rest = (probed.min(n)..n)
        .step_by(rows.max(1))
        .map(move |a| a..(a + rows.max(1)).min(n));
    first.into_iter().chain(rest)
}

/// `Σ‖x − x̄‖²` of the rows of `x` (also the device engine's, which computes it here).
pub(crate) fn variance(x: &[f32], d: usize) -> f64 {
    const ROWS: usize = 256;
    let n = (x.len() / d) as f64;
    // Column sums over fixed blocks of rows, added in block order (deterministic).
    let partial: Vec<Vec<f64>> = x
        .par_chunks(ROWS * d)
        .map(|block| {
            let mut sum = vec![0.0f64; d];
            for r in block.chunks(d) {
                sum.iter_mut().zip(r).for_each(|(m, v)| *m += f64::from(*v));
            }
            sum
        })
        .collect();
    let mut mean = vec![0.0f64; d];
    for sum in partial {
        mean.iter_mut().zip(sum).for_each(|(m, s)| *m += s);
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

/// `‖W_dec,i‖` of every latent (ReLU+L1's penalty weights).
fn decoder_norms(p: &Params, d: usize) -> Vec<f32> {
    p.w_dec.par_chunks(d).map(|r| dot(r, r).sqrt()).collect()
}

/// ReLU+L1's penalty `(λ/B)·Σ_i (Σ_b f_bi)·‖W_dec,i‖`, returned, and its pull on the decoder
/// norms, `∂/∂W_dec,i += (λ/B)·(Σ_b f_bi)·W_dec,i/‖W_dec,i‖`, added to `g`.
fn l1_penalty(
    g: &mut Params,
    p: &Params,
    d: usize,
    coeff: f32,
    n: usize,
    colsum_f: &[f32],
    norms: &[f32],
) -> f64 {
    let inv_b = 1.0 / n as f32;
    g.w_dec
        .par_chunks_mut(d)
        .zip(p.w_dec.par_chunks(d))
        .enumerate()
        .for_each(|(i, (g, w))| {
            if norms[i] > 0.0 && colsum_f[i] != 0.0 {
                axpy(g, coeff * inv_b * colsum_f[i] / norms[i], w);
            }
        });
    let total: f64 = colsum_f
        .iter()
        .zip(norms)
        .map(|(c, n)| f64::from(*c) * f64::from(*n))
        .sum();
    f64::from(coeff) * total / n as f64
}
