//! Input normalisation (Anthropic, Scaling Monosemanticity): one dataset-wide scalar `s` such
//! that the mean squared norm of `s·x` is `d_in`. Estimated on a sample before training, used
//! by the trainer on every batch, and folded into the weights when the SAE is exported
//! ([`crate::Sae::fold_input_scale`]), so that the saved SAE takes raw activations.
//!
//! We match the squared-norm definition of the paper, not SAELens's `√d_in / E‖x‖` (the two
//! differ by the spread of the norms; Jensen makes ours slightly smaller).

use crate::SaeError;

/// Accumulates `Σ‖x‖²` over any number of batches.
#[derive(Clone, Debug)]
pub struct NormEstimator {
    d_in: usize,
    sum_sq: f64,
    rows: u64,
}

impl NormEstimator {
    pub fn new(d_in: usize) -> Self {
        NormEstimator {
            d_in,
            sum_sq: 0.0,
            rows: 0,
        }
    }

    /// Adds a batch of rows (`[n, d_in]`, row-major).
    pub fn add(&mut self, rows: &[f32]) -> Result<(), SaeError> {
        if self.d_in == 0 || !rows.len().is_multiple_of(self.d_in) {
            return Err(SaeError::RowWidth {
                len: rows.len(),
                d_in: self.d_in,
            });
        }
        self.sum_sq += crate::kernels::sum_sq(rows);
        self.rows += (rows.len() / self.d_in) as u64;
        Ok(())
    }

    /// The scale `s = √(d_in / mean‖x‖²)`.
    pub fn scale(&self) -> Result<f32, SaeError> {
        let mean = self.sum_sq / self.rows.max(1) as f64;
        if self.rows == 0 || !(mean.is_finite() && mean > 0.0) {
            return Err(SaeError::config(
                "normalisation sample",
                format!("{} rows, mean squared norm {mean}", self.rows),
                "needs at least one finite, non-zero row",
            ));
        }
        Ok((self.d_in as f64 / mean).sqrt() as f32)
    }
}

/// The input scale of one sample of rows (see [`NormEstimator`]).
pub fn estimate_input_scale(rows: &[f32], d_in: usize) -> Result<f32, SaeError> {
    let mut e = NormEstimator::new(d_in);
    e.add(rows)?;
    e.scale()
}
