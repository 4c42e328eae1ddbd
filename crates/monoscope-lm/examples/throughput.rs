//! Capture throughput on the default model: windows of 128 tokens, batch 16, recording
//! `blocks.15.hook_resid_post` and stopping there (the capture stage's workload).
//!
//! Shared machines make absolute tokens/s noisy, so the run also times a plain matmul of the
//! model's largest shape and reports the forward pass's arithmetic rate as a fraction of it:
//! a ratio measured in one run, comparable across runs.
//!
//! Both matmul kinds run, interleaved per case, from two loads of the same file.
//!
//! `cargo run -p monoscope-lm --example throughput [--release] -- [PATH] [BATCHES] [f32|int8]`
//! (the last argument runs one kind only, e.g. to profile it).

use std::path::PathBuf;
use std::time::Instant;

use monoscope_lm::{Device, ForwardOptions, Logits, MatmulKind, ModelOptions, Tensor, TokenBatch};

const BATCH: usize = 16;
const SEQ: usize = 128;

/// GFLOP/s of `[BATCH*SEQ, d_model] x [d_model, 2 d_ff]`, best of a few.
fn matmul_rate(d: usize, out: usize, device: &Device) -> f64 {
    use burn::tensor::Distribution;
    let x: Tensor<2> = Tensor::random([BATCH * SEQ, d], Distribution::Normal(0.0, 1.0), device);
    let w: Tensor<2> = Tensor::random([d, out], Distribution::Normal(0.0, 1.0), device);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        drop(x.clone().matmul(w.clone()).into_data());
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (BATCH * SEQ * d * out) as f64 / best / 1e9
}

fn main() -> Result<(), monoscope_lm::LmError> {
    let mut args = std::env::args().skip(1);
    let path = args.next().map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").unwrap_or_default();
        PathBuf::from(home).join(".cache/monoscope/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    let batches: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let device = Device::flex();
    let t0 = Instant::now();
    let kinds = match args.next().as_deref() {
        Some("f32") => vec![MatmulKind::F32],
        Some("int8") => vec![MatmulKind::Int8],
        _ => vec![MatmulKind::F32, MatmulKind::Int8],
    };
    let models = kinds
        .iter()
        .map(|&kind| monoscope_lm::load_with(&path, &device, &ModelOptions::with_matmul(kind)))
        .collect::<Result<Vec<_>, _>>()?;
    let model = &models[0];
    eprintln!("loaded {} in {:.2?}", model.name(), t0.elapsed());
    let c = model.config().clone();

    let vocab = c.vocab_size as u64;
    let mut state = 12345u64;
    let mut next_id = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % vocab) as u32
    };
    let rows: Vec<Vec<u32>> = (0..BATCH)
        .map(|_| (0..SEQ).map(|_| next_id()).collect())
        .collect();
    let input = TokenBatch::from_rows(&rows)?;
    let hook = model.hook("blocks.15.hook_resid_post")?;
    let capture = ForwardOptions::capture(vec![hook]);
    for m in &models {
        m.forward(&input, &capture)?; // warm-up
    }

    // Multiply-adds per token and block: projections, MLP, and attention over the window.
    let (d, q, kv) = (c.d_model, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
    let per_block = 2 * (d * (q + 2 * kv) + q * d + 3 * d * c.d_ff) + 4 * SEQ * q;
    for (label, blocks, options) in [
        ("through block 15", 16, capture),
        (
            "all blocks + logits",
            c.n_layers,
            ForwardOptions {
                logits: Logits::All,
                ..ForwardOptions::default()
            },
        ),
    ] {
        let peak_before = matmul_rate(d, 2 * c.d_ff, &device);
        // Interleaved, so that both kinds see the same load from other processes.
        let mut secs = vec![0.0f64; models.len()];
        for _ in 0..batches {
            for (model, s) in models.iter().zip(&mut secs) {
                let t = Instant::now();
                let out = model.forward(&input, &options)?;
                // Reading back forces any lazy computation.
                match out.logits {
                    Some(l) => drop(monoscope_lm::to_host(l, "logits")?),
                    None => drop(out.activation_host(&hook)?),
                }
                *s += t.elapsed().as_secs_f64();
            }
        }
        let peak = (peak_before + matmul_rate(d, 2 * c.d_ff, &device)) / 2.0;
        let tokens = (batches * BATCH * SEQ) as f64;
        let mut flops = (blocks * per_block) as f64;
        if options.logits != Logits::Skip {
            flops += (2 * d * c.vocab_size) as f64;
        }
        for (model, secs) in models.iter().zip(secs) {
            let rate = tokens / secs * flops / 1e9;
            println!(
                "{label}, {:?}: {:.0} tokens/s ({batches} x {BATCH}x{SEQ} in {secs:.2} s); \
                 {rate:.1} GFLOP/s = {:.0}% of a plain f32 matmul's {peak:.1} GFLOP/s in the \
                 same run",
                model.matmul_kind(),
                tokens / secs,
                100.0 * rate / peak
            );
        }
    }
    Ok(())
}
