//! `cargo xtask gpu-check`: what a GPU machine should confirm, in one command.
//!
//! 1. The device tests (the burn trainer against the host trainer for every architecture,
//!    checkpoints resumed across devices, the model's forward at every hook and its
//!    generation against the host path) with `MONOSCOPE_TEST_DEVICE` set to the GPU.
//! 2. `bench train --device D` (TopK k = 32 at 768×16384 and 2304×65536, with f32 and with
//!    bf16 products) and `bench forward --device D` (the default model; skipped with a note when it is not in
//!    the cache).
//! 3. With `--sparsify-python PY`: sparsify's training step at the same shapes on the same GPU
//!    (`xtask/compare/sparsify_speed.py`), so the two rates come from one run.
//!
//! Every step prints what it runs; the benchmarks' JSON lines are what BENCHMARKS.md records.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};

use crate::{cargo_command, workspace_root};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The device: `cuda`, `cuda:N`, `rocm`, `wgpu`, … (its cargo feature is switched on).
    #[arg(long, default_value = "cuda")]
    device: String,
    /// A Python with `eai-sparsify` and a CUDA PyTorch, to time sparsify on the same GPU.
    #[arg(long)]
    sparsify_python: Option<PathBuf>,
    /// Timed steps per training case (after warm-up).
    #[arg(long, default_value_t = 20)]
    steps: usize,
}

/// The training shapes timed on the GPU: GPT-2 small's width with 16k latents, and Gemma 2
/// 2B's width with 64k.
const SHAPES: [&str; 2] = ["768x16384", "2304x65536"];

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let backend = args
        .device
        .split(':')
        .next()
        .filter(|b| ["cuda", "rocm", "wgpu", "vulkan", "metal"].contains(b))
        .with_context(|| format!("--device {}: expected a GPU device", args.device))?;
    let features = format!("monoscope-cli/{backend},monoscope-bench/{backend}");

    step("device tests", {
        let mut c = cargo_command(&[
            "test",
            "--release",
            "--workspace",
            "--features",
            &features,
            "--test",
            "device_training",
            "--test",
            "device_forward",
        ]);
        c.env("MONOSCOPE_TEST_DEVICE", &args.device);
        c
    })?;
    let steps = args.steps.to_string();
    let bench = |what: &str, extra: &[&str]| {
        let mut argv = vec![
            "run",
            "--release",
            "--package",
            "monoscope-bench",
            "--features",
            backend,
            "--",
            what,
            "--device",
            &args.device,
        ];
        argv.extend_from_slice(extra);
        cargo_command(&argv)
    };
    step(
        "bench train",
        bench(
            "train",
            &["--case", "topk", "--steps", &steps, "--gpu-shapes"],
        ),
    )?;
    step(
        "bench train, bf16 products",
        bench(
            "train",
            &[
                "--case",
                "topk",
                "--steps",
                &steps,
                "--gpu-shapes",
                "--products",
                "bf16",
            ],
        ),
    )?;
    step("bench forward", bench("forward", &[]))?;
    match &args.sparsify_python {
        Some(python) => {
            let script = workspace_root().join("xtask/compare/sparsify_speed.py");
            let mut c = Command::new(python);
            c.arg(script).args(["--steps", &steps]);
            for shape in SHAPES {
                c.args(["--shape", shape]);
            }
            c.args(["--device", &args.device]);
            step("sparsify on the same shapes", c)?;
        }
        None => eprintln!(
            "\n== sparsify: skipped (give --sparsify-python PY, a Python with eai-sparsify and a \
             CUDA PyTorch)"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn step(what: &str, mut command: Command) -> anyhow::Result<()> {
    eprintln!("\n== {what}: {command:?}");
    let status = command
        .status()
        .with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
