//! capture → train through the executor on a tiny random-weight GGUF model.

use std::path::Path;

use monoscope_capture as _;
use monoscope_config::{load_with_env, parse_override};
use monoscope_core::{CancelToken, Registry};
use monoscope_exec::{ProgressMode, RunOptions};
use monoscope_train as _;

fn pipeline(dir: &Path, set: &[String]) -> monoscope_config::Pipeline {
    let model = dir.join("tiny.gguf");
    monoscope_formats::testing::TinyLlama::default()
        .write(&model)
        .unwrap();
    let corpus = dir.join("corpus.txt");
    let text: Vec<String> = (0..300)
        .map(|i| format!("Note {i}: the river {} flows past hill {}.", i % 17, i % 5))
        .collect();
    std::fs::write(&corpus, text.join("\n\n")).unwrap();
    let path = dir.join("p.toml");
    std::fs::write(
        &path,
        format!(
            "[pipeline]\nname = \"t\"\nrun_dir = {:?}\n\
             [capture]\nkind = \"capture\"\nmodel = {:?}\ncorpus = {:?}\nsplit = \"paragraph\"\n\
             hooks = [\"blocks.1.hook_resid_post\"]\ncontext_length = 32\nrows_per_shard = 512\ndtype = \"f32\"\n\
             [train]\nkind = \"train\"\ninput = \"capture\"\nd_sae = 128\nk = 8\nbatch_size = 64\nepochs = 3\nmetrics_every = 10\n",
            dir.join("run").display().to_string(),
            model.display().to_string(),
            corpus.display().to_string()
        ),
    )
    .unwrap();
    let overrides: Vec<_> = set.iter().map(|s| parse_override(s).unwrap()).collect();
    load_with_env(&path, &overrides, &Registry::builtin(), false).unwrap_or_else(|e| panic!("{e}"))
}

fn quiet() -> RunOptions {
    RunOptions {
        force: false,
        cancel: CancelToken::new(),
        progress: ProgressMode::Hidden,
    }
}

#[test]
fn a_topk_sae_trains_on_captured_activations_and_is_saved_and_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    monoscope_exec::run(&mut pipeline(dir.path(), &[]), &quiet()).unwrap();
    let stage = dir.path().join("run/train");
    let sae = monoscope_sae::load_saelens(&stage.join("sae")).unwrap();
    assert_eq!((sae.d_in, sae.d_sae), (64, 128));
    assert_eq!(
        sae.metadata.hook_name.as_deref(),
        Some("blocks.1.hook_resid_post")
    );

    let eval: serde_json::Value =
        serde_json::from_slice(&std::fs::read(stage.join("eval.json")).unwrap()).unwrap();
    let (l0, fvu) = (eval["l0"].as_f64().unwrap(), eval["fvu"].as_f64().unwrap());
    assert!(
        (l0 - 8.0).abs() < 1e-9,
        "TopK 8 must have L0 8 on held-out rows, got {l0}"
    );
    // An untrained SAE reconstructs nothing (FVU about 1); a trained one explains most variance.
    assert!(fvu < 0.5, "held-out FVU {fvu}: training did not work");

    let metrics = std::fs::read_to_string(stage.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 2);
    let first = lines.first().unwrap()["fvu"].as_f64().unwrap();
    let last = lines.last().unwrap()["fvu"].as_f64().unwrap();
    assert!(last < first, "training FVU went from {first} to {last}");
}

#[test]
fn holding_out_every_shard_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = monoscope_exec::run(
        &mut pipeline(dir.path(), &["train.holdout_shards=100".into()]),
        &quiet(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("holdout_shards = 100 leaves no shard to train on"),
        "{err}"
    );
}
