//! The numeric building blocks under the SAE: dense products through the `gemm` crate (the
//! kernel burn's flex backend uses internally, called directly so that we can pass strides and
//! accumulate in place), and the per-row top-k selection.
//!
//! Everything here is deterministic for a given thread count: `gemm` splits the output, never
//! the reduction, and our own reductions run over fixed chunks in a fixed order.

use gemm::Parallelism;

/// A strided, read-only view of a row-major `f32` matrix (or of its transpose).
#[derive(Clone, Copy, Debug)]
pub(crate) struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> View<'a> {
    /// The row-major matrix `[rows, cols]` stored in `data`.
    pub(crate) fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(
            data.len(),
            rows * cols,
            "matrix data does not match its shape"
        );
        View {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose, without copying.
    pub(crate) fn t(self) -> Self {
        View {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

/// How many threads `gemm` may use: rayon's pool size (the caller controls it with
/// `ThreadPool::install`).
fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `dst[m, n] (+)= a[m, k] · b[k, n]`, `dst` row-major; accumulates when `accumulate` is set.
pub(crate) fn matmul(dst: &mut [f32], a: View<'_>, b: View<'_>, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    assert_eq!(
        dst.len(),
        m * n,
        "output does not match the product's shape"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // SAFETY: the views' constructors checked that every (row, col) addressed below lies
    // inside its slice, `dst` is exclusively borrowed and has exactly m·n elements, and the
    // inputs are shared borrows that cannot alias `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(),
        );
    }
}

/// Dot product with four independent accumulators (lets the compiler vectorise).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for j in 0..8 {
            acc[j] += a[c * 8 + j] * b[c * 8 + j];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// `y += alpha · x`.
#[inline]
pub(crate) fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// The `k` largest entries of `row` among those `allowed` (all when `None`), appended to
/// `out` as `(index, value)` sorted by index. Ties keep the earliest index; NaN is never taken.
pub(crate) fn top_k(row: &[f32], k: usize, allowed: Option<&[bool]>, out: &mut Vec<(u32, f32)>) {
    let start = out.len();
    if k == 0 {
        return;
    }
    // A small unsorted buffer with its minimum tracked: after the first few hundred entries
    // almost every candidate is rejected by one comparison, which beats a heap for k ≤ ~256.
    let mut min_pos = 0usize;
    let mut min_val = f32::INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if allowed.is_some_and(|a| !a[i]) || v.is_nan() {
            continue;
        }
        let len = out.len() - start;
        if len < k {
            out.push((i as u32, v));
            if len + 1 == k {
                (min_pos, min_val) = min_of(&out[start..]);
            }
        } else if v > min_val {
            out[start + min_pos] = (i as u32, v);
            (min_pos, min_val) = min_of(&out[start..]);
        }
    }
    out[start..].sort_unstable_by_key(|e| e.0);
}

fn min_of(buf: &[(u32, f32)]) -> (usize, f32) {
    let mut best = (0, buf[0].1);
    for (i, e) in buf.iter().enumerate().skip(1) {
        // On ties evict the larger index, so among equal values the earliest index survives.
        if e.1 < best.1 || (e.1 == best.1 && e.0 > buf[best.0].0) {
            best = (i, e.1);
        }
    }
    best
}

/// Sum of squares of a slice, accumulated in f64 over fixed chunks (deterministic).
pub(crate) fn sum_sq(x: &[f32]) -> f64 {
    use rayon::prelude::*;
    let partial: Vec<f64> = x
        .par_chunks(1 << 16)
        .map(|c| c.iter().map(|&v| f64::from(v) * f64::from(v)).sum())
        .collect();
    partial.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_naive_with_transposes() {
        let a: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect(); // [3,4]
        let b: Vec<f32> = (0..20).map(|i| (i % 7) as f32 - 3.0).collect(); // [4,5]
        let mut c = vec![1.0; 15];
        matmul(&mut c, View::rows(&a, 3, 4), View::rows(&b, 4, 5), true);
        for i in 0..3 {
            for j in 0..5 {
                let want: f32 = 1.0 + (0..4).map(|p| a[i * 4 + p] * b[p * 5 + j]).sum::<f32>();
                assert!((c[i * 5 + j] - want).abs() < 1e-5);
            }
        }
        // aᵀ·a through a transposed view: [4,3]·[3,4]
        let mut g = vec![0.0; 16];
        matmul(
            &mut g,
            View::rows(&a, 3, 4).t(),
            View::rows(&a, 3, 4),
            false,
        );
        for i in 0..4 {
            for j in 0..4 {
                let want: f32 = (0..3).map(|p| a[p * 4 + i] * a[p * 4 + j]).sum();
                assert!((g[i * 4 + j] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn top_k_picks_largest_sorted_by_index() {
        let row = [0.1, 5.0, -1.0, 3.0, 3.0, 7.0, f32::NAN, 2.0];
        let mut out = Vec::new();
        top_k(&row, 3, None, &mut out);
        assert_eq!(out, vec![(1, 5.0), (3, 3.0), (5, 7.0)]);
        let allowed = [true, false, true, true, true, false, true, true];
        out.clear();
        top_k(&row, 2, Some(&allowed), &mut out);
        assert_eq!(out, vec![(3, 3.0), (4, 3.0)]);
    }
}
