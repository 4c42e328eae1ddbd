//! The numeric building blocks under the SAE: dense products through the `gemm` crate (the
//! kernel burn's flex backend uses internally, called directly so that we can pass strides and
//! accumulate in place), the per-row top-k selection, and [`vector`]'s `dot` and `axpy`.
//! Where the CPU has AVX2 and FMA, the selection and the vector loops run code compiled for it
//! (chosen at run time; the crate itself targets baseline x86-64).
//!
//! Everything here is deterministic for a given thread count: `gemm` splits the output, never
//! the reduction, and our own reductions run over fixed chunks in a fixed order.

mod vector;

use gemm::Parallelism;

pub(crate) use vector::{axpy, dot, prefetch};

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

/// Entries scanned per step of the selection loops: one AVX2 compare-and-mask per 8 lanes,
/// and a chunk with no candidate costs no branch per entry.
const CHUNK: usize = 16;

/// Bit `j` set where `z[j] + bias[j] > threshold` (never for NaN).
#[inline(always)]
fn above(z: &[f32], bias: &[f32], threshold: f32) -> u32 {
    let mut mask = 0u32;
    for (j, (z, b)) in z.iter().zip(bias).enumerate() {
        mask |= u32::from(z + b > threshold) << j;
    }
    mask
}

/// The `k` largest values of `z + bias` among the entries `allowed` (all when `None`),
/// appended to `out` as `(index, value)` sorted by index. Ties keep the earliest index;
/// NaN and −∞ are never taken.
///
/// Candidates above a running threshold collect as [`rank_key`]s; when `4k` have gathered,
/// the best `k` are kept and the threshold rises to the smallest of them. After the
/// first few hundred entries almost no chunk holds a candidate, so the scan runs at the speed
/// of the vector compare.
pub(crate) fn top_k(
    z: &[f32],
    bias: &[f32],
    k: usize,
    allowed: Option<&[bool]>,
    out: &mut Vec<(u32, f32)>,
) {
    #[cfg(target_arch = "x86_64")]
    if vector::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { top_k_avx2(z, bias, k, allowed, out) };
    }
    top_k_scan(z, bias, k, allowed, out, above)
}

/// [`top_k`] compiled with AVX2, with the AVX2 compare.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn top_k_avx2(
    z: &[f32],
    bias: &[f32],
    k: usize,
    allowed: Option<&[bool]>,
    out: &mut Vec<(u32, f32)>,
) {
    // SAFETY: the caller guarantees AVX2.
    top_k_scan(z, bias, k, allowed, out, |z, b, t| unsafe {
        vector::above_avx2(z, b, t)
    })
}

/// The selection, with `above` (a chunk's compare mask) passed in so that the AVX2 build
/// can use its own.
#[inline(always)]
fn top_k_scan(
    z: &[f32],
    bias: &[f32],
    k: usize,
    allowed: Option<&[bool]>,
    out: &mut Vec<(u32, f32)>,
    above: impl Fn(&[f32], &[f32], f32) -> u32,
) {
    assert_eq!(z.len(), bias.len(), "values and bias differ in length");
    if k == 0 {
        return;
    }
    let cap = (4 * k).max(64);
    // Allocated per call: a thread-local buffer would move the scan into a closure that is
    // compiled without the caller's AVX2.
    let keys = &mut Vec::with_capacity(cap);
    let mut threshold = f32::NEG_INFINITY;
    for (c, (zc, bc)) in z.chunks(CHUNK).zip(bias.chunks(CHUNK)).enumerate() {
        let mut mask = above(zc, bc, threshold);
        while mask != 0 {
            let j = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let i = c * CHUNK + j;
            let v = zc[j] + bc[j];
            // The threshold may have risen since the mask was taken.
            if v > threshold && allowed.is_none_or(|a| a[i]) {
                keys.push(rank_key(v, i));
                if keys.len() == cap {
                    threshold = keep_best(keys, k);
                }
            }
        }
    }
    if keys.len() > k {
        keep_best(keys, k);
    }
    let start = out.len();
    out.extend(keys.iter().map(|&key| from_rank_key(key)));
    out[start..].sort_unstable_by_key(|e| e.0);
}

