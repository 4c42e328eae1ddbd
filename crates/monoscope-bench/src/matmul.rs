//! The fp32 matrix-multiply rate burn's `flex` backend reaches on this machine: the ceiling for
//! every dense product in the model runtime and SAE training, measured in the same run as they
//! are so that ratios are comparable on a shared machine.

use std::time::{Duration, Instant};

use burn::prelude::*;
use burn::tensor::Distribution;

use crate::report::{Measurement, emit, median_time};

/// GFLOP/s of `[m, k] × [k, n]` on flex (median of 5).
pub fn gflops(m: usize, k: usize, n: usize) -> f64 {
    gflops_on(&Device::flex(), m, k, n)
}

/// GFLOP/s of `[m, k] × [k, n]` on `device` (median of 5).
pub fn gflops_on(device: &Device, m: usize, k: usize, n: usize) -> f64 {
    let device = device.clone();
    let a: Tensor<2> = Tensor::random([m, k], Distribution::Normal(0.0, 1.0), &device);
    let b: Tensor<2> = Tensor::random([k, n], Distribution::Normal(0.0, 1.0), &device);
    let t = median_time(5, || {
        let c = a.clone().matmul(b.clone());
        // Reading one value forces the product to be computed.
        let _ = c.slice([0..1, 0..1]).into_scalar::<f32>();
    });
    2.0 * (m * k * n) as f64 / t.as_secs_f64() / 1e9
}

/// GFLOP/s of `[m, k] × [k, n]` through the `gemm` crate directly (all rayon threads): the
/// kernel under burn's flex matmul and the SAE trainer. Median of 5.
pub fn gemm_gflops(m: usize, k: usize, n: usize) -> f64 {
    let mut probe = GemmProbe::new(m, k, n);
    let t = median_time(5, || {
        probe.time();
    });
    probe.gflops(t)
}

/// One `gemm` product of a fixed shape that can be timed again and again (its buffers are
/// kept), e.g. beside each step of another computation.
pub struct GemmProbe {
    m: usize,
    k: usize,
    n: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl GemmProbe {
    pub fn new(m: usize, k: usize, n: usize) -> Self {
        GemmProbe {
            m,
            k,
            n,
            a: (0..m * k).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect(),
            b: (0..k * n).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect(),
            c: vec![0.0f32; m * n],
        }
    }

    /// Runs the product once and returns how long it took.
    pub fn time(&mut self) -> Duration {
        let (m, k, n) = (self.m, self.k, self.n);
        let start = Instant::now();
        // SAFETY: row-major a [m, k], b [k, n], c [m, n], with the strides given, all in
        // bounds; c does not alias a or b.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                self.c.as_mut_ptr(),
                1,
                n as isize,
                false,
                self.a.as_ptr(),
                1,
                k as isize,
                self.b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
        }
        std::hint::black_box(&self.c);
        start.elapsed()
    }

    /// The rate of one product that took `t`.
    pub fn gflops(&self, t: Duration) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64 / t.as_secs_f64() / 1e9
    }
}

/// Reading back forces any lazy computation; returns the logits when there are some.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    let shapes = [(4096, 768, 16384), (2048, 576, 1536), (4096, 512, 4096)];
    let measurements: Vec<Measurement> = shapes
        .iter()
        .map(|&(m, k, n)| {
            Measurement::new(
                "matmul",
                &format!("flex f32 {m}x{k}x{n}"),
                "rate",
                gflops(m, k, n),
                "GFLOP/s",
            )
            .with_peak_rss()
        })
        .collect();
    emit(&measurements);
    Ok(())
}
