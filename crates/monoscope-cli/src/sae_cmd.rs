//! `monoscope sae info <dir>`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use monoscope_artifacts::train::TrainOutputs;

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
    let eval = match TrainOutputs::around_sae(&dir) {
        Some(outputs) => outputs.eval()?,
        None => None,
    };
    if let Some(eval) = eval {
        println!("held-out      {} tokens", eval.tokens);
        for (key, v) in [
            ("l0", eval.l0),
            ("fvu", eval.fvu),
            ("mse", eval.mse),
            ("dead_fraction", eval.dead_fraction),
            ("dense_fraction", eval.dense_fraction),
        ] {
            println!("  {key:<15} {v:.4}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