/// A key that orders candidates as the selection ranks them, larger first: by value (as
/// `f32::total_cmp`, for the non-NaN values that reach it), then by smaller index: the
/// repeated partial selections compare integers instead of `(value, index)` pairs.
#[inline(always)]
fn rank_key(v: f32, i: usize) -> u64 {
    let bits = v.to_bits();
    let ordered = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    };
    (u64::from(ordered) << 32) | u64::from(!(i as u32))
}

#[inline(always)]
fn from_rank_key(key: u64) -> (u32, f32) {
    let ordered = (key >> 32) as u32;
    let bits = if ordered >> 31 == 1 {
        ordered & !(1 << 31)
    } else {
        !ordered
    };
    (!(key as u32), f32::from_bits(bits))
}

/// Keeps the `k` best keys and returns the smallest value kept.
#[inline(always)]
fn keep_best(keys: &mut Vec<u64>, k: usize) -> f32 {
    let (_, kth, _) = keys.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
    let min = from_rank_key(*kth).1;
    keys.truncate(k);
    min
}

/// Every positive value of `z + bias`, appended to `out` as `(index, value)` in index order.
pub(crate) fn positive(z: &[f32], bias: &[f32], out: &mut Vec<(u32, f32)>) {
    assert_eq!(z.len(), bias.len(), "values and bias differ in length");
    #[cfg(target_arch = "x86_64")]
    if vector::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { positive_avx2(z, bias, out) };
    }
    positive_scan(z, bias, out, above)
}

/// [`positive`] with the AVX2 compare.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn positive_avx2(z: &[f32], bias: &[f32], out: &mut Vec<(u32, f32)>) {
    // SAFETY: the caller guarantees AVX2.
    positive_scan(z, bias, out, |z, b, t| unsafe {
        vector::above_avx2(z, b, t)
    })
}

#[inline(always)]
fn positive_scan(
    z: &[f32],
    bias: &[f32],
    out: &mut Vec<(u32, f32)>,
    above: impl Fn(&[f32], &[f32], f32) -> u32,
) {
    for (c, (zc, bc)) in z.chunks(CHUNK).zip(bias.chunks(CHUNK)).enumerate() {
        let mut mask = above(zc, bc, 0.0);
        while mask != 0 {
            let j = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            out.push(((c * CHUNK + j) as u32, zc[j] + bc[j]));
        }
    }
}

/// How many values of `z + bias` are positive (`z` holds rows of `bias.len()` values).
pub(crate) fn count_positive(z: &[f32], bias: &[f32]) -> usize {
    z.chunks(bias.len())
        .map(|row| {
            row.chunks(CHUNK)
                .zip(bias.chunks(CHUNK))
                .map(|(zc, bc)| above(zc, bc, 0.0).count_ones() as usize)
                .sum::<usize>()
        })
        .sum()
}

