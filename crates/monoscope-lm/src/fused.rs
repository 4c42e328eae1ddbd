//! Host kernels for the CPU (`flex`) device where burn's generic element-wise ops are the
//! bottleneck. burn's `silu` runs libm `exp` on one thread in several passes; SwiGLU's
//! `silu(gate) * up` over `[rows, d_ff]` cost as much as a third of the MLP's matmuls. Here it
//! is one parallel pass with a polynomial `exp`. RMSNorm is likewise one pass instead of
//! seven (square, mean, add, sqrt, reciprocal, two products). Other devices keep burn's ops
//! (a host round trip would be a device transfer there). The attention kernel is its own
//! module, `crate::attention`.

use burn::prelude::*;
use rayon::prelude::*;

/// Whether `t` lives on the CPU device, whose tensors the host kernels may read directly. A
/// tensor that autodiff tracks is not: a kernel on host buffers would cut it from the graph
/// (burn's device equality ignores autodiff, hence the second test).
pub(crate) fn on_host<const D: usize>(t: &Tensor<D>) -> bool {
    let device = t.device();
    device == Device::flex() && !device.is_autodiff()
}

/// A float tensor's values on the host as f32. Taking the tensor by value lets burn hand over
/// its buffer without a copy when nothing else holds it.
pub(crate) fn host_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data after convert")
}

/// `x / sqrt(mean(x²) + eps) * weight` over the last axis of `x[batch, seq, d]`. The caller
/// has checked [`on_host`].
pub(crate) fn rms_norm(x: Tensor<3>, weight: &Tensor<1>, eps: f64) -> Tensor<3> {
    let device = x.device();
    let dims = x.dims();
    let d = dims[2];
    let src = host_vec(x);
    let w = host_vec(weight.clone());
    let mut out = vec![0.0f32; src.len()];
    let rows_per_task = (16384 / d.max(1)).max(1);
    out.par_chunks_mut(rows_per_task * d)
        .zip(src.par_chunks(rows_per_task * d))
        .for_each(|(dst, src)| {
            for (dst, x) in dst.chunks_mut(d).zip(src.chunks(d)) {
                rms_norm_row(x, &w, eps as f32, dst);
            }
        });
    Tensor::from_data(TensorData::new(out, dims), &device)
}

/// RMSNorm of one row `x` with elementwise `weight` into `out`.
#[inline]
pub(crate) fn rms_norm_row(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    // Eight lanes so that the sum of squares vectorises.
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l] * c[l];
        }
    }
    let mean = (acc.iter().sum::<f32>() + tail) / x.len() as f32;
    let inv = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(weight) {
        *o = v * inv * g;
    }
}

/// `silu(hidden[:, ..ff]) * hidden[:, ff..]` for `hidden[rows, 2 ff]`. The caller has checked
/// [`on_host`].
pub(crate) fn swiglu(hidden: Tensor<2>) -> Tensor<2> {
    let device = hidden.device();
    let [rows, two_ff] = hidden.dims();
    let ff = two_ff / 2;
    let src = host_vec(hidden);
    let mut out = vec![0.0f32; rows * ff];
    // Rows in chunks big enough to amortise rayon's scheduling.
    let rows_per_task = (16384 / ff.max(1)).max(1);
    out.par_chunks_mut(rows_per_task * ff)
        .zip(src.par_chunks(rows_per_task * two_ff))
        .for_each(|(dst, src)| swiglu_rows_best(src, dst, ff));
    Tensor::from_data(TensorData::new(out, [rows, ff]), &device)
}

/// [`swiglu_rows`] compiled for AVX2 when the CPU has it: the crate is built for baseline
/// x86-64, where the polynomial `exp` runs four lanes at a time instead of eight.
pub(crate) fn swiglu_rows_best(src: &[f32], dst: &mut [f32], ff: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the feature was just detected.
        unsafe { swiglu_rows_avx2(src, dst, ff) };
        return;
    }
    swiglu_rows(src, dst, ff);
}

/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn swiglu_rows_avx2(src: &[f32], dst: &mut [f32], ff: usize) {
    swiglu_rows(src, dst, ff);
}

/// `dst[r] = silu(gate_r) * up_r` for rows `src[r] = gate_r | up_r` of `2 ff` values.
#[inline(always)]
fn swiglu_rows(src: &[f32], dst: &mut [f32], ff: usize) {
    for (dst, row) in dst.chunks_exact_mut(ff).zip(src.chunks_exact(2 * ff)) {
        let (gate, up) = row.split_at(ff);
        for ((d, &g), &u) in dst.iter_mut().zip(gate).zip(up) {
            *d = g / (1.0 + exp(-g)) * u;
        }
    }
}

/// `e^x` to about 2 ulp for finite inputs (saturating outside ±87): `x = n ln2 + r` with
/// |r| ≤ ln2/2, a degree-6 Taylor polynomial for `e^r`, and `2^n` put into the exponent bits.
/// Branch-free so that the loops calling it vectorise. `n` is rounded by adding and
/// subtracting 1.5 · 2^23 rather than with `f32::round`, which on baseline x86-64 is a libm
/// call per value and kept every caller's loop scalar (2.5% of a forward pass in `roundf`).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 87.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polynomial_exp_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 1e-6, "worst relative error {worst:e}");
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn swiglu_matches_burn_ops() {
        let device = Device::flex();
        let values: Vec<f32> = (0..3 * 8).map(|i| (i as f32 - 11.0) * 0.7).collect();
        let hidden = Tensor::<2>::from_data(TensorData::new(values, [3, 8]), &device);
        let fused = swiglu(hidden.clone());
        let gate = hidden.clone().narrow(1, 0, 4);
        let reference = burn::tensor::activation::silu(gate) * hidden.narrow(1, 4, 4);
        let a = crate::to_host(fused, "fused").unwrap();
        let b = crate::to_host(reference, "reference").unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "{x} vs {y}");
        }
    }
}
