//! One query against its keys and values: the arithmetic of the host attention kernel.
//!
//! Keys come transposed, `kt[d * stride + j]` = dimension `d` of key `j`, so that one vector
//! holds the products of one query dimension with 8 consecutive keys: every score is a chain
//! of fused multiply-adds with no horizontal sum, and a query dimension is broadcast once per
//! 32 keys. (Dot products of a query with each key, 4 keys at a time, compiled to scalar code
//! spilling its 32 accumulators to the stack: a quarter of a forward pass.) The output is then
//! accumulated over the keys, vectorised over the head's dimensions.
//!
//! [`attend`] runs the AVX2 + FMA version when the CPU has them, else [`attend_portable`],
//! which is also the reference the tests compare it with.

/// Keys of one (batch row, kv head), transposed: `kt[d * stride + j]`, `stride` a multiple of
/// 8 and at least the number of keys (the padding columns hold anything finite).
#[derive(Clone, Copy)]
pub(super) struct KeysT<'a> {
    pub kt: &'a [f32],
    pub stride: usize,
}

/// Vectors (queries, keys or values of one head) at a fixed stride.
#[derive(Clone, Copy)]
pub(super) struct Strided<'a> {
    data: &'a [f32],
    stride: usize,
}

impl<'a> Strided<'a> {
    pub fn new(data: &'a [f32], stride: usize) -> Self {
        Self { data, stride }
    }

    /// Vector `j`, its first `len` values.
    #[inline(always)]
    pub fn at(&self, j: usize, len: usize) -> &'a [f32] {
        &self.data[j * self.stride..j * self.stride + len]
    }
}

/// What every query of one (row, head) shares.
#[derive(Clone, Copy)]
pub(super) struct Context<'a> {
    pub keys: KeysT<'a>,
    pub values: Strided<'a>,
    /// Per key, whether it is a real token (`None`: all are).
    pub valid: Option<&'a [bool]>,
    pub scale: f32,
}

/// Softmax-weighted values of keys `0..n` for query `q` into `out` (`q.len()` floats); zeros
/// when none of them is valid. `scores` is scratch of at least `n` rounded up to 8.
pub(super) fn attend(cx: &Context, q: &[f32], n: usize, scores: &mut [f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features were just detected.
        unsafe { avx2::attend(cx, q, n, scores, out) };
        return;
    }
    attend_portable(cx, q, n, scores, out);
}

/// [`attend`] in plain Rust.
pub(super) fn attend_portable(
    cx: &Context,
    q: &[f32],
    n: usize,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let KeysT { kt, stride } = cx.keys;
    let scores = &mut scores[..n];
    scores.fill(0.0);
    for (d, &qd) in q.iter().enumerate() {
        for (s, &k) in scores.iter_mut().zip(&kt[d * stride..d * stride + n]) {
            *s += qd * k;
        }
    }
    let Some(sum) = softmax(cx, scores) else {
        out.fill(0.0);
        return;
    };
    out.fill(0.0);
    for (j, &p) in scores.iter().enumerate() {
        if p != 0.0 {
            for (o, &v) in out.iter_mut().zip(cx.values.at(j, q.len())) {
                *o += p * v;
            }
        }
    }
    let inv = 1.0 / sum;
    for o in out.iter_mut() {
        *o *= inv;
    }
}

/// Scales the raw scores, masks invalid keys and exponentiates in place (relative to the
/// maximum); returns the sum, or `None` when no key is valid. Branch-free per key, so that it
/// vectorises in whichever function it is inlined into.
#[inline(always)]
fn softmax(cx: &Context, scores: &mut [f32]) -> Option<f32> {
    match cx.valid {
        Some(valid) => {
            for (s, &v) in scores.iter_mut().zip(valid) {
                *s = if v { *s * cx.scale } else { f32::NEG_INFINITY };
            }
        }
        None => scores.iter_mut().for_each(|s| *s *= cx.scale),
    }
    let max = lanes(scores, f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return None;
    }
    for s in scores.iter_mut() {
        // The polynomial exp saturates at e^-87 rather than 0, so masked keys are zeroed here.
        *s = if s.is_finite() {
            crate::fused::exp(*s - max)
        } else {
            0.0
        };
    }
    Some(lanes(scores, 0.0, |a, b| a + b))
}

