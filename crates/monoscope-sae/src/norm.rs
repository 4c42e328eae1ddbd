//! Input normalisation (Anthropic, Scaling Monosemanticity): one dataset-wide scalar `s` that
//! brings the inputs to a norm of about `√d_in`. Estimated on a sample before training, used
//! by the trainer on every batch, and folded into the weights when the SAE is exported
//! ([`crate::Sae::fold_input_scale`]), so that the saved SAE takes raw activations.
//!
//! Two estimates ([`InputScale`]): the paper's, where the *mean* squared norm of `s·x` is
//! `d_in`, and a robust one where the *median* norm is `√d_in`. They differ when a few rows
//! carry most of the squared norm: residual streams have such *massive activations* (rows
//! tens to hundreds of times the median norm; ARCHITECTURE.md says where they sit in the
//! default model), and a mean then says more about those rows than about the typical token.
//!
//! The same sample gives the threshold of "massive" rows ([`NormSample::massive_norm`]) that
//! evaluation and training report their metrics with and without.

use serde::{Deserialize, Serialize};

use crate::SaeError;

/// How the input scale is estimated from a sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputScale {
    /// `√(d_in / mean‖x‖²)`: the paper's definition (not SAELens's `√d_in / E‖x‖`).
    MeanSquare,
    /// `√d_in / median‖x‖`: indifferent to a few huge rows.
    #[default]
    Median,
    /// 1: raw activations.
    None,
}

/// Row norms of a sample (any number of batches).
#[derive(Clone, Debug)]
pub struct NormSample {
    d_in: usize,
    sq_norms: Vec<f64>,
}

impl NormSample {
    pub fn new(d_in: usize) -> Self {
        NormSample {
            d_in,
            sq_norms: Vec::new(),
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
        self.sq_norms
            .extend(rows.chunks(self.d_in).map(crate::kernels::sum_sq));
        Ok(())
    }

    /// Rows added so far.
    pub fn rows(&self) -> usize {
        self.sq_norms.len()
    }

    /// The scale by `method`.
    pub fn scale_by(&self, method: InputScale) -> Result<f32, SaeError> {
        let typical = match method {
            InputScale::MeanSquare => {
                self.sq_norms.iter().sum::<f64>() / self.sq_norms.len().max(1) as f64
            }
            InputScale::Median => self.median_norm().powi(2),
            InputScale::None => return Ok(1.0),
        };
        if self.sq_norms.is_empty() || !(typical.is_finite() && typical > 0.0) {
            return Err(SaeError::config(
                "normalisation sample",
                format!(
                    "{} rows, typical squared norm {typical}",
                    self.sq_norms.len()
                ),
                "needs finite rows, not all zero",
            ));
        }
        Ok((self.d_in as f64 / typical).sqrt() as f32)
    }

    /// The median row norm (0 for an empty sample).
    pub fn median_norm(&self) -> f64 {
        if self.sq_norms.is_empty() {
            return 0.0;
        }
        let mut v = self.sq_norms.clone();
        let mid = v.len() / 2;
        let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
        m.sqrt()
    }

    /// The norm above which a row counts as massive: `factor` × the median norm.
    pub fn massive_norm(&self, factor: f32) -> f32 {
        (self.median_norm() * f64::from(factor)) as f32
    }
}

/// The paper's input scale of one sample of rows (see [`NormSample`]).
pub fn estimate_input_scale(rows: &[f32], d_in: usize) -> Result<f32, SaeError> {
    let mut e = NormSample::new(d_in);
    e.add(rows)?;
    e.scale_by(InputScale::MeanSquare)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_scale_ignores_a_few_huge_rows() {
        let d = 4;
        let mut rows = Vec::new();
        for i in 0..99 {
            // Norm 2 (plus a little spread), and one row of norm 2000.
            let v = 1.0 + i as f32 * 1e-4;
            rows.extend([v; 4]);
        }
        rows.extend([1000.0f32; 4]);
        let mut sample = NormSample::new(d);
        sample.add(&rows).unwrap();
        let median = sample.scale_by(InputScale::Median).unwrap();
        let mean = sample.scale_by(InputScale::MeanSquare).unwrap();
        assert!((median - 1.0).abs() < 0.01, "median scale {median}");
        assert!(mean < 0.02, "mean-square scale {mean}");
        assert!((sample.massive_norm(10.0) - 20.0).abs() < 0.2);
        assert!(NormSample::new(d).scale_by(InputScale::Median).is_err());
    }
}
