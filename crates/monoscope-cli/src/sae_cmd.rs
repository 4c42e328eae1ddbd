//! `monoscope sae info <dir>`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum SaeCommand {
    /// Architecture, shapes, hook, decoder norms, and the metrics of `eval.json` beside it.
    Info {
        /// A SAELens (`cfg.json` + `sae_weights.safetensors`) or sparsify directory.
        dir: PathBuf,
    },
}

pub fn run(command: SaeCommand) -> anyhow::Result<ExitCode> {
    let SaeCommand::Info { dir } = command;
    let sae = monoscope_sae::load_sae(&dir)?;
    println!("sae           {}", dir.display());
    println!("architecture  {:?}", sae.architecture);
    println!("shape         d_in {} → d_sae {}", sae.d_in, sae.d_sae);
    let m = &sae.metadata;
    println!(
        "model         {}",
        m.model_name.as_deref().unwrap_or("unknown")
    );
    println!(
        "hook          {}",
        m.hook_name.as_deref().unwrap_or("unknown")
    );
    if let Some(training) = &m.training_architecture {
        println!("trained as    {training}");
    }
    let mut norms = sae.decoder_norms();
    norms.sort_by(f32::total_cmp);
    if let (Some(min), Some(max)) = (norms.first(), norms.last()) {
        println!(
            "decoder norms min {min:.4}  median {:.4}  max {max:.4}",
            norms[norms.len() / 2]
        );
    }
    if let Some(eval) = eval_beside(&dir) {
        let get = |k: &str| eval.get(k).and_then(serde_json::Value::as_f64);
        println!(
            "held-out      {} tokens",
            eval.get("tokens").map_or("?".into(), |t| t.to_string())
        );
        for key in ["l0", "fvu", "mse", "dead_fraction", "dense_fraction"] {
            if let Some(v) = get(key) {
                println!("  {key:<15} {v:.4}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The train stage writes `eval.json` next to the `sae/` directory.
fn eval_beside(dir: &Path) -> Option<serde_json::Value> {
    let path = dir.parent()?.join("eval.json");
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}