/// Sum of squares of a slice, accumulated in f64 over fixed chunks (deterministic).
pub(crate) fn sum_sq(x: &[f32]) -> f64 {
    use rayon::prelude::*;
    let partial: Vec<f64> = x
        .par_chunks(1 << 16)
        .map(|c| {
            // Eight partial sums per chunk: one would be a chain of dependent f64 additions.
            let mut acc = [0.0f64; 8];
            for lanes in c.chunks(8) {
                for (a, &v) in acc.iter_mut().zip(lanes) {
                    *a += f64::from(v) * f64::from(v);
                }
            }
            acc.iter().sum::<f64>()
        })
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
    fn sum_sq_matches_a_plain_sum() {
        for n in [0, 1, 7, 8, 9, 65_535, 65_536, 200_003] {
            let x: Vec<f32> = (0..n).map(|i| (i % 97) as f32 * 0.01 - 0.3).collect();
            let want: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            assert!((sum_sq(&x) - want).abs() <= 1e-9 * want.max(1.0), "n {n}");
        }
    }

    #[test]
    fn top_k_picks_largest_sorted_by_index() {
        let row = [0.1, 5.0, -1.0, 3.0, 3.0, 7.0, f32::NAN, 2.0];
        let zero = [0.0; 8];
        let mut out = Vec::new();
        top_k(&row, &zero, 3, None, &mut out);
        assert_eq!(out, vec![(1, 5.0), (3, 3.0), (5, 7.0)]);
        let allowed = [true, false, true, true, true, false, true, true];
        out.clear();
        top_k(&row, &zero, 2, Some(&allowed), &mut out);
        assert_eq!(out, vec![(3, 3.0), (4, 3.0)]);
    }

    fn portable_top_k(
        z: &[f32],
        b: &[f32],
        k: usize,
        mask: Option<&[bool]>,
        out: &mut Vec<(u32, f32)>,
    ) {
        top_k_scan(z, b, k, mask, out, above)
    }

    type TopK = fn(&[f32], &[f32], usize, Option<&[bool]>, &mut Vec<(u32, f32)>);

    /// The reference: sort every admissible entry by (value descending, index ascending).
    fn top_k_by_sorting(
        z: &[f32],
        b: &[f32],
        k: usize,
        allowed: Option<&[bool]>,
    ) -> Vec<(u32, f32)> {
        let mut all: Vec<(u32, f32)> = (0..z.len())
            .map(|i| (i as u32, z[i] + b[i]))
            .filter(|&(i, v)| v > f32::NEG_INFINITY && allowed.is_none_or(|a| a[i as usize]))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all.sort_by_key(|e| e.0);
        all
    }

    /// Random rows (few distinct values, so ties are common; NaN, −∞ and rising runs that
    /// keep the threshold moving) against the sorting reference, for many lengths and k.
    #[test]
    fn top_k_and_positive_match_references() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for case in 0..400 {
            let n = rng.random_range(1..700usize);
            let distinct = if case % 2 == 0 { 5 } else { 1000 };
            let z: Vec<f32> = (0..n)
                .map(|i| match rng.random_range(0..50) {
                    0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    2 => i as f32 * 0.01,
                    _ => rng.random_range(0..distinct) as f32 * 0.25 - 1.0,
                })
                .collect();
            let b: Vec<f32> = (0..n)
                .map(|_| rng.random_range(0..4) as f32 * 0.5 - 0.5)
                .collect();
            let allowed: Vec<bool> = (0..n).map(|_| rng.random_bool(0.7)).collect();
            let k = rng.random_range(1..=n.min(150));
            for mask in [None, Some(&allowed[..])] {
                let want = top_k_by_sorting(&z, &b, k, mask);
                // The dispatched selection (AVX2 where the CPU has it) and the portable one.
                for (path, select) in [("dispatched", top_k as TopK), ("portable", portable_top_k)]
                {
                    let mut out = vec![(99, 9.0)];
                    select(&z, &b, k, mask, &mut out);
                    assert_eq!(
                        out[0],
                        (99, 9.0),
                        "case {case}: {path} wrote before its start"
                    );
                    assert_eq!(out[1..], want[..], "case {case}: {path}, n {n}, k {k}");
                }
            }
            let want: Vec<(u32, f32)> = (0..n)
                .map(|i| (i as u32, z[i] + b[i]))
                .filter(|e| e.1 > 0.0)
                .collect();
            let (mut pos, mut portable) = (Vec::new(), Vec::new());
            positive(&z, &b, &mut pos);
            positive_scan(&z, &b, &mut portable, above);
            assert_eq!(pos, want, "case {case}");
            assert_eq!(portable, want, "case {case}: portable");
            assert_eq!(count_positive(&z, &b), want.len());
        }
    }
}
