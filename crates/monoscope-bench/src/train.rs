//! SAE training speed on synthetic activations: tokens/s of TopK (k = 32) and ReLU+L1 at
//! 768 → 16384 and 512 → 4096, batch 4096, against the encoder bound measured in the same run.
//!
//! ReLU+L1's step costs what its codes' density makes it cost, so it is timed twice: from
//! initialisation (about half the latents fire) and at the sparsity a trained SAE works at
//! ("sparse codes": `b_enc` shifted so that 64 latents fire per token when the timing starts,
//! the order of L0 that SAELens and Anthropic report for L1 SAEs of this width; the steps
//! then drift it upwards). The L0 measured over the steps is printed with each case.
//!
//! The encoder product alone costs `2·d_in·d_sae` FLOP per token, so the machine's best fp32
//! matrix-multiply rate divided by that bounds a TopK SAE whose decoder and backward pass
//! exploit sparsity. The best rate is the larger of burn's `flex` matmul and the `gemm` crate
//! (the SAE's own kernel), both timed on the encoder's exact shape before and after the
//! cases ("of encoder bound"). On a shared machine whose speed drifts within a run, that ratio
//! mixes two moments; so each step is also paired with one encoder-shaped `gemm` product timed
//! just before it, and "of paired encoder bound" is the median of product time / step time.
//!
//! `cargo xtask bench train [--steps N] [--case TEXT] [--device D] [--gpu-shapes]`: N timed
//! steps per case after one warm-up step (default 9); the median step time gives tokens/s.
//! `--case` keeps the cases whose name contains TEXT (e.g. `topk`, `relu-l1 768`).
//!
//! `--device D` (a GPU) times the burn trainer on that device instead (`Compute::Burn`; each
//! step reads its statistics back, which waits for the device), against the device's own
//! fp32 matrix-multiply rate on the encoder's shape measured in the same run: the device step
//! runs five dense products of that size (encoder, decoder, two weight gradients, the input
//! gradient), so "of device matmul bound" is 5 × product time / step time. `--gpu-shapes`
//! times 768×16384 and 2304×65536 (Gemma 2 2B's width, 64k latents) instead. `--products
//! f16|bf16` runs the burn trainer's matrix products in that type (`Compute::BurnHalf`); the
//! bound stays the device's fp32 product rate.

use burn::tensor::FloatDType;
use monoscope_sae::{ArchConfig, Compute, Optimizer, TrainConfig, Trainer};

use std::time::Instant;

use crate::matmul::GemmProbe;
use crate::report::{Measurement, emit, median_time, peak_rss_mib};

