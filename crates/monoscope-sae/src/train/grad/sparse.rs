//! The sparse path: the encoder is the one dense product; the decoder, ∂f and both weight
//! gradients touch only the (row, latent) pairs that are active. Gradients are grouped by
//! latent so that each latent's rows are written by one thread in a fixed order
//! (deterministic, no atomics).

use rayon::prelude::*;

use super::{
    BatchStats, SPARSE_BLOCK_BYTES, Scratch, add_colsum, blocks, decoder_norms, encode_unbiased,
    l1_penalty,
};
use crate::kernels::{axpy, dot, positive, prefetch, top_k};
use crate::sae::ENCODE_BLOCK_ROWS;
use crate::train::config::TrainConfig;
use crate::train::params::Params;

/// How the active latents of a row are chosen.
#[derive(Clone, Copy, Debug)]
pub(super) enum Select {
    /// The k largest positive pre-activations (TopK).
    TopK(usize),
    /// The k·B largest positive pre-activations of the batch (BatchTopK).
    BatchTopK(usize),
    /// Every positive pre-activation (ReLU; `l1` is then the penalty's coefficient).
    Positive,
}

/// One active (row, latent) pair.
#[derive(Clone, Copy)]
struct Entry {
    latent: u32,
    act: f32,
    /// ∂loss/∂z for this pair, filled in after the decoder pass.
    dz: f32,
}