/// `f` folded over `x` in eight lanes, then across them: a single running value is a
/// dependency chain that the compiler may not reorder into vectors.
#[inline(always)]
fn lanes(x: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder().iter().fold(init, |a, &v| f(a, v));
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = f(*a, v);
        }
    }
    acc.into_iter().fold(tail, f)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };

    use super::{Context, KeysT, softmax};

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn attend(
        cx: &Context,
        q: &[f32],
        n: usize,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let hd = q.len();
        let n8 = n.next_multiple_of(8);
        let KeysT { kt, stride } = cx.keys;
        assert!(
            n8 <= stride && kt.len() >= hd * stride && scores.len() >= n8 && out.len() == hd,
            "attention operands out of bounds"
        );
        // SAFETY (loads and stores below): key columns `j..j + 32` or `j..j + 8` with
        // `j + 8 <= n8 <= stride` of rows `d < hd` lie in `kt` (`hd * stride` floats), and
        // `scores` holds `n8`.
        let mut j = 0;
        while j + 32 <= n8 {
            let mut acc = [_mm256_setzero_ps(); 4];
            for (d, &qd) in q.iter().enumerate() {
                let b = _mm256_set1_ps(qd);
                let row = unsafe { kt.as_ptr().add(d * stride + j) };
                for (u, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(b, unsafe { _mm256_loadu_ps(row.add(8 * u)) }, *a);
                }
            }
            for (u, a) in acc.into_iter().enumerate() {
                unsafe { _mm256_storeu_ps(scores.as_mut_ptr().add(j + 8 * u), a) };
            }
            j += 32;
        }
        while j < n8 {
            let mut acc = _mm256_setzero_ps();
            for (d, &qd) in q.iter().enumerate() {
                let k = unsafe { _mm256_loadu_ps(kt.as_ptr().add(d * stride + j)) };
                acc = _mm256_fmadd_ps(_mm256_set1_ps(qd), k, acc);
            }
            unsafe { _mm256_storeu_ps(scores.as_mut_ptr().add(j), acc) };
            j += 8;
        }
        let scores = &mut scores[..n];
        let Some(sum) = softmax(cx, scores) else {
            out.fill(0.0);
            return;
        };
        let inv = 1.0 / sum;
        let whole = hd / 8 * 8;
        // Dimensions in runs of 64 (8 vector accumulators: one pass over the keys for the
        // usual head size), then of 32 and of 8.
        let mut c = 0;
        while c + 64 <= whole {
            weighted_sum::<8>(scores, cx, hd, c, inv, out);
            c += 64;
        }
        while c + 32 <= whole {
            weighted_sum::<4>(scores, cx, hd, c, inv, out);
            c += 32;
        }
        while c < whole {
            weighted_sum::<1>(scores, cx, hd, c, inv, out);
            c += 8;
        }
        // The last `hd % 8` dimensions.
        if whole < hd {
            let tail = &mut out[whole..];
            tail.fill(0.0);
            for (jj, &p) in scores.iter().enumerate() {
                if p != 0.0 {
                    for (o, &v) in tail.iter_mut().zip(&cx.values.at(jj, hd)[whole..]) {
                        *o += p * v;
                    }
                }
            }
            for o in tail.iter_mut() {
                *o *= inv;
            }
        }
    }

    /// `out[c..c + 8 L] = inv · Σ_j p_j v_j[c..c + 8 L]`, in `L` vector accumulators that a
    /// fixed-size array keeps in registers.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn weighted_sum<const L: usize>(
        scores: &[f32],
        cx: &Context,
        hd: usize,
        c: usize,
        inv: f32,
        out: &mut [f32],
    ) {
        let mut acc = [_mm256_setzero_ps(); L];
        for (j, &p) in scores.iter().enumerate() {
            if p == 0.0 {
                continue;
            }
            let v = &cx.values.at(j, hd)[c..c + 8 * L];
            let pb = _mm256_set1_ps(p);
            for (u, a) in acc.iter_mut().enumerate() {
                // SAFETY: `v` holds `8 L` floats.
                let x = unsafe { _mm256_loadu_ps(v.as_ptr().add(8 * u)) };
                *a = _mm256_fmadd_ps(pb, x, *a);
            }
        }
        let dst = &mut out[c..c + 8 * L];
        let scale = _mm256_set1_ps(inv);
        for (u, a) in acc.into_iter().enumerate() {
            // SAFETY: `dst` holds `8 L` floats.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(8 * u), _mm256_mul_ps(a, scale)) };
        }
    }
}
