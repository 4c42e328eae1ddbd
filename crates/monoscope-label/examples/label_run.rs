//! Runs the autointerp-label stage on an existing run's train and capture outputs, without a
//! pipeline file: `cargo run -p monoscope-label --example label_run -- runs/quickstart OUT
//! [max_features] [explainer] [explain_batch] [noscore]`. The response cache is off, so that the
//! time is the explainer's.

use std::path::PathBuf;
use std::time::Instant;

use monoscope_core::{CancelToken, Progress};
use monoscope_label::{ExplainerKind, Inputs, LabelConfig, run_label};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [run, out, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: label_run <run dir> <output dir> [max_features] [local|statistical|http] [explain_batch] [noscore]".into(),
        );
    };
    let run = PathBuf::from(run);
    let mut config = LabelConfig {
        cache: false,
        ..LabelConfig::default()
    };
    if let Some(n) = rest.first() {
        config.max_features = n.parse()?;
    }
    if let Some(kind) = rest.get(1) {
        config.explainer = match kind.as_str() {
            "statistical" => ExplainerKind::Statistical,
            "http" => ExplainerKind::Http,
            _ => ExplainerKind::Local,
        };
    }
    if let Some(batch) = rest.get(2) {
        config.explain_batch = batch.parse()?;
    }
    if rest.get(3).is_some_and(|a| a == "noscore") {
        config.score = false;
    }
    let inputs = Inputs {
        sae: run.join("train/sae"),
        store: run.join("capture/store"),
        model: monoscope_fetch::resolve_model(&config.model)?,
        device: Default::default(),
    };
    let started = Instant::now();
    let summary = run_label(
        &config,
        &inputs,
        &PathBuf::from(out),
        0,
        &Progress::hidden("label"),
        &CancelToken::new(),
    )?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    println!("wall seconds: {:.1}", started.elapsed().as_secs_f64());
    Ok(())
}
