//! `cargo xtask bench <what>`: each benchmark prints a table for people, then one JSON object
//! per measurement (`{"bench","case","metric","value","unit"}`, plus `peak_rss_mib` where the
//! process's peak memory applies).

mod capture;
mod cluster;
mod forward;
mod matmul;
mod quality;
mod report;
mod store;
mod train;

use std::process::ExitCode;

/// Every benchmark: name, what it measures, entry point.
type Bench = (
    &'static str,
    &'static str,
    fn(&[String]) -> anyhow::Result<()>,
);

const BENCHES: &[Bench] = &[
    (
        "capture",
        "capture stage tokens/s on SmolLM2-135M over the Wikipedia summaries (block 15, f16 store)",
        capture::run,
    ),
    (
        "cluster",
        "exact top-10 decoder neighbours (16k, 64k features; d 576, 768); IVF time, memory, recall@10 on 262k",
        cluster::run,
    ),
    (
        "forward",
        "SmolLM2-135M prompt tokens/s, 16x128 wiki windows, f32 and int8, vs same-run matmul",
        forward::run,
    ),
    (
        "matmul",
        "fp32 matrix-multiply rate of burn's flex backend (the machine's peak for our code)",
        matmul::run,
    ),
    (
        "quality",
        "held-out FVU, L0, dead, ce_loss_score of a quality run's SAEs (runs/quality), optionally vs sparsify on the same rows",
        quality::run,
    ),
    (
        "store",
        "activation store write/read MB/s and compression ratio for f32, f16, bf16",
        store::run,
    ),
    (
        "train",
        "SAE training tokens/s (TopK-32, ReLU+L1; 768x16384, 512x4096, batch 4096) vs encoder bound",
        train::run,
    ),
];

fn main() -> ExitCode {
    monoscope_core::retain_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        eprintln!("usage: cargo xtask bench <what> [args]\n");
        for (name, doc, _) in BENCHES {
            eprintln!("  {name:<10} {doc}");
        }
        return ExitCode::from(2);
    };
    let Some((_, _, run)) = BENCHES.iter().find(|(n, _, _)| n == name) else {
        let known: Vec<&str> = BENCHES.iter().map(|b| b.0).collect();
        eprintln!("unknown benchmark `{name}` (known: {})", known.join(", "));
        return ExitCode::from(2);
    };
    match run(&args[1..]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
