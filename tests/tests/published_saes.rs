//! A user with a Gemma 2 model and a Gemma Scope SAE labels, maps and steers its features
//! without training: capture → import-sae (evaluated on the store) → autointerp-label →
//! cluster → steer, on the tiny random Gemma 2 that `tests/fixtures/make_models.py` made with
//! transformers and an SAE written in Gemma Scope's published layout.

use std::path::{Path, PathBuf};

// Linked so that their stages register.
use monoscope_capture as _;
use monoscope_cluster as _;
use monoscope_fetch as _;
use monoscope_label as _;
use monoscope_steer as _;
use monoscope_train as _;

use monoscope_config::load_with_env;
use monoscope_core::{CancelToken, Registry};
use monoscope_exec::{ProgressMode, RunOptions};

/// The tiny Gemma 2 (d_model 32, 3 layers, a word-level tokenizer over `t3` … `t95`).
fn gemma2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/monoscope-lm/tests/fixtures/transformers/gemma2")
}

/// Documents of random words the tokenizer knows.
fn corpus(path: &Path) {
    let mut state = 7u64;
    let mut word = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        format!("t{}", 3 + (state >> 33) % 93)
    };
    let docs: Vec<String> = (0..24)
        .map(|_| (0..40).map(|_| word()).collect::<Vec<_>>().join(" "))
        .collect();
    std::fs::write(path, docs.join("\n\n")).unwrap();
}

/// A JumpReLU SAE on `blocks.1.hook_resid_post` in Gemma Scope's layout.
fn gemma_scope_sae(root: &Path) -> PathBuf {
    let (d_in, d_sae) = (32usize, 64usize);
    let mut state = 3u64;
    let mut normal = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
    };
    let w_enc: Vec<f32> = (0..d_in * d_sae).map(|_| normal() * 0.5).collect();
    let w_dec: Vec<f32> = (0..d_sae * d_in).map(|_| normal() * 0.3).collect();
    let b_enc: Vec<f32> = (0..d_sae).map(|_| normal() * 0.1).collect();
    let b_dec: Vec<f32> = (0..d_in).map(|_| normal() * 0.1).collect();
    let threshold: Vec<f32> = (0..d_sae).map(|_| 0.2 + normal().abs() * 0.2).collect();
    let dir = root.join("gemma-scope-2b-pt-res/layer_1/width_64/average_l0_10");
    std::fs::create_dir_all(&dir).unwrap();
    monoscope_sae::format::write_npz(
        &dir.join("params.npz"),
        &[
            ("W_enc", &[d_in, d_sae], &w_enc),
            ("W_dec", &[d_sae, d_in], &w_dec),
            ("b_enc", &[d_sae], &b_enc),
            ("b_dec", &[d_in], &b_dec),
            ("threshold", &[d_sae], &threshold),
        ],
    )
    .unwrap();
    dir
}

#[test]
fn a_gemma_scope_sae_is_labelled_mapped_and_steered_without_training() {
    let dir = tempfile::tempdir().unwrap();
    let corpus_path = dir.path().join("corpus.txt");
    corpus(&corpus_path);
    let sae = gemma_scope_sae(dir.path());
    let s = |p: &Path| format!("{:?}", p.display().to_string());
    let pipeline = format!(
        "[pipeline]\nname = \"gemma-scope\"\nrun_dir = {run}\nseed = 0\n\
         [model]\nkind = \"fetch-model\"\nmodel = {model}\n\
         [corpus]\nkind = \"fetch-corpus\"\ncorpus = {corpus}\n\
         [capture]\nkind = \"capture\"\ninputs = {{ model = \"model.model\", corpus = \"corpus.corpus\" }}\n\
         hooks = [\"blocks.1.hook_resid_post\"]\nsplit = \"paragraph\"\ncontext_length = 16\n\
         batch_size = 4\ndtype = \"f32\"\nrows_per_shard = 128\n\
         [sae]\nkind = \"import-sae\"\npath = {sae}\ninputs = {{ store = \"capture.store\" }}\n\
         [label]\nkind = \"autointerp-label\"\nexplainer = \"statistical\"\ncache = false\n\
         inputs = {{ sae = \"sae.sae\", store = \"capture.store\", model = \"model.model\" }}\n\
         [cluster]\nkind = \"cluster\"\ninputs = {{ sae = \"sae.sae\", labels = \"label.labels\" }}\n\
         [steer]\nkind = \"steer\"\ninputs = {{ sae = \"sae.sae\", model = \"model.model\", labels = \"label.labels\" }}\n\
         max_new_tokens = 6\nprompts = [\"t5 t6 t7\"]\n\
         experiments = [{{ feature = \"text:t10 t11 t12 t13\", multiples = [0, 2], targets = [\"t10\"] }}]\n",
        run = s(&dir.path().join("run")),
        model = s(&gemma2()),
        corpus = s(&corpus_path),
        sae = s(&sae),
    );
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, pipeline).unwrap();
    let mut p =
        load_with_env(&path, &[], &Registry::builtin(), false).unwrap_or_else(|e| panic!("{e}"));
    monoscope_exec::run(
        &mut p,
        &RunOptions {
            force: false,
            cancel: CancelToken::new(),
            progress: ProgressMode::Hidden,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let run = dir.path().join("run");
    // Imported in the SAELens layout with its hook read from the release's path, and
    // evaluated on the captured rows.
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("sae/sae/cfg.json")).unwrap()).unwrap();
    assert_eq!(cfg["architecture"], "jumprelu");
    assert_eq!(cfg["metadata"]["hook_name"], "blocks.1.hook_resid_post");
    let eval: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("sae/eval.json")).unwrap()).unwrap();
    assert!(eval["l0"].as_f64().unwrap() > 0.0, "{eval}");
    // Labelled, mapped, steered.
    let labels = std::fs::read_to_string(run.join("label/labels.jsonl")).unwrap();
    assert!(labels.lines().count() > 0);
    assert!(run.join("cluster").read_dir().unwrap().count() > 0);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("steer/report.json")).unwrap()).unwrap();
    let experiment = &report["experiments"][0];
    // The feature found by text carries the maximum activation measured by the import's
    // evaluation, and clamping it at twice that moves the model's distribution.
    assert!(
        experiment["features"][0]["max_activation"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{report}"
    );
    let clamped = &experiment["effects"][1];
    assert_eq!(clamped["multiple"], 2.0);
    assert!(clamped["kl_neutral"].as_f64().unwrap() > 0.01, "{report}");
}
