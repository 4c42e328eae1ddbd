//! Activations quantised per row for the integer kernels, either from a matrix
//! ([`quantize_rows`]) or from rows computed on the fly ([`quantize_rows_with`]): the CPU
//! block path fuses RMSNorm and SwiGLU into the quantisation this way, so that their f32
//! outputs are never written out in full and read back.

use rayon::prelude::*;

use super::{MR, PackedInt8, Pair};

/// Activations `[mp, kp / 2]` pairs quantised symmetrically per row (rows padded to a multiple
/// of [`MR`] and columns to `kp` with zeros), with each row's scale, for one [`PackedInt8`]'s
/// `k` and accumulator bound.
#[derive(Debug, Default)]
pub(crate) struct QuantRows {
    data: Vec<Pair>,
    pub(super) scale: Vec<f32>,
    pairs: usize,
    rows: usize,
}

impl QuantRows {
    /// The [`MR`] rows from `r`.
    #[inline]
    pub(super) fn tile(&self, r: usize) -> [&[Pair]; MR] {
        std::array::from_fn(|i| &self.data[(r + i) * self.pairs..(r + i + 1) * self.pairs])
    }

    pub(super) fn pairs(&self) -> usize {
        self.pairs
    }

    /// Real (unpadded) rows.
    pub(super) fn rows(&self) -> usize {
        self.rows
    }
}

/// Rows of `x[m, k]` quantised for `w`.
pub(super) fn quantize_rows(x: &[f32], m: usize, w: &PackedInt8) -> QuantRows {
    let mut q = QuantRows::default();
    quantize_rows_into(x, m, w, &mut q);
    q
}

/// [`quantize_rows`] into `q`, replacing its contents and reusing its allocations.
pub(crate) fn quantize_rows_into(x: &[f32], m: usize, w: &PackedInt8, q: &mut QuantRows) {
    assert_eq!(x.len(), m * w.k, "activations are not [m, k]");
    let k = w.k;
    quantize(m, w, q, |_, r, dst| {
        quantize_row(&x[r * k..(r + 1) * k], dst, w.a_max)
    });
}

/// `m` rows of `w.k()` values quantised for `w` into `q` (replacing its contents), row `r`'s
/// values written by `fill(r, buf)` into a scratch buffer first.
pub(crate) fn quantize_rows_with(
    m: usize,
    w: &PackedInt8,
    q: &mut QuantRows,
    fill: impl Fn(usize, &mut [f32]) + Sync,
) {
    quantize(m, w, q, |scratch, r, dst| {
        scratch.resize(w.k, 0.0);
        fill(r, scratch);
        quantize_row(scratch, dst, w.a_max)
    });
}

/// Lays out `q` for `m` rows (zeros) and sets each real row's pairs and scale with
/// `row(scratch, r, pairs)` in parallel (`scratch` a buffer per task).
fn quantize(
    m: usize,
    w: &PackedInt8,
    q: &mut QuantRows,
    row: impl Fn(&mut Vec<f32>, usize, &mut [Pair]) -> f32 + Sync,
) {
    let mp = m.next_multiple_of(MR);
    let pairs = w.kp / 2;
    // Zeros: the padding, and the rows `quantize_row` leaves alone.
    q.data.clear();
    q.data.resize(mp * pairs, Pair::default());
    q.scale.clear();
    q.scale.resize(mp, 0.0);
    (q.pairs, q.rows) = (pairs, m);
    q.data
        .par_chunks_mut(pairs)
        .zip(q.scale.par_iter_mut())
        .take(m)
        .enumerate()
        // A row is only a few hundred values: hand rayon dozens at a time.
        .with_min_len(32)
        .for_each_init(Vec::new, |scratch, (r, (dst, s))| *s = row(scratch, r, dst));
}

/// Quantises `row` into `dst` (left as zeros for a zero or non-finite row) and returns its
/// scale: NaN for a row with an infinity, which stays non-finite in the output as in f32.
fn quantize_row(row: &[f32], dst: &mut [Pair], a_max: i32) -> f32 {
    let max = max_abs(row);
    if max == 0.0 || !max.is_finite() {
        return if max.is_finite() { 0.0 } else { f32::NAN };
    }
    let inv = a_max as f32 / max;
    // Element by element with integer rounding, which vectorises: building each `Pair` from
    // two values, or a float-to-int cast (saturating, NaN to 0), compiled to a scalar
    // conversion and insert per value.
    for (d, &v) in pair_halves(dst).iter_mut().zip(row) {
        *d = round_to_int(v * inv) as i16;
    }
    max / a_max as f32
}

/// `pairs` as the `2 pairs.len()` values they hold, first halves at even indices.
fn pair_halves(pairs: &mut [Pair]) -> &mut [i16] {
    // SAFETY: `Pair` is `repr(C)` around `[i16; 2]`: the same bytes as two `i16` with no
    // padding, at an alignment at least `i16`'s, and every bit pattern is valid for both.
    unsafe { std::slice::from_raw_parts_mut(pairs.as_mut_ptr().cast::<i16>(), 2 * pairs.len()) }
}

/// The largest `|v|` of `row` (NaNs ignored, as `f32::max` does), in eight lanes so that it
/// vectorises: a single running maximum is a dependency chain the compiler keeps scalar.
fn max_abs(row: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = a.max(v.abs());
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// `x` rounded to the nearest integer (ties to even) for |x| < 2^22: adding 1.5 · 2^23 leaves
/// no fraction bits, and the integer is then the low bits of the sum's mantissa. Branch-free
/// and vectorisable, unlike `f32::round` on baseline x86-64 (a libm call per value) or a
/// float-to-int cast. NaN gives 0, as the cast does.
#[inline(always)]
pub(super) fn round_to_int(x: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    let x = if x.is_nan() { 0.0 } else { x };
    (x + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32
}
