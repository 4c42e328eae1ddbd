use super::quant::round_to_int;
use super::*;

/// Deterministic values in [-1, 1), with a few 8× outliers like real activations when
/// `outliers`.
fn values(n: usize, seed: u64, outliers: bool) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let v = (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
            if outliers && i % 97 == 0 { v * 8.0 } else { v }
        })
        .collect()
}

fn reference(x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; m * n];
    for r in 0..m {
        for c in 0..n {
            let dot: f64 = (0..k)
                .map(|i| x[r * k + i] as f64 * w[i * n + c] as f64)
                .sum();
            y[r * n + c] = dot as f32 + b.map_or(0.0, |b| b[c]);
        }
    }
    y
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn kernels_agree_exactly_and_match_f32_closely() {
    // Odd k, features not a multiple of 16, rows not a multiple of 4; both work splits (the
    // last case has enough row blocks to split by rows).
    for &(m, k, n) in &[
        (1, 7, 5),
        (3, 33, 24),
        (6, 64, 50),
        (130, 96, 70),
        (517, 40, 30),
    ] {
        let x = values(m * k, 1 + m as u64, true);
        let w = values(k * n, 2 + n as u64, false);
        let b = values(n, 3, false);
        let packed = PackedInt8::from_in_out(&w, k, n, Some(&b));
        let fast = matmul_with(Kernel::best(), &x, m, &packed);
        let slow = matmul_with(Kernel::Portable, &x, m, &packed);
        assert_eq!(fast, slow, "{m}x{k}x{n}: kernels differ");
        let err = rel_err(&fast, &reference(&x, &w, Some(&b), m, k, n));
        assert!(err < 1e-2, "{m}x{k}x{n}: relative error {err:e}");
    }
}

#[test]
fn rounding_is_to_nearest() {
    for (x, want) in [
        (0.4f32, 0),
        (0.6, 1),
        (-0.4, 0),
        (-2.6, -3),
        (2.5, 2),
        (-3.5, -4),
        (32766.7, 32767),
        (-32766.7, -32767),
        (f32::NAN, 0),
    ] {
        assert_eq!(round_to_int(x), want, "{x}");
    }
}

#[test]
fn dequantized_weight_is_what_the_kernels_multiply_with() {
    // Odd k and n not a multiple of the group width exercise the padding.
    let (m, k, n) = (5, 19, 37);
    let x = values(m * k, 11, false);
    let w = values(k * n, 12, true);
    let packed = PackedInt8::from_in_out(&w, k, n, None);
    let deq = packed.dequantize_in_out();
    let max = w.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    // Rounding to the nearest of 2 * W_MAX + 1 levels per column: half a step at most.
    for (a, b) in deq.iter().zip(&w) {
        assert!(
            (a - b).abs() <= max / W_MAX as f32 * 0.5 + 1e-6,
            "{a} vs {b}"
        );
    }
    // The kernels' products equal x times the dequantised weight up to activation rounding.
    let want = reference(&x, &deq, None, m, k, n);
    assert!(rel_err(&matmul(&x, m, &packed), &want) < 0.02);
    assert!(rel_err(&deq, &w) > 0.0, "int8 rounding must show");
}

#[test]
fn output_major_packing_is_the_transpose() {
    let (m, k, n) = (9, 20, 31);
    let x = values(m * k, 5, true);
    let w_in_out = values(k * n, 6, false);
    let mut w_out_in = vec![0.0f32; k * n];
    for i in 0..k {
        for c in 0..n {
            w_out_in[c * k + i] = w_in_out[i * n + c];
        }
    }
    let a = matmul(&x, m, &PackedInt8::from_in_out(&w_in_out, k, n, None));
    let b = matmul(
        &x,
        m,
        &PackedInt8::from_host_out_in(&w_out_in.clone().into(), n, k),
    );
    assert_eq!(a, b);
    // A bf16 matrix packs as its exact f32 widening does.
    let narrow: Vec<half::bf16> = w_out_in.iter().map(|&v| half::bf16::from_f32(v)).collect();
    let wide: Vec<f32> = narrow.iter().map(|v| v.to_f32()).collect();
    let c = matmul(
        &x,
        m,
        &PackedInt8::from_host_out_in(&HostData::Bf16(narrow), n, k),
    );
    let d = matmul(&x, m, &PackedInt8::from_host_out_in(&wide.into(), n, k));
    assert_eq!(c, d);
}

