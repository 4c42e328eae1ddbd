//! The CE-loss splice of a saved SAE on the held-out (last) shard of an activation store:
//!
//! `cargo run -p monoscope-train --example splice -- <store dir> <SAE dir> [predictions] [model]`
//!
//! The model defaults to the cached default the store was captured with. Prints the
//! `SpliceReport` as JSON and the seconds it took.

use std::path::PathBuf;
use std::time::Instant;

use monoscope_sae::SpliceEvaluator;
use monoscope_train::splice::{ModelSplice, cached_default_model, held_out_windows};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [store, sae, rest @ ..] = args.as_slice() else {
        return Err("usage: splice <store dir> <SAE dir> [predictions] [model]".into());
    };
    let predictions: usize = rest.first().map_or(Ok(2048), |s| s.parse())?;
    let store = monoscope_store::Store::open(&PathBuf::from(store))?;
    let sae = monoscope_sae::load_sae(&PathBuf::from(sae))?;
    let manifest = store.manifest();
    let model_path = match rest.get(1) {
        Some(p) => PathBuf::from(p),
        None => cached_default_model(&manifest.model.name)
            .ok_or("no cached copy of the store's model: pass its path")?,
    };
    let model = monoscope_lm::load(&model_path, &monoscope_lm::Device::flex())?;
    let hook = model.hook(
        sae.metadata
            .hook_name
            .as_deref()
            .unwrap_or(&manifest.hooks[0]),
    )?;
    let last = store.shard_count() - 1;
    let rows = store.shard_rows(last).start..store.row_count();
    let bos = model.tokenizer().bos_id();
    let windows = held_out_windows(&store, rows, bos, manifest.context_length, predictions)?;
    let start = Instant::now();
    let report = ModelSplice::new(&model, hook, windows, bos.is_some()).evaluate_splice(&sae)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    println!("seconds: {:.1}", start.elapsed().as_secs_f64());
    Ok(())
}
