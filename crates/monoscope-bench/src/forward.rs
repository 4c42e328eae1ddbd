//! Prompt-processing throughput of the language-model runtime on the default model
//! (SmolLM2-135M): windows of 128 tokens of Wikipedia text, batch 16, through block 15 (the
//! capture stage's workload) and through all blocks with logits, for each matmul kind.
//!
//! The machine is shared, so absolute tokens/s move from run to run. Each batch runs once per
//! kind, interleaved, so that both kinds see the same load, and the fp32 matrix-multiply rate
//! (burn `flex` and the `gemm` crate, on the model's largest product) is measured in the same
//! run, before and after. With `--reference-python PY` (an environment with torch and
//! transformers) Hugging Face transformers runs the same batches in the same run
//! (`xtask/compare/transformers_forward.py`, f32, 2 threads) and each kind's ratio to it is
//! reported; without it that ratio is "not measured". Also reported: how often the int8 path's
//! top-1 next token agrees with fp32's.
//!
//! With `--device D` (a GPU: `cuda`, `wgpu`, …) the same batches and cases run on that device
//! instead, in each precision the device path offers, reported as tokens/s (the CPU's int8
//! kernels and matmul probes do not apply there).
//!
//! `cargo xtask bench forward [--batches N] [--model PATH|NAME] [--corpus PATH|NAME]
//! [--reference-python PY] [--device D]`

use std::time::Instant;

use anyhow::{Context, bail};
use monoscope_lm::{
    Device, ForwardOptions, HookName, Logits, MatmulKind, Model, ModelOptions, TokenBatch,
};

use crate::report::{Measurement, emit};

const BATCH: usize = 16;
const SEQ: usize = 128;
const KINDS: [MatmulKind; 2] = [MatmulKind::F32, MatmulKind::Int8];

struct Args {
    batches: usize,
    model: String,
    corpus: String,
    reference_python: Option<String>,
    device: monoscope_core::DeviceSpec,
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let mut out = Args {
        batches: 3,
        model: "smollm2".into(),
        corpus: "wiki".into(),
        reference_python: None,
        device: monoscope_core::DeviceSpec::Cpu,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--batches" => out.batches = value.parse().context("--batches")?,
            "--model" => out.model = value.clone(),
            "--corpus" => out.corpus = value.clone(),
            "--reference-python" => out.reference_python = Some(value.clone()),
            "--device" => out.device = value.parse().context("--device")?,
            _ => bail!(
                "unknown argument {flag} (expected --batches, --model, --corpus, \
                 --reference-python, --device)"
            ),
        }
    }
    if out.batches == 0 {
        bail!("--batches must be positive");
    }
    Ok(out)
}

/// `batches` batches of `BATCH` windows of `SEQ` consecutive tokens of the corpus' articles.
fn windows(
    model: &Model,
    corpus: &std::path::Path,
    batches: usize,
) -> anyhow::Result<Vec<TokenBatch>> {
    let text = std::fs::read_to_string(corpus).with_context(|| corpus.display().to_string())?;
    let articles: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).context("corpus: a JSON object of articles")?;
    let need = batches * BATCH * SEQ;
    let mut ids = Vec::with_capacity(need + SEQ);
    for article in articles.values() {
        let Some(extract) = article.get("extract").and_then(|e| e.as_str()) else {
            continue;
        };
        ids.extend(model.tokenizer().encode(extract, false)?);
        if ids.len() >= need {
            break;
        }
    }
    if ids.len() < need {
        bail!("corpus has {} tokens, {need} needed", ids.len());
    }
    ids.chunks(BATCH * SEQ)
        .take(batches)
        .map(|chunk| {
            let rows: Vec<Vec<u32>> = chunk.chunks(SEQ).map(<[u32]>::to_vec).collect();
            Ok(TokenBatch::from_rows(&rows)?)
        })
        .collect()
}

fn run_once(
    model: &Model,
    batch: &TokenBatch,
    options: &ForwardOptions,
) -> anyhow::Result<Option<Vec<f32>>> {
    let mut out = model.forward(batch, options)?;
    Ok(match out.logits.take() {
        // Taken, not cloned: the only handle lets the 400 MB buffer come back without a copy.
        Some(logits) => Some(monoscope_lm::to_host(logits, "logits")?),
        None => {
            for hook in &options.record {
                drop(out.activation_host(hook)?);
            }
            None
        }
    })
}

