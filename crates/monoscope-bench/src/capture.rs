//! `capture [--tokens N]`: the capture stage's tokens/s on the default model and corpus
//! (windows of 128, batch 16, `blocks.15.hook_resid_post`, f16 store), the same code path a
//! pipeline runs, with the fp32 matmul rate measured in the same run.

use std::time::Instant;

use anyhow::Context;
use monoscope_capture::CaptureConfig;
use monoscope_core::{CancelToken, OutputPort, Progress, StageContext};

use crate::matmul::gflops;
use crate::report::{Measurement, emit};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let usage = "usage: capture [--tokens N] [--matmul f32|int8]";
    let (mut tokens, mut matmul) = (16_384u64, "f32".to_string());
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| anyhow::anyhow!("{usage}"))?;
        match flag.as_str() {
            "--tokens" => tokens = value.parse().context("--tokens N")?,
            "--matmul" => matmul = value.clone(),
            _ => anyhow::bail!("{usage}"),
        }
    }
    let model_path = monoscope_fetch::resolve_model("smollm2")?;
    let corpus = monoscope_fetch::resolve_corpus("wiki")?;
    let config: CaptureConfig =
        serde_json::from_value(serde_json::json!({ "max_tokens": tokens, "matmul": matmul }))
            .with_context(|| format!("--matmul {matmul}: expected f32 or int8"))?;
    let model = monoscope_lm::ModelSpec::new(&model_path)
        .with_matmul(config.matmul)
        .load()?;
    let scratch =
        std::env::temp_dir().join(format!("monoscope-bench-capture-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let cancel = CancelToken::new();
    // Outputs with no consumer: what a pipeline does when nothing reads the stream.
    let outputs = ["activations", "store"].map(|p| OutputPort::new(p, Vec::new(), cancel.clone()));
    let mut ctx = StageContext::new(
        "capture",
        &scratch,
        scratch.join("capture"),
        0,
        cancel.clone(),
        Progress::hidden("capture"),
        Vec::new(),
        outputs.into(),
    );
    std::fs::create_dir_all(&ctx.stage_dir)?;
    let started = Instant::now();
    monoscope_capture::stage::capture(&model, &corpus, &config, &mut ctx)
        .map_err(|e| anyhow::anyhow!("capture: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let rows = monoscope_store::Store::open(&ctx.stage_dir.join("store"))?.row_count();
    std::fs::remove_dir_all(&scratch)?;
    let case = format!("smollm2 wiki {tokens} tokens, 16x128, block 15, f16, {matmul}");
    emit(&[
        Measurement::new(
            "capture",
            &case,
            "tokens_per_s",
            tokens as f64 / seconds,
            "tokens/s",
        )
        .with_peak_rss(),
        Measurement::new("capture", &case, "rows_stored", rows as f64, "rows"),
        Measurement::new(
            "capture",
            "flex f32 2048x576x3072",
            "matmul_rate",
            gflops(2048, 576, 3072),
            "GFLOP/s",
        ),
    ]);
    Ok(())
}