const BATCH: usize = 4096;
const SHAPES: [(usize, usize); 2] = [(768, 16_384), (512, 4096)];
/// The GPU shapes: GPT-2 small's width with 16k latents, Gemma 2 2B's with 64k.
const GPU_SHAPES: [(usize, usize); 2] = [(768, 16_384), (2304, 65_536)];
/// Name, architecture (as the library's JSON) and, for sparse codes, the starting L0.
const CASES: [(&str, &str, Option<usize>); 3] = [
    ("topk k=32", r#"{ "kind": "top_k", "k": 32 }"#, None),
    ("relu-l1 from init", r#"{ "kind": "relu_l1" }"#, None),
    ("relu-l1 sparse codes", r#"{ "kind": "relu_l1" }"#, Some(64)),
];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let usage = "usage: cargo xtask bench train [--steps N] [--case TEXT] [--device D] \
                 [--gpu-shapes] [--products f16|bf16]";
    let (mut steps, mut filter) = (9, String::new());
    let (mut device, mut gpu_shapes) = (monoscope_core::DeviceSpec::Cpu, false);
    let mut products = None;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        if flag == "--gpu-shapes" {
            gpu_shapes = true;
            continue;
        }
        let value = rest.next().ok_or_else(|| anyhow::anyhow!("{usage}"))?;
        match flag.as_str() {
            "--steps" => steps = value.parse()?,
            "--case" => filter = value.clone(),
            "--device" => device = value.parse()?,
            "--products" => {
                products = Some(match value.as_str() {
                    "f16" => FloatDType::F16,
                    "bf16" => FloatDType::BF16,
                    _ => anyhow::bail!("--products {value}: expected f16 or bf16"),
                })
            }
            _ => anyhow::bail!("{usage}"),
        }
    }
    if !device.is_cpu() || gpu_shapes || products.is_some() {
        let shapes: &[(usize, usize)] = if gpu_shapes { &GPU_SHAPES } else { &SHAPES };
        return on_device(device, products, shapes, &filter, steps);
    }
    let mut out = Vec::new();
    for (d_in, d_sae) in SHAPES {
        let shape = format!("{d_in}x{d_sae} batch {BATCH}");
        let wanted = |name: &str| format!("{name} {shape}").contains(&filter);
        let cases: Vec<_> = CASES.iter().filter(|(name, _, _)| wanted(name)).collect();
        if cases.is_empty() {
            continue;
        }
        // The matmul rate is taken before and after the cases and the best kept, so that a
        // machine busier during one of them does not lower the bound.
        let flex = crate::matmul::gflops(BATCH, d_in, d_sae);
        let gemm_before = crate::matmul::gemm_gflops(BATCH, d_in, d_sae);
        let mut timed = Vec::new();
        for &&(name, arch, l0) in &cases {
            let arch: ArchConfig = serde_json::from_str(arch)?;
            let result = tokens_per_second(d_in, d_sae, arch, l0, steps)?;
            timed.push((format!("{name} {shape}"), result, peak_rss_mib()));
        }
        let gemm_after = crate::matmul::gemm_gflops(BATCH, d_in, d_sae);
        let best = flex.max(gemm_before).max(gemm_after);
        let bound = best * 1e9 / (2.0 * (d_in * d_sae) as f64);
        for (case, rate) in [
            ("flex", flex),
            ("gemm before", gemm_before),
            ("gemm after", gemm_after),
        ] {
            out.push(Measurement::new(
                "train",
                &format!("matmul {case} {shape}"),
                "rate",
                rate,
                "GFLOP/s",
            ));
        }
        out.push(Measurement::new(
            "train",
            &shape,
            "encoder bound",
            bound,
            "tokens/s",
        ));
        for (case, result, peak_rss) in timed {
            let mut throughput =
                Measurement::new("train", &case, "throughput", result.rate, "tokens/s");
            throughput.peak_rss_mib = peak_rss;
            out.push(throughput);
            out.push(Measurement::new(
                "train",
                &case,
                "encode only",
                result.encode_rate,
                "tokens/s",
            ));
            out.push(Measurement::new("train", &case, "L0", result.l0, "latents"));
            out.push(Measurement::new(
                "train",
                &case,
                "of encoder bound",
                100.0 * result.rate / bound,
                "%",
            ));
            out.push(Measurement::new(
                "train",
                &case,
                "of paired encoder bound",
                100.0 * result.paired_share,
                "%",
            ));
        }
    }
    emit(&out);
    Ok(())
}

/// What one case measured.
struct Timed {
    /// Median tokens/s of the training steps.
    rate: f64,
    /// Median tokens/s of the trained SAE's encoder alone.
    encode_rate: f64,
    /// Median over the steps of (encoder-shaped product's time) / (step's time), each step
    /// against the product timed just before it: the share of the encoder bound reached.
    paired_share: f64,
    /// Mean active latents per token over the steps run.
    l0: f64,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Times `steps` training steps on two alternating batches of synthetic rows, and the
/// trained SAE's encoder alone (`Sae::encode_sparse`: the dense product and the per-row
/// selection), which shows how much of a step the rest of it takes. With `l0`, training
/// starts from the initial SAE with `b_enc` lowered until that many latents fire per token.
fn tokens_per_second(
    d_in: usize,
    d_sae: usize,
    arch: ArchConfig,
    l0: Option<usize>,
    steps: usize,
) -> anyhow::Result<Timed> {
    // Enough steps that no schedule (warm-up, decay) ends the run while we time it.
    let relu = matches!(arch, ArchConfig::ReluL1 { .. });
    let mut config = TrainConfig::new(d_in, d_sae, arch, 1_000);
    if relu {
        // ReLU+L1 is timed at the sparsity it starts from. Sign descent (its default) moves
        // every bias by the full step, so on these synthetic rows L0 runs from 64 to
        // thousands within the timed steps and the case would time another regime; Adam's
        // steps keep it near its start. The step's kernels do not depend on the optimizer.
        config = config.with_optimizer(Optimizer::Adam);
    }
    config.metrics_every = 1;
    let batches = [synthetic(BATCH * d_in, 1), synthetic(BATCH * d_in, 2)];
    let mut trainer = Trainer::new(config.clone(), 1.0)?;
    if let Some(l0) = l0 {
        let mut sae = trainer.export(Default::default());
        let shift = bias_for_l0(&sae, &batches[0][..512 * d_in], l0)?;
        sae.b_enc.iter_mut().for_each(|b| *b += shift);
        trainer = Trainer::from_sae(config, &sae, 1.0)?;
    }
    // Each step is paired with one encoder-shaped product timed just before it, so that the
    // ratio of the two sees the same machine however busy it is at that moment.
    let mut probe = GemmProbe::new(BATCH, d_in, d_sae);
    let mut l0_sum = 0.0;
    let (mut step_times, mut ratios) = (Vec::new(), Vec::new());
    for i in 0..=steps {
        let product = probe.time();
        let start = Instant::now();
        let metrics = trainer.step(&batches[i % 2])?;
        let took = start.elapsed();
        l0_sum += metrics.map_or(0.0, |m| m.l0);
        // The first step warms up (buffers, page faults) and is not counted.
        if i > 0 {
            step_times.push(took.as_secs_f64());
            ratios.push(product.as_secs_f64() / took.as_secs_f64());
        }
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
    Ok(Timed {
        rate: BATCH as f64 / median(&mut step_times),
        encode_rate: BATCH as f64 / encode.as_secs_f64(),
        paired_share: median(&mut ratios),
        l0: l0_sum / (steps + 1) as f64,
    })
}

/// The shift of every encoder bias after which `l0` latents fire per row of `sample`, on
/// average: minus the (l0 · rows)-th largest pre-activation.
fn bias_for_l0(sae: &monoscope_sae::Sae, sample: &[f32], l0: usize) -> anyhow::Result<f32> {
    let rows = sample.len() / sae.d_in;
    let mut positive: Vec<f32> = sae
        .encode(sample)?
        .into_iter()
        .filter(|&v| v > 0.0)
        .collect();
    let rank = l0 * rows;
    anyhow::ensure!(
        rank < positive.len(),
        "only {} of the sample's pre-activations are positive; cannot pick L0 {l0}",
        positive.len()
    );
    let (_, kth, _) = positive.select_nth_unstable_by(rank, |a, b| b.total_cmp(a));
    Ok(-*kth)
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

/// `--device D`: the burn trainer's tokens/s on `device` for each case and shape, with the
/// device's matmul rate on the encoder's shape measured before and after.
fn on_device(
    spec: monoscope_core::DeviceSpec,
    products: Option<FloatDType>,
    shapes: &[(usize, usize)],
    filter: &str,
    steps: usize,
) -> anyhow::Result<()> {
    let device = monoscope_device::open(spec)?;
    let compute = match products {
        // On `cpu` too (with `--gpu-shapes`): the burn trainer, not the host one.
        None => Compute::Burn(device.clone()),
        Some(_) => Compute::for_device_with_products(&device, products)?,
    };
    let on = match products {
        None => format!("on {spec}"),
        Some(dtype) => format!("on {spec}, {dtype:?} products"),
    };
    let mut out = Vec::new();
    for &(d_in, d_sae) in shapes {
        let shape = format!("{d_in}x{d_sae} batch {BATCH} {on}");
        for &(name, arch, _) in CASES.iter().filter(|(_, _, l0)| l0.is_none()) {
            let case = format!("{name} {shape}");
            if !case.contains(filter) {
                continue;
            }
            let before = crate::matmul::gflops_on(&device, BATCH, d_in, d_sae);
            let arch: ArchConfig = serde_json::from_str(arch)?;
            let mut config = TrainConfig::new(d_in, d_sae, arch, 1_000);
            config.metrics_every = 1;
            let batches = [synthetic(BATCH * d_in, 1), synthetic(BATCH * d_in, 2)];
            let mut trainer = Trainer::new_on(config, 1.0, compute.clone())?;
            let mut times = Vec::new();
            for i in 0..=steps {
                let start = Instant::now();
                trainer.step(&batches[i % 2])?;
                // The first step compiles and tunes the device's kernels: not counted.
                if i > 0 {
                    times.push(start.elapsed().as_secs_f64());
                }
            }
            let after = crate::matmul::gflops_on(&device, BATCH, d_in, d_sae);
            let rate = before.max(after);
            let step = median(&mut times);
            let product = 2.0 * (BATCH * d_in * d_sae) as f64 / (rate * 1e9);
            out.push(Measurement::new(
                "train",
                &case,
                "throughput",
                BATCH as f64 / step,
                "tokens/s",
            ));
            out.push(Measurement::new(
                "train",
                &case,
                "device matmul",
                rate,
                "GFLOP/s",
            ));
            out.push(Measurement::new(
                "train",
                &case,
                "of device matmul bound",
                100.0 * 5.0 * product / step,
                "%",
            ));
        }
    }
    emit(&out);
    Ok(())
}