/// transformers' tokens/s on the same batches, by case name, from
/// `xtask/compare/transformers_forward.py` run with `python`.
fn transformers_rates(
    python: &str,
    model: &std::path::Path,
    batches: &[TokenBatch],
    block: usize,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let dir = tempfile::tempdir()?;
    let ids_path = dir.path().join("ids.json");
    let ids: Vec<Vec<&[u32]>> = batches
        .iter()
        .map(|b| b.ids().chunks(b.seq()).collect())
        .collect();
    std::fs::write(&ids_path, serde_json::to_vec(&ids)?)?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../xtask/compare/transformers_forward.py"
    );
    let output = std::process::Command::new(python)
        .arg(script)
        .arg("--model")
        .arg(model)
        .arg("--ids")
        .arg(&ids_path)
        .args(["--block", &block.to_string(), "--threads", "2"])
        .output()
        .with_context(|| format!("running {python} {script}"))?;
    if !output.status.success() {
        bail!(
            "{script} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("{script} printed {line:?}"))
}

/// Fraction of positions where both logit sets pick the same top-1 token.
fn top1_agreement(a: &[f32], b: &[f32], vocab: usize) -> f64 {
    let argmax = |row: &[f32]| {
        row.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 { (i, v) } else { best }
            })
            .0
    };
    let rows = a.len() / vocab;
    let same = a
        .chunks(vocab)
        .zip(b.chunks(vocab))
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count();
    same as f64 / rows as f64
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let args = parse(args)?;
    let model_path = monoscope_fetch::resolve_model(&args.model)?;
    let corpus = monoscope_fetch::resolve_corpus(&args.corpus)?;
    if !args.device.is_cpu() {
        return on_device(&args, &model_path, &corpus);
    }
    let device = Device::flex();
    let models = KINDS
        .iter()
        .map(|&kind| {
            monoscope_lm::load_with(&model_path, &device, &ModelOptions::with_matmul(kind))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let c = models[0].config().clone();
    let batches = windows(&models[0], &corpus, args.batches)?;
    let hook = HookName::resid_post(15.min(c.n_layers - 1));
    let capture = ForwardOptions::capture(vec![hook]);
    let all = ForwardOptions {
        logits: Logits::All,
        ..ForwardOptions::default()
    };
    for model in &models {
        run_once(model, &batches[0], &capture)?; // warm-up: page in weights, start threads
    }

    let (d, q, kv) = (c.d_model, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
    let biggest = (BATCH * SEQ, d, 2 * c.d_ff);
    let peak = |m: &mut Vec<f64>, g: &mut Vec<f64>| {
        m.push(crate::matmul::gflops(biggest.0, biggest.1, biggest.2));
        g.push(crate::matmul::gemm_gflops(biggest.0, biggest.1, biggest.2));
    };
    let (mut burn_rates, mut gemm_rates) = (Vec::new(), Vec::new());
    peak(&mut burn_rates, &mut gemm_rates);

    // Multiply-adds per token and block: projections, MLP, attention over the window.
    let per_block = 2 * (d * (q + 2 * kv) + q * d + 3 * d * c.d_ff) + 4 * SEQ * q;
    let block = 15.min(c.n_layers - 1);
    let through = format!("through block {block}");
    let reference = match &args.reference_python {
        Some(python) => Some(transformers_rates(python, &model_path, &batches, block)?),
        None => None,
    };
    let rate = |name: &str| {
        reference
            .as_ref()
            .and_then(|r| r.get(name).and_then(|v| v.as_f64()))
    };
    let cases = [
        (
            through.as_str(),
            &capture,
            (block + 1) * per_block,
            rate(&through),
        ),
        (
            "all blocks + logits",
            &all,
            c.n_layers * per_block + 2 * d * c.vocab_size,
            rate("all blocks + logits"),
        ),
    ];
    let tokens = (args.batches * BATCH * SEQ) as f64;
    let mut results = Vec::new();
    let mut agreement = None;
    for (label, options, flops, reference) in cases {
        let mut secs = [0.0f64; KINDS.len()];
        for (i, batch) in batches.iter().enumerate() {
            let mut logits = Vec::new();
            for (model, s) in models.iter().zip(&mut secs) {
                let t = Instant::now();
                let l = run_once(model, batch, options)?;
                *s += t.elapsed().as_secs_f64();
                logits.push(l);
            }
            if let (0, [Some(f), Some(q)]) = (i, logits.as_slice()) {
                agreement = Some(top1_agreement(f, q, c.vocab_size));
            }
        }
        for (kind, s) in KINDS.iter().zip(secs) {
            results.push((
                label,
                *kind,
                tokens / s,
                flops as f64 * tokens / s / 1e9,
                reference,
            ));
        }
    }
    peak(&mut burn_rates, &mut gemm_rates);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (burn_peak, gemm_peak) = (mean(&burn_rates), mean(&gemm_rates));
    let fp32_peak = burn_peak.max(gemm_peak);

    let shape = format!("{}x{}x{}", biggest.0, biggest.1, biggest.2);
    let mut out = vec![
        Measurement::new(
            "forward",
            &format!("burn flex f32 {shape}"),
            "rate",
            burn_peak,
            "GFLOP/s",
        ),
        Measurement::new(
            "forward",
            &format!("gemm crate f32 {shape}"),
            "rate",
            gemm_peak,
            "GFLOP/s",
        ),
    ];
    for (label, kind, tps, gflops, reference) in results {
        let case = format!("{kind:?} {label} ({BATCH}x{SEQ})");
        out.push(Measurement::new("forward", &case, "throughput", tps, "tokens/s").with_peak_rss());
        out.push(Measurement::new(
            "forward",
            &case,
            "arithmetic rate",
            gflops,
            "GFLOP/s",
        ));
        out.push(Measurement::new(
            "forward",
            &case,
            "of fp32 matmul peak",
            gflops / fp32_peak,
            "x",
        ));
        match reference {
            Some(r) => out.push(Measurement::new(
                "forward",
                &case,
                "vs transformers",
                tps / r,
                "x",
            )),
            None => println!(
                "{case}: vs transformers not measured (pass --reference-python PY to run it \
                 in this run)"
            ),
        }
    }
    if let Some(a) = agreement {
        out.push(Measurement::new(
            "forward",
            &format!("Int8 vs F32 next-token top-1 ({BATCH}x{SEQ} wiki)"),
            "agreement",
            100.0 * a,
            "%",
        ));
    }
    emit(&out);
    Ok(())
}

/// `--device D`: the two cases' tokens/s on a GPU, batches as on the CPU. Every batch's
/// outputs are read back to the host, which waits for the device.
fn on_device(
    args: &Args,
    model_path: &std::path::Path,
    corpus: &std::path::Path,
) -> anyhow::Result<()> {
    let device = monoscope_device::open(args.device)?;
    let options = ModelOptions::with_matmul(MatmulKind::F32);
    let model = monoscope_lm::load_with(model_path, &device, &options)?;
    let c = model.config().clone();
    let batches = windows(&model, corpus, args.batches)?;
    let block = 15.min(c.n_layers - 1);
    let through = format!("through block {block}");
    let capture = ForwardOptions::capture(vec![HookName::resid_post(block)]);
    let all = ForwardOptions {
        logits: Logits::All,
        ..ForwardOptions::default()
    };
    let tokens = (args.batches * BATCH * SEQ) as f64;
    let mut out = Vec::new();
    for (label, options) in [(through.as_str(), &capture), ("all blocks + logits", &all)] {
        run_once(&model, &batches[0], options)?; // warm-up: kernels compiled and tuned
        let started = Instant::now();
        for batch in &batches {
            run_once(&model, batch, options)?;
        }
        let rate = tokens / started.elapsed().as_secs_f64();
        out.push(Measurement::new(
            "forward",
            &format!("{label} f32 on {}", args.device),
            "throughput",
            rate,
            "tokens/s",
        ));
    }
    emit(&out);
    Ok(())
}
