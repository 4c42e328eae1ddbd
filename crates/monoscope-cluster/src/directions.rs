//! Unit decoder directions: the rows of `W_dec`, each scaled to norm 1, with dead (zero-norm)
//! features marked so that no later step divides by zero or ranks them as neighbours.

use crate::error::ClusterError;

/// Rows of a dictionary scaled to unit norm, `[len, dim]` row-major.
#[derive(Debug, Clone)]
pub struct Directions {
    data: Vec<f32>,
    dim: usize,
    /// `alive[i]`: row i had a non-zero norm. Dead rows are stored as zeros.
    alive: Vec<bool>,
}

/// Norms below this (relative to the largest row norm) count as zero: a feature whose decoder
/// row was never trained away from exact zero, or was pruned.
const DEAD_NORM: f32 = 1e-12;

impl Directions {
    /// Normalises the rows of `matrix` (`[rows, dim]` row-major). `what` names the source in
    /// error messages (e.g. the SAE directory).
    pub fn from_rows(matrix: &[f32], dim: usize, what: &str) -> Result<Self, ClusterError> {
        if dim == 0 || !matrix.len().is_multiple_of(dim) {
            return Err(ClusterError::Invalid(format!(
                "{what}: {} values do not form rows of width {dim}",
                matrix.len()
            )));
        }
        let rows = matrix.len() / dim;
        let mut data = matrix.to_vec();
        let mut alive = vec![false; rows];
        for (i, (row, alive)) in data.chunks_exact_mut(dim).zip(&mut alive).enumerate() {
            let norm_sq: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            if !norm_sq.is_finite() {
                return Err(ClusterError::Invalid(format!(
                    "{what}: decoder row {i} holds a non-finite value (NaN or infinity)"
                )));
            }
            let norm = norm_sq.sqrt() as f32;
            if norm > DEAD_NORM {
                row.iter_mut().for_each(|v| *v /= norm);
                *alive = true;
            } else {
                row.fill(0.0);
            }
        }
        Ok(Directions { data, dim, alive })
    }

    /// The decoder directions of an SAE (`W_dec`, one row per feature).
    pub fn from_sae(sae: &monoscope_sae::Sae, what: &str) -> Result<Self, ClusterError> {
        if sae.w_dec.len() != sae.d_sae * sae.d_in {
            return Err(ClusterError::Invalid(format!(
                "{what}: W_dec holds {} values, expected d_sae × d_in = {} × {}",
                sae.w_dec.len(),
                sae.d_sae,
                sae.d_in
            )));
        }
        Self::from_rows(&sae.w_dec, sae.d_in, what)
    }

    pub fn len(&self) -> usize {
        self.alive.len()
    }

    /// That the queries `rows` of these directions can be searched among `keys`: the rows
    /// exist and both sets have one width.
    pub fn check_search(
        &self,
        rows: &std::ops::Range<usize>,
        keys: &Directions,
    ) -> Result<(), ClusterError> {
        if rows.start > rows.end || rows.end > self.len() {
            return Err(ClusterError::Invalid(format!(
                "queries {}..{} of {}: out of range",
                rows.start,
                rows.end,
                self.len()
            )));
        }
        if self.dim() != keys.dim() {
            return Err(ClusterError::Invalid(format!(
                "cannot compare directions of width {} with directions of width {}",
                self.dim(),
                keys.dim()
            )));
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.alive.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// All rows, `[len, dim]` row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    pub fn is_alive(&self, i: usize) -> bool {
        self.alive[i]
    }

    pub fn alive_mask(&self) -> &[bool] {
        &self.alive
    }

    pub fn dead_count(&self) -> usize {
        self.alive.iter().filter(|a| !**a).count()
    }

    /// The given rows as a new set (for querying a sample).
    pub fn subset(&self, rows: &[usize]) -> Directions {
        let mut data = Vec::with_capacity(rows.len() * self.dim);
        for &r in rows {
            data.extend_from_slice(self.row(r));
        }
        Directions {
            data,
            dim: self.dim,
            alive: rows.iter().map(|&r| self.alive[r]).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_unit_and_zero_rows_are_dead() {
        let d = Directions::from_rows(&[3.0, 4.0, 0.0, 0.0, 0.0, -2.0], 2, "t").unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d.row(0), &[0.6, 0.8]);
        assert!(!d.is_alive(1));
        assert_eq!(d.row(2), &[0.0, -1.0]);
        assert_eq!(d.dead_count(), 1);
    }

    #[test]
    fn nan_is_refused_with_the_row_named() {
        let err = Directions::from_rows(&[1.0, f32::NAN], 2, "sae dir").unwrap_err();
        assert!(err.to_string().contains("sae dir: decoder row 0"), "{err}");
    }
}
