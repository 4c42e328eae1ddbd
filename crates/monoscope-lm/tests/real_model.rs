//! The real default model (SmolLM2-135M-Instruct, Q4_1 GGUF) from the monoscope cache
//! (`$MONOSCOPE_CACHE/models`, default `~/.cache/monoscope/models`). Each test prints a message
//! and passes when the file is absent; nothing is ever downloaded here. Run only these with
//! `cargo test -p monoscope-lm real_model_`.

use std::path::PathBuf;
use std::sync::OnceLock;

use monoscope_formats::ChatMessage;
use monoscope_lm::{Device, ForwardOptions, GenerateOptions, Model, PadSide, TokenBatch};

const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn model_path() -> PathBuf {
    let cache = std::env::var_os("MONOSCOPE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/monoscope")
        });
    cache.join("models").join(FILE)
}

/// Loaded once for all tests in this file.
fn model() -> Option<&'static Model> {
    static MODEL: OnceLock<Option<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = model_path();
            let how = "cargo xtask pipeline run pipelines/fetch.toml";
            if !monoscope_formats::testing::real_file_present(&path, how) {
                return None;
            }
            Some(monoscope_lm::load(&path, &Device::flex()).expect("load the default model"))
        })
        .as_ref()
}

#[test]
fn real_model_config_and_hooks() {
    let Some(model) = model() else { return };
    let c = model.config();
    assert_eq!(
        (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads),
        (30, 576, 9, 3)
    );
    assert_eq!(model.hook_names().len(), 30 * 11 + 1);
    let msg = model
        .hook("blocks.99.hook_resid_post")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("blocks.99.hook_resid_post") && msg.contains("0..=29"),
        "{msg}"
    );
}

#[test]
fn real_model_greedy_continuation_knows_paris() {
    let Some(model) = model() else { return };
    let text = model
        .generate_text("The capital of France is", &GenerateOptions::greedy(8))
        .unwrap();
    eprintln!("continuation: {text:?}");
    assert!(text.contains("Paris"), "continuation: {text:?}");
}

#[test]
fn real_model_chat_answers_paris() {
    let Some(model) = model() else { return };
    let tok = model.tokenizer();
    let prompt = tok
        .apply_chat_template(
            &[ChatMessage::new("user", "What is the capital of France?")],
            true,
        )
        .unwrap();
    let ids = tok.encode(&prompt, false).unwrap();
    let generation = model.generate(&ids, &GenerateOptions::greedy(24)).unwrap();
    let answer = tok.decode(&generation.tokens);
    eprintln!("chat answer: {answer:?}");
    assert!(
        answer.contains("Paris"),
        "prompt {prompt:?}, answer: {answer:?}"
    );
}

#[test]
fn real_model_capture_stops_early_and_pads_cleanly() {
    let Some(model) = model() else { return };
    let tok = model.tokenizer();
    let a = tok
        .encode(
            "The Eiffel Tower is in Paris, the capital of France.",
            false,
        )
        .unwrap();
    let b = tok.encode("Water boils at 100 degrees.", false).unwrap();
    let hook = model.hook("blocks.15.hook_resid_post").unwrap();
    let batch = TokenBatch::padded(&[a.clone(), b], PadSide::Left, 0).unwrap();
    let stopped = model
        .forward(&batch, &ForwardOptions::capture(vec![hook]))
        .unwrap();
    let full = model
        .forward(
            &batch,
            &ForwardOptions {
                record: vec![hook],
                ..ForwardOptions::default()
            },
        )
        .unwrap();
    let acts = stopped.activation_host(&hook).unwrap();
    assert_eq!(acts.len(), 2 * batch.seq() * 576);
    assert_eq!(acts, full.activation_host(&hook).unwrap());
    // Row 0 is unpadded; alone it gives the same activations.
    let alone = model
        .forward(
            &TokenBatch::single(&a).unwrap(),
            &ForwardOptions::capture(vec![hook]),
        )
        .unwrap()
        .activation_host(&hook)
        .unwrap();
    let row0 = &acts[..a.len() * 576];
    let diff = row0
        .iter()
        .zip(&alone)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    let scale = alone.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(
        diff <= 1e-4 * scale,
        "padded batch differs: {diff} of {scale}"
    );
}