#[test]
fn zero_and_non_finite_rows() {
    let (k, n) = (8, 3);
    let w = values(k * n, 7, false);
    let packed = PackedInt8::from_in_out(&w, k, n, None);
    let mut x = vec![0.0f32; 2 * k];
    x[k] = f32::INFINITY;
    let y = matmul(&x, 2, &packed);
    assert!(y[..n].iter().all(|&v| v == 0.0));
    assert!(y[n..].iter().all(|v| v.is_nan()));
}

#[test]
fn rows_computed_on_the_fly_and_reused_buffers_give_the_same_products() {
    let (m, k, n) = (11, 37, 20);
    let x = values(m * k, 8, true);
    let w = PackedInt8::from_in_out(&values(k * n, 9, false), k, n, None);
    let mut q = QuantRows::default();
    let mut y = vec![f32::NAN; 3];
    quantize_rows_with(m, &w, &mut q, |r, row| {
        row.copy_from_slice(&x[r * k..(r + 1) * k])
    });
    matmul_quantized_into(&q, &w, &mut y);
    assert_eq!(y, matmul(&x, m, &w));
    // Fewer rows, one of them zero, into the same buffers: nothing of the first call remains.
    let mut x2 = x[..5 * k].to_vec();
    x2[2 * k..3 * k].fill(0.0);
    quantize_rows_into(&x2, 5, &w, &mut q);
    matmul_quantized_into(&q, &w, &mut y);
    assert_eq!(y, matmul(&x2, 5, &w));
    assert!(y[2 * n..3 * n].iter().all(|&v| v == 0.0));
}

/// `cargo test -p monoscope-lm --release --lib int8_rate -- --ignored --nocapture`: the
/// kernels' rate on the model's gate|up shape, next to burn's fp32 matmul, interleaved; then
/// on the unembedding's shape (weights far larger than the caches), for the int8 kernel alone,
/// into a fresh output and into a reused one.
#[test]
#[ignore = "timing, not a check"]
fn int8_rate() {
    use burn::prelude::*;
    let (m, k, n) = (2048, 576, 3072);
    let x = values(m * k, 1, true);
    let w = values(k * n, 2, false);
    let packed = PackedInt8::from_in_out(&w, k, n, None);
    let device = Device::flex();
    let xt: Tensor<2> = Tensor::from_data(TensorData::new(x.clone(), [m, k]), &device);
    let wt: Tensor<2> = Tensor::from_data(TensorData::new(w.clone(), [k, n]), &device);
    let ops = 2.0 * (m * k * n) as f64;
    // Best of several: the least disturbed run on a shared machine.
    let (mut int8, mut f32) = (0.0f64, 0.0f64);
    for _ in 0..8 {
        let t = std::time::Instant::now();
        std::hint::black_box(matmul(&x, m, &packed));
        int8 = int8.max(ops / t.elapsed().as_secs_f64() / 1e9);
        let t = std::time::Instant::now();
        drop(xt.clone().matmul(wt.clone()).into_data());
        f32 = f32.max(ops / t.elapsed().as_secs_f64() / 1e9);
    }
    eprintln!("[{m}, {k}] x [{k}, {n}] best: int8 {int8:.1} GOP/s, burn f32 {f32:.1} GFLOP/s");

    let n = 49152;
    let unembed = PackedInt8::from_host_out_in(&values(k * n, 3, false).into(), n, k);
    let ops = 2.0 * (m * k * n) as f64;
    let mut best = 0.0f64;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        std::hint::black_box(matmul(&x, m, &unembed));
        best = best.max(ops / t.elapsed().as_secs_f64() / 1e9);
    }
    eprintln!("[{m}, {k}] x [{k}, {n}] best: int8 {best:.1} GOP/s");
    // Into a reused buffer: what a fresh output's page faults cost (a quarter, when written).
    let q = quant::quantize_rows(&x, m, &unembed);
    let mut out = Vec::new();
    let mut best = 0.0f64;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        matmul_quantized_into(&q, &unembed, &mut out);
        best = best.max(ops / t.elapsed().as_secs_f64() / 1e9);
    }
    eprintln!("reused output: int8 {best:.1} GOP/s");
}
