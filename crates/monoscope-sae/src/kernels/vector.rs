//! `dot` and `axpy`, the inner loops of the sparse training path and of the decoder; the
//! AVX2 compare of the top-k and positive scans; a prefetch hint.
//!
//! The crate is compiled for baseline x86-64 (SSE2, no FMA), so on a CPU with AVX2 and FMA
//! these run hand-written 8-lane FMA loops chosen at run time. `dot` keeps four independent
//! accumulators: with one, every multiply-add waits for the previous one and a 512-long dot
//! product is bound by the FMA latency instead of by loads. The choice is made once per
//! process, so results are reproducible on one machine; they differ in the last bits between
//! machines with and without FMA (one rounding per multiply-add instead of two).

use std::sync::OnceLock;

/// `Σ a[i]·b[i]` over the common length.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { x86::dot(a, b) };
    }
    portable::dot(a, b)
}

/// `y[i] += alpha·x[i]` over the common length.
#[inline]
pub(crate) fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { x86::axpy(y, alpha, x) };
    }
    portable::axpy(y, alpha, x)
}

/// Whether the AVX2+FMA loops run here.
pub(super) fn has_avx2_fma() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Loops the compiler vectorises for whatever the target has.
mod portable {
    pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; 8];
        for (a, b) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
            for j in 0..8 {
                acc[j] += a[j] * b[j];
            }
        }
        let tail = n - n % 8;
        let mut s = acc.iter().sum::<f32>();
        for i in tail..n {
            s += a[i] * b[i];
        }
        s
    }

    pub(super) fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
        for (y, x) in y.iter_mut().zip(x) {
            *y += alpha * x;
        }
    }
}

/// Bit `j` set where `z[j] + bias[j] > threshold` (never for NaN), for chunks of 16: two
/// 8-lane compares and their sign masks.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn above_avx2(z: &[f32], bias: &[f32], threshold: f32) -> u32 {
    use std::arch::x86_64::*;
    if z.len() != 16 || bias.len() != 16 {
        // A row's last, shorter chunk.
        return super::above(z, bias, threshold);
    }
    let t = _mm256_set1_ps(threshold);
    // SAFETY: both slices hold 16 values.
    let (lo, hi) = unsafe {
        (
            _mm256_add_ps(_mm256_loadu_ps(z.as_ptr()), _mm256_loadu_ps(bias.as_ptr())),
            _mm256_add_ps(
                _mm256_loadu_ps(z.as_ptr().add(8)),
                _mm256_loadu_ps(bias.as_ptr().add(8)),
            ),
        )
    };
    let lo = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(lo, t)) as u32;
    let hi = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(hi, t)) as u32;
    lo | hi << 8
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads): every index read is below `n`, within both slices.
        unsafe {
            while i + 32 <= n {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let (x, y) = (
                        _mm256_loadu_ps(pa.add(i + 8 * j)),
                        _mm256_loadu_ps(pb.add(i + 8 * j)),
                    );
                    *acc = _mm256_fmadd_ps(x, y, *acc);
                }
                i += 32;
            }
            while i + 8 <= n {
                let (x, y) = (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
                acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
                i += 8;
            }
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let quad = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        let mut s = _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)));
        for k in i..n {
            s += a[k] * b[k];
        }
        s
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
        let n = y.len().min(x.len());
        let (py, px) = (y.as_mut_ptr(), x.as_ptr());
        let va = _mm256_set1_ps(alpha);
        let mut i = 0;
        // SAFETY (all loads and stores): every index is below `n`, within both slices, and
        // `y` is exclusively borrowed.
        unsafe {
            while i + 16 <= n {
                let y0 =
                    _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
                let y1 = _mm256_fmadd_ps(
                    va,
                    _mm256_loadu_ps(px.add(i + 8)),
                    _mm256_loadu_ps(py.add(i + 8)),
                );
                _mm256_storeu_ps(py.add(i), y0);
                _mm256_storeu_ps(py.add(i + 8), y1);
                i += 16;
            }
            while i + 8 <= n {
                let y0 =
                    _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
                _mm256_storeu_ps(py.add(i), y0);
                i += 8;
            }
        }
        for k in i..n {
            y[k] += alpha * x[k];
        }
    }
}

/// Asks the CPU to start loading `row` into cache (a hint; no effect on results). The sparse
/// kernels jump between rows of a few MiB of data: the hardware prefetcher only follows a
/// row once it is being read, so each new row would otherwise start with a cache miss.
#[inline]
pub(crate) fn prefetch(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in row.chunks(16) {
        // SAFETY: a prefetch never faults and reads nothing architecturally; SSE is baseline.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
            .collect()
    }

    /// Every length around the vector widths, and slices of unequal length (the common
    /// prefix counts), against an f64 reference.
    #[test]
    fn dot_and_axpy_match_f64_references_on_both_paths() {
        for n in (0..70).chain([511, 512, 513, 768]) {
            let (a, b) = (values(n, 1), values(n + 3, 2));
            let want: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            let tolerance = 1e-5 * (n as f64).max(1.0);
            let mut got = vec![("portable", portable::dot(&a, &b))];
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                got.push(("avx2", unsafe { x86::dot(&a, &b) }));
            }
            got.push(("dispatched", dot(&a, &b)));
            for (path, v) in got {
                assert!(
                    (f64::from(v) - want).abs() < tolerance,
                    "{path} dot n={n}: {v} vs {want}"
                );
            }

            let y0 = values(n, 3);
            let want: Vec<f64> = y0
                .iter()
                .zip(&b)
                .map(|(y, x)| f64::from(*y) + 0.75 * f64::from(*x))
                .collect();
            let mut runs: Vec<(&str, Vec<f32>)> =
                vec![("portable", y0.clone()), ("dispatched", y0.clone())];
            portable::axpy(&mut runs[0].1, 0.75, &b);
            axpy(&mut runs[1].1, 0.75, &b);
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                let mut y = y0.clone();
                unsafe { x86::axpy(&mut y, 0.75, &b) };
                runs.push(("avx2", y));
            }
            for (path, y) in runs {
                for (i, (g, w)) in y.iter().zip(&want).enumerate() {
                    assert!(
                        (f64::from(*g) - w).abs() < 1e-6,
                        "{path} axpy n={n} [{i}]: {g} vs {w}"
                    );
                }
            }
        }
    }
}
