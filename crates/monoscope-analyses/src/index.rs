//! Sparse codes turned around: for each feature, the rows it fired on and how strongly
//! (compressed sparse columns), so that a feature's firings can be walked without scanning
//! every row.

use monoscope_sae::SparseCodes;

/// For each feature, its firing rows in increasing order and its activations there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureRows {
    /// `starts[f]..starts[f + 1]` indexes `rows` and `values` for feature `f`.
    starts: Vec<usize>,
    rows: Vec<u32>,
    values: Vec<f32>,
}

impl FeatureRows {
    /// Transposes `codes` (rows of active features).
    pub fn from_codes(codes: &SparseCodes) -> Self {
        let mut starts = vec![0usize; codes.d_sae + 1];
        for &f in &codes.indices {
            starts[f as usize + 1] += 1;
        }
        for f in 0..codes.d_sae {
            starts[f + 1] += starts[f];
        }
        let mut next = starts.clone();
        let mut rows = vec![0u32; codes.indices.len()];
        let mut values = vec![0f32; codes.indices.len()];
        for r in 0..codes.n_rows() {
            let (features, activations) = codes.row(r);
            for (&f, &v) in features.iter().zip(activations) {
                let at = &mut next[f as usize];
                rows[*at] = r as u32;
                values[*at] = v;
                *at += 1;
            }
        }
        FeatureRows {
            starts,
            rows,
            values,
        }
    }

    pub fn features(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    /// The rows feature `f` fired on.
    pub fn rows(&self, f: usize) -> &[u32] {
        &self.rows[self.starts[f]..self.starts[f + 1]]
    }

    /// Its activations on those rows.
    pub fn values(&self, f: usize) -> &[f32] {
        &self.values[self.starts[f]..self.starts[f + 1]]
    }

    /// How many rows feature `f` fired on.
    pub fn firings(&self, f: usize) -> u64 {
        (self.starts[f + 1] - self.starts[f]) as u64
    }
}

/// Appends the rows of `more` to `codes` (both of the same dictionary).
pub fn append_codes(codes: &mut SparseCodes, more: &SparseCodes) {
    let offset = codes.indices.len();
    if codes.row_ptr.is_empty() {
        codes.row_ptr.push(0);
    }
    codes.d_sae = more.d_sae;
    codes.indices.extend_from_slice(&more.indices);
    codes.values.extend_from_slice(&more.values);
    codes
        .row_ptr
        .extend(more.row_ptr.iter().skip(1).map(|&p| p + offset));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(d_sae: usize, rows: &[&[(u32, f32)]]) -> SparseCodes {
        let mut c = SparseCodes {
            d_sae,
            row_ptr: vec![0],
            ..Default::default()
        };
        for row in rows {
            for &(f, v) in *row {
                c.indices.push(f);
                c.values.push(v);
            }
            c.row_ptr.push(c.indices.len());
        }
        c
    }

    #[test]
    fn transposing_lists_each_features_rows_in_order() {
        let c = codes(3, &[&[(0, 1.0), (2, 2.0)], &[], &[(2, 3.0)], &[(0, 4.0)]]);
        let t = FeatureRows::from_codes(&c);
        assert_eq!(t.features(), 3);
        assert_eq!(t.rows(0), &[0, 3]);
        assert_eq!(t.values(0), &[1.0, 4.0]);
        assert_eq!(t.rows(1), &[] as &[u32]);
        assert_eq!(t.rows(2), &[0, 2]);
        assert_eq!(t.firings(2), 2);
    }

    #[test]
    fn appending_keeps_row_boundaries() {
        let mut all = SparseCodes::default();
        append_codes(&mut all, &codes(2, &[&[(1, 1.0)], &[]]));
        append_codes(&mut all, &codes(2, &[&[(0, 2.0), (1, 3.0)]]));
        assert_eq!(all.n_rows(), 3);
        assert_eq!(all.row(2).0, &[0, 1]);
        assert_eq!(all.row(1).0, &[] as &[u32]);
        assert_eq!(all.row(0).1, &[1.0]);
    }
}
