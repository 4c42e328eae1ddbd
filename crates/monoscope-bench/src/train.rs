//! SAE training speed on synthetic activations: tokens/s of TopK (k = 32) and ReLU+L1 at
//! 768 → 16384 and 512 → 4096, batch 4096, against the encoder bound measured in the same run.
//!
//! The encoder product alone costs `2·d_in·d_sae` FLOP per token, so the machine's best fp32
//! matrix-multiply rate divided by that bounds a TopK SAE whose decoder and backward pass
//! exploit sparsity. The best rate is the larger of burn's `flex` matmul and the `gemm` crate
//! (the SAE's own kernel), both timed on the encoder's exact shape.
//!
//! `cargo xtask bench train [--steps N]`: N timed steps per case after one warm-up step
//! (default 5); the median step time gives tokens/s.

use monoscope_sae::{ArchConfig, TrainConfig, Trainer};

use crate::report::{Measurement, emit, median_time};

const BATCH: usize = 4096;
const SHAPES: [(usize, usize); 2] = [(768, 16_384), (512, 4096)];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let steps = match args {
        [] => 5,
        [flag, n] if flag == "--steps" => n.parse()?,
        _ => anyhow::bail!("usage: cargo xtask bench train [--steps N]"),
    };
    let mut out = Vec::new();
    for (d_in, d_sae) in SHAPES {
        let shape = format!("{d_in}x{d_sae} batch {BATCH}");
        let flex = crate::matmul::gflops(BATCH, d_in, d_sae);
        let gemm = crate::matmul::gemm_gflops(BATCH, d_in, d_sae);
        let best = flex.max(gemm);
        let bound = best * 1e9 / (2.0 * (d_in * d_sae) as f64);
        out.push(Measurement::new(
            "train",
            &format!("matmul flex {shape}"),
            "rate",
            flex,
            "GFLOP/s",
        ));
        out.push(Measurement::new(
            "train",
            &format!("matmul gemm {shape}"),
            "rate",
            gemm,
            "GFLOP/s",
        ));
        out.push(Measurement::new(
            "train",
            &shape,
            "encoder bound",
            bound,
            "tokens/s",
        ));
        for (name, arch) in [
            ("topk k=32", serde_json::json!({ "kind": "top_k", "k": 32 })),
            ("relu-l1", serde_json::json!({ "kind": "relu_l1" })),
        ] {
            let arch: ArchConfig = serde_json::from_value(arch)?;
            let (rate, encode) = tokens_per_second(d_in, d_sae, arch, steps)?;
            let case = format!("{name} {shape}");
            out.push(
                Measurement::new("train", &case, "throughput", rate, "tokens/s").with_peak_rss(),
            );
            out.push(Measurement::new(
                "train",
                &case,
                "encode only",
                encode,
                "tokens/s",
            ));
            out.push(Measurement::new(
                "train",
                &case,
                "of encoder bound",
                100.0 * rate / bound,
                "%",
            ));
        }
    }
    emit(&out);
    Ok(())
}

/// Median tokens/s of `steps` training steps on two alternating batches of synthetic rows,
/// and of the trained SAE's encoder alone (`Sae::encode_sparse`: the dense product and the
/// per-row selection), which shows how much of a step the rest of it takes.
fn tokens_per_second(
    d_in: usize,
    d_sae: usize,
    arch: ArchConfig,
    steps: usize,
) -> anyhow::Result<(f64, f64)> {
    // Enough steps that no schedule (warm-up, decay) ends the run while we time it.
    let config = TrainConfig::new(d_in, d_sae, arch, 1_000);
    let mut trainer = Trainer::new(config, 1.0)?;
    let batches = [synthetic(BATCH * d_in, 1), synthetic(BATCH * d_in, 2)];
    let mut i = 0;
    let mut failure = None;
    let t = median_time(steps, || {
        if let Err(e) = trainer.step(&batches[i % 2]) {
            failure.get_or_insert(e);
        }
        i += 1;
    });
    if let Some(e) = failure {
        return Err(e.into());
    }
    let sae = trainer.export(Default::default());
    let mut encode_failure = None;
    let encode = median_time(steps, || {
        if let Err(e) = sae.encode_sparse(&batches[0]) {
            encode_failure.get_or_insert(e);
        }
    });
    if let Some(e) = encode_failure {
        return Err(e.into());
    }
    Ok((
        BATCH as f64 / t.as_secs_f64(),
        BATCH as f64 / encode.as_secs_f64(),
    ))
}

/// Roughly Gaussian values (sums of three uniforms) from a fixed xorshift stream: the step's
/// cost does not depend on the data, so no distribution crate for a benchmark input.
fn synthetic(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..len).map(|_| next() + next() + next()).collect()
}
