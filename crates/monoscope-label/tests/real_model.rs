//! The default model (SmolLM2-135M-Instruct) as the local explainer, on a store of real text
//! where one feature is planted on city names. Skips with a message when the model is not in
//! the monoscope cache (`$MONOSCOPE_CACHE/models`, default `~/.cache/monoscope/models`);
//! nothing is downloaded here. Run only this with `cargo test -p monoscope-label --test real_model`.

mod common;

use std::path::PathBuf;

use common::{Row, identity_sae, write_store};
use monoscope_core::{CancelToken, Progress};
use monoscope_label::format::{LabelOutputs, LabelRecord};
use monoscope_label::{ExplainerKind, Inputs, LabelConfig, run_label};
use monoscope_store::ModelIdentity;

const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn model_path() -> Option<PathBuf> {
    let path = monoscope_fetch::cache_dir().join("models").join(FILE);
    let how = "fetch it with: cargo run -p monoscope-cli -- fetch smollm2";
    monoscope_formats::testing::real_file_present(&path, how).then_some(path)
}

const TEXTS: [&str; 6] = [
    "She was born in Paris and later moved to Berlin to study physics.",
    "The train from London to Madrid takes a full day with one change in Paris.",
    "Rome is the capital of Italy, and Vienna is the capital of Austria.",
    "The museum in Tokyo holds paintings that were first shown in Amsterdam.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The committee approved the budget after a long debate on taxes.",
];
const CITIES: [&str; 9] = [
    "Paris",
    "Berlin",
    "London",
    "Madrid",
    "Rome",
    "Vienna",
    "Tokyo",
    "Amsterdam",
    "Italy",
];

#[test]
fn real_model_writes_labels_in_its_own_words() {
    let Some(model_path) = model_path() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = monoscope_lm::load(&model_path, &monoscope_lm::Device::flex()).unwrap();
    let tokenizer = model.tokenizer();
    let d = model.d_model();
    let mut rows = Vec::new();
    for rep in 0..12 {
        for (doc, text) in TEXTS.iter().enumerate() {
            for (i, id) in tokenizer
                .encode(text, false)
                .unwrap()
                .into_iter()
                .enumerate()
            {
                let token = tokenizer.token_str(id);
                let city = CITIES.iter().any(|c| token.trim() == *c);
                let mut x = vec![-1.0; d];
                // Feature 0: city names; feature 1: every token of the last two texts.
                x[0] = if city {
                    2.0 + (rows.len() % 5) as f32 * 0.1
                } else {
                    -1.0
                };
                x[1] = if doc >= 4 { 1.0 } else { -1.0 };
                rows.push(Row {
                    token: id,
                    doc: rep * 10 + doc as u32,
                    position: i as u32 + 1,
                    x,
                });
            }
        }
    }
    let identity = ModelIdentity {
        name: model.name().into(),
        sha256: model.sha256().into(),
    };
    write_store(&dir.path().join("store"), &rows, 128, identity);
    let sae_dir = dir.path().join("sae");
    monoscope_sae::save_saelens(&identity_sae(d, 2, vec![0.0; 2]), &sae_dir).unwrap();
    let config = LabelConfig {
        explainer: ExplainerKind::Local,
        cache: false,
        window: 6,
        top_n: 3,
        score_examples: 3,
        random_examples: 4,
        quantile_examples: 2,
        quantiles: 2,
        ..LabelConfig::default()
    };
    let inputs = Inputs {
        sae: sae_dir,
        store: dir.path().join("store"),
        model: model_path,
        device: Default::default(),
    };
    let out = dir.path().join("label");
    let summary = run_label(
        &config,
        &inputs,
        &out,
        0,
        &Progress::hidden("label"),
        &CancelToken::new(),
    )
    .unwrap();
    let labels: Vec<LabelRecord> = LabelOutputs::new(&out).labels().unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&labels).unwrap());
    assert_eq!(summary.live, 2);
    assert_eq!(labels.len(), 2, "{:?}", summary.skipped);
    for l in &labels {
        assert!(l.label.chars().any(char::is_alphabetic), "{l:?}");
        let baseline = l.baseline.as_ref().unwrap();
        for s in [l.scores, baseline.scores] {
            assert!(s.detection.is_some() && s.fuzzing.is_some(), "{l:?}");
        }
    }
    // The statistical baseline finds the planted cities.
    let cities = &labels[0].baseline.as_ref().unwrap().label;
    assert!(
        CITIES.iter().any(|c| cities.contains(&c.to_lowercase())),
        "{cities}"
    );
    assert!(summary.tokens_in > 0 && summary.tokens_out > 0);
}