/// `probed`: rows whose unbiased pre-activations `scratch.z` already holds. `l1`: ReLU+L1's
/// current coefficient (0 for the other architectures).
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    p: &Params,
    cfg: &TrainConfig,
    x: &[f32],
    select: Select,
    l1: f32,
    dead: Option<&[bool]>,
    probed: usize,
    scratch: &mut Scratch,
    g: &mut Params,
) -> BatchStats {
    let (d, s) = (cfg.d_in, cfg.d_sae);
    let n = x.len() / d;
    let inv_b = 1.0 / n as f32;
    let n_dead = dead.map_or(0, |m| m.iter().filter(|&&v| v).count());
    let auxk = cfg.auxk().filter(|_| n_dead > 0);
    // BatchTopK keeps more than k candidates per row; rows whose whole candidate list clears
    // the batch threshold are re-encoded below, so the selection is exact.
    let per_row = match select {
        Select::TopK(k) => k,
        Select::BatchTopK(k) => (4 * k).max(k + 16).min(s),
        Select::Positive => s,
    };
    let block_rows = (SPARSE_BLOCK_BYTES / (4 * s)).max(ENCODE_BLOCK_ROWS);
    let mut main: Vec<Vec<(u32, f32)>> = Vec::with_capacity(n);
    let mut aux: Vec<Vec<(u32, f32)>> = Vec::with_capacity(n);
    let xc = &scratch.xc;
    for rows in blocks(n, probed, block_rows) {
        let c = rows.len();
        if rows.start > 0 || probed == 0 {
            encode_unbiased(
                p,
                &xc[rows.start * d..rows.end * d],
                c,
                s,
                d,
                &mut scratch.z,
            );
        }
        let sel: Vec<_> = scratch.z[..c * s]
            .par_chunks(s)
            .map(|row| {
                let mut m = Vec::new();
                match select {
                    Select::Positive => positive(row, &p.b_enc, &mut m),
                    Select::TopK(_) | Select::BatchTopK(_) => {
                        top_k(row, &p.b_enc, per_row, None, &mut m);
                        m.retain(|e| e.1 > 0.0);
                    }
                }
                let mut a = Vec::new();
                if let (Some((k_aux, _)), Some(mask)) = (auxk, dead) {
                    top_k(row, &p.b_enc, k_aux.min(n_dead), Some(mask), &mut a);
                    a.retain(|e| e.1 > 0.0);
                }
                (m, a)
            })
            .collect();
        debug_assert_eq!(main.len(), rows.start);
        for (m, a) in sel {
            main.push(m);
            aux.push(a);
        }
    }
    if let Select::BatchTopK(k) = select {
        select_batch_top_k(p, xc, &mut main, k * n, per_row, s, d);
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
    let relu = matches!(select, Select::Positive);
    let norms = if relu {
        decoder_norms(p, d)
    } else {
        Vec::new()
    };

    // Decoder: x̂ = b_dec + Σ f_i·W_dec,i; G = (2/B)(x̂ − x); ∂z_i = G·W_dec,i (+ the L1
    // term (λ/B)·‖W_dec,i‖ for ReLU, whose selected pairs all have f > 0).
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
            // Four partial sums: one f64 sum would be a chain of dependent additions.
            let mut sq = [0.0f64; 4];
            for (y, x) in y.chunks_mut(4).zip(x.chunks(4)) {
                for ((y, x), sq) in y.iter_mut().zip(x).zip(&mut sq) {
                    *y -= x;
                    *sq += f64::from(*y) * f64::from(*y);
                    *y *= 2.0 * inv_b;
                }
            }
            let sq = sq.iter().sum::<f64>();
            for e in entries.iter_mut() {
                let i = e.latent as usize;
                e.dz = dot(y, &w_dec[i * d..(i + 1) * d]);
                if relu {
                    e.dz += l1 * inv_b * norms[i];
                }
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
    let colsum_f: Vec<f32> = g
        .w_dec
        .par_chunks_mut(d)
        .zip(g.w_enc_t.par_chunks_mut(d))
        .zip(g.b_enc.par_iter_mut())
        .enumerate()
        .map(|(i, ((gd, ge), gb))| {
            gd.fill(0.0);
            ge.fill(0.0);
            *gb = 0.0;
            let mut sum_f = 0.0f32;
            let mine = &grouped[offsets[i]..offsets[i + 1]];
            for (j, &(r, act, dz, is_aux)) in mine.iter().enumerate() {
                // The next pair's rows lie anywhere in a few MiB: ask for them early.
                if let Some(&(next, _, _, next_aux)) = mine.get(j + 1) {
                    let next = next as usize;
                    let out = if next_aux { &gaux } else { &gout };
                    prefetch(&out[next * d..(next + 1) * d]);
                    prefetch(&xc[next * d..(next + 1) * d]);
                }
                let r = r as usize;
                let out = if is_aux { &gaux } else { &gout };
                axpy(gd, act, &out[r * d..(r + 1) * d]);
                axpy(ge, dz, &xc[r * d..(r + 1) * d]);
                *gb += dz;
                if !is_aux {
                    sum_f += act;
                }
            }
            sum_f
        })
        .collect();
    g.b_dec.fill(0.0);
    add_colsum(&mut g.b_dec, &gout, d);
    let sparsity_loss = match relu {
        true => l1_penalty(g, p, d, l1, n, &colsum_f, &norms),
        false => 0.0,
    };
    let active = main.iter().map(|r| r.len() as u64).sum();
    let min_active = main
        .iter()
        .flatten()
        .map(|e| e.act)
        .fold(f32::INFINITY, f32::min);
    BatchStats {
        mse_loss: sq_err / n as f64,
        sparsity_loss,
        aux_loss,
        sq_err,
        row_sq_err: row_sq,
        active,
        fired,
        min_active,
        ..Default::default()
    }
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
    let mut z = Vec::new();
    for (r, row) in rows.iter_mut().enumerate() {
        let full = row.len() == per_row && per_row < s;
        if full && row.iter().all(|e| e.1 >= tau) {
            encode_unbiased(p, &xc[r * d..(r + 1) * d], 1, s, d, &mut z);
            row.clear();
            positive(&z, &p.b_enc, row);
            row.retain(|e| e.1 >= tau);
        } else {
            row.retain(|e| e.1 >= tau);
        }
    }
}
