//! Evaluation on held-out rows (no model needed): L0, MSE, FVU, dead and dense fractions, the
//! log10 feature-density histogram, per-feature firing frequency and maximum activation.
//!
//! The model-level metrics (CE loss with the SAE spliced in, `ce_loss_score`, KL) need the
//! language model: the train stage implements [`SpliceEvaluator`] with it and attaches its
//! [`SpliceReport`] to the [`EvalReport`] (or says in `splice_skipped` why there is none).

use crate::{Sae, SaeError};

pub use monoscope_artifacts::train::{
    DensityHistogram, EvalReport, MassiveRows, SpliceReport, SpliceWithoutMassive,
};

/// Runs the language model with the SAE's reconstruction substituted at its hook point.
/// Implemented where the model runtime is (`monoscope_train::ModelSplice`); this crate only
/// defines the shape of the answer.
pub trait SpliceEvaluator {
    fn evaluate_splice(&mut self, sae: &Sae) -> Result<SpliceReport, SaeError>;
}

/// Smallest log10 frequency in the histogram (frequencies below land in the first bin).
pub const LOG10_MIN: f64 = -8.0;
const BINS: usize = 32;

/// Streaming evaluation: add batches of raw rows, then [`Evaluator::finish`].
#[derive(Debug)]
pub struct Evaluator<'a> {
    sae: &'a Sae,
    dense_threshold: f64,
    tokens: u64,
    active: u64,
    sq_err: f64,
    sum: Vec<f64>,
    sum_sq: f64,
    fired: Vec<u64>,
    max_act: Vec<f32>,
    massive: Option<MassiveSums>,
}

/// Running sums for [`MassiveRows`].
#[derive(Debug)]
struct MassiveSums {
    threshold: f32,
    rows: u64,
    sq_norm: f64,
    sq_err: f64,
    kept_sum: Vec<f64>,
    kept_sum_sq: f64,
    kept_sq_err: f64,
    kept_active: u64,
}

impl<'a> Evaluator<'a> {
    /// `dense_threshold`: a feature firing on more than this fraction of tokens is dense.
    pub fn new(sae: &'a Sae, dense_threshold: f64) -> Self {
        Evaluator {
            sae,
            dense_threshold,
            tokens: 0,
            active: 0,
            sq_err: 0.0,
            sum: vec![0.0; sae.d_in],
            sum_sq: 0.0,
            fired: vec![0; sae.d_sae],
            max_act: vec![0.0; sae.d_sae],
            massive: None,
        }
    }

    /// Also reports the metrics without the rows whose raw norm is above `threshold`.
    pub fn with_massive_threshold(mut self, threshold: f32) -> Self {
        self.massive = Some(MassiveSums {
            threshold,
            rows: 0,
            sq_norm: 0.0,
            sq_err: 0.0,
            kept_sum: vec![0.0; self.sae.d_in],
            kept_sum_sq: 0.0,
            kept_sq_err: 0.0,
            kept_active: 0,
        });
        self
    }

    /// Adds a batch of raw rows (`[n, d_in]`).
    pub fn add(&mut self, rows: &[f32]) -> Result<(), SaeError> {
        let codes = self.sae.encode_sparse(rows)?;
        let recon = self.sae.decode_sparse(&codes);
        let d = self.sae.d_in;
        for (r, (x, y)) in rows.chunks(d).zip(recon.chunks(d)).enumerate() {
            let (mut row_sq, mut row_err) = (0.0f64, 0.0f64);
            for ((s, &a), &b) in self.sum.iter_mut().zip(x).zip(y) {
                *s += f64::from(a);
                let e = f64::from(a - b);
                row_err += e * e;
                row_sq += f64::from(a) * f64::from(a);
            }
            self.sq_err += row_err;
            self.sum_sq += row_sq;
            if let Some(m) = &mut self.massive {
                if row_sq.sqrt() > f64::from(m.threshold) {
                    m.rows += 1;
                    m.sq_norm += row_sq;
                    m.sq_err += row_err;
                } else {
                    m.kept_sum
                        .iter_mut()
                        .zip(x)
                        .for_each(|(s, &a)| *s += f64::from(a));
                    m.kept_sum_sq += row_sq;
                    m.kept_sq_err += row_err;
                    m.kept_active += (codes.row_ptr[r + 1] - codes.row_ptr[r]) as u64;
                }
            }
        }
        for (&i, &v) in codes.indices.iter().zip(&codes.values) {
            self.fired[i as usize] += 1;
            let m = &mut self.max_act[i as usize];
            *m = m.max(v);
        }
        self.active += codes.indices.len() as u64;
        self.tokens += codes.n_rows() as u64;
        Ok(())
    }

    pub fn finish(self) -> EvalReport {
        let n = self.tokens.max(1) as f64;
        let variance = self.sum_sq - self.sum.iter().map(|s| s * s).sum::<f64>() / n;
        let fvu = self.sq_err / variance.max(f64::MIN_POSITIVE);
        let freq: Vec<f64> = self.fired.iter().map(|&f| f as f64 / n).collect();
        let s = self.sae.d_sae as f64;
        let mut counts = vec![0u64; BINS];
        let mut never_fired = 0;
        for &f in &freq {
            if f == 0.0 {
                never_fired += 1;
                continue;
            }
            let pos = (f.log10() - LOG10_MIN) / -LOG10_MIN * BINS as f64;
            counts[(pos.max(0.0) as usize).min(BINS - 1)] += 1;
        }
        let edges = (0..=BINS)
            .map(|i| LOG10_MIN + (-LOG10_MIN) * i as f64 / BINS as f64)
            .collect();
        EvalReport {
            tokens: self.tokens,
            d_in: self.sae.d_in,
            d_sae: self.sae.d_sae,
            l0: self.active as f64 / n,
            mse: self.sq_err / (n * self.sae.d_in as f64),
            fvu,
            explained_variance: 1.0 - fvu,
            dead_fraction: never_fired as f64 / s,
            dense_fraction: freq.iter().filter(|&&f| f > self.dense_threshold).count() as f64 / s,
            dense_threshold: self.dense_threshold,
            density_histogram: DensityHistogram {
                edges,
                counts,
                never_fired,
            },
            massive: self.massive.map(|m| {
                let kept = (self.tokens - m.rows).max(1) as f64;
                let variance = m.kept_sum_sq - m.kept_sum.iter().map(|s| s * s).sum::<f64>() / kept;
                MassiveRows {
                    norm_threshold: m.threshold,
                    rows: m.rows,
                    row_fraction: m.rows as f64 / n,
                    sq_norm_fraction: m.sq_norm / self.sum_sq.max(f64::MIN_POSITIVE),
                    sq_err_fraction: m.sq_err / self.sq_err.max(f64::MIN_POSITIVE),
                    fvu_without: m.kept_sq_err / variance.max(f64::MIN_POSITIVE),
                    mse_without: m.kept_sq_err / (kept * self.sae.d_in as f64),
                    l0_without: m.kept_active as f64 / kept,
                }
            }),
            feature_frequency: freq,
            feature_max_activation: self.max_act,
            splice: None,
            splice_skipped: None,
        }
    }
}

/// Evaluates `sae` on `rows` in one call (see [`Evaluator`] for streams).
pub fn evaluate(sae: &Sae, rows: &[f32], dense_threshold: f64) -> Result<EvalReport, SaeError> {
    let mut e = Evaluator::new(sae, dense_threshold);
    for batch in rows.chunks(4096 * sae.d_in.max(1)) {
        e.add(batch)?;
    }
    Ok(e.finish())
}
