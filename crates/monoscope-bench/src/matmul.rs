//! The fp32 matrix-multiply rate burn's `flex` backend reaches on this machine: the ceiling for
//! every dense product in the model runtime and SAE training, measured in the same run as they
//! are so that ratios are comparable on a shared machine.

use burn::prelude::*;
use burn::tensor::Distribution;

use crate::report::{Measurement, emit, median_time};

/// GFLOP/s of `[m, k] × [k, n]` on flex (median of 5).
pub fn gflops(m: usize, k: usize, n: usize) -> f64 {
    let device = Device::flex();
    let a: Tensor<2> = Tensor::random([m, k], Distribution::Normal(0.0, 1.0), &device);
    let b: Tensor<2> = Tensor::random([k, n], Distribution::Normal(0.0, 1.0), &device);
    let t = median_time(5, || {
        let c = a.clone().matmul(b.clone());
        // Reading one value forces the product to be computed.
        let _ = c.slice([0..1, 0..1]).into_scalar::<f32>();
    });
    2.0 * (m * k * n) as f64 / t.as_secs_f64() / 1e9
}

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
