//! The real default model (SmolLM2-135M-Instruct) with the quickstart's SAE
//! (`runs/quickstart/train/sae`). Each test prints a message and passes when either file is
//! absent; nothing is downloaded here. Run with
//! `cargo test -p monoscope-steer --test real_model -- --include-ignored --nocapture` (the
//! clamp sweep is ignored by default: it takes about two minutes on two cores).

use std::path::PathBuf;
use std::sync::OnceLock;

use monoscope_lm::{Device, Model};
use monoscope_steer::{FeatureTable, Steerer};

const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn model_path() -> PathBuf {
    monoscope_fetch::cache_dir().join("models").join(MODEL_FILE)
}

fn sae_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../runs/quickstart/train/sae")
}

fn model() -> Option<&'static Model> {
    static MODEL: OnceLock<Option<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let (path, sae) = (model_path(), sae_dir());
            let how = "cargo run -p monoscope-cli -- fetch smollm2";
            if !monoscope_formats::testing::real_file_present(&path, how) {
                return None;
            }
            // The quickstart's SAE is not made by CI: its absence only skips.
            if !sae.join("cfg.json").exists() {
                eprintln!(
                    "skipping real-model test: needs {} (cargo xtask pipeline run \
                     pipelines/quickstart.toml)",
                    sae.display()
                );
                return None;
            }
            Some(monoscope_lm::load(&path, &Device::flex()).expect("load the default model"))
        })
        .as_ref()
}

fn steerer(model: &Model) -> Steerer<'_> {
    let dir = sae_dir();
    let sae = monoscope_sae::load_sae(&dir).unwrap();
    let table = FeatureTable::load(&dir, sae.d_sae, None).unwrap();
    Steerer::new(model, sae, None, table).unwrap()
}

#[test]
fn real_model_features_on_texts() {
    let Some(model) = model() else { return };
    let s = steerer(model);
    for text in [
        "Paris is the capital of France",
        "The cat",
        "chemistry",
        "The Golden Gate Bridge",
        "The lion is a large cat of the genus Panthera",
        "Photosynthesis in green plants",
    ] {
        let hits = s.top_features(text, 8).unwrap();
        eprintln!("{text:?}");
        for h in &hits {
            eprintln!(
                "  {:>5} {:>7.3} ×max {:>5.2} freq {:.4} {:?}@{} words {:?}",
                h.feature,
                h.activation,
                h.activation / h.max_activation.unwrap_or(f32::NAN),
                h.frequency.unwrap_or(f64::NAN),
                h.token,
                h.position,
                s.promoted_words(h.feature, 5).unwrap()
            );
        }
        assert!(!hits.is_empty());
    }
}

#[test]
#[ignore = "about 2 minutes on 2 cores; needs the default model (cargo run -p monoscope-cli -- fetch smollm2) and the quickstart SAE: cargo test -p monoscope-steer --test real_model -- --ignored --nocapture"]
fn real_model_clamping_a_place_feature_raises_the_place_words() {
    let Some(model) = model() else { return };
    let s = steerer(model);
    // Found the paper's way: the features that fire most on a sentence; take the one that
    // peaks on " France".
    let text = "Paris is the capital of France";
    let hits = s.top_features(text, 5).unwrap();
    let hit = hits
        .iter()
        .find(|h| h.token == " France")
        .unwrap_or_else(|| panic!("no top-5 feature of {text:?} peaks on \" France\": {hits:?}"));
    eprintln!(
        "feature {} peaks at {:.3} on {:?}",
        hit.feature, hit.activation, hit.token
    );

    let multiples = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let config: monoscope_steer::SteerConfig = serde_json::from_value(serde_json::json!({
        "experiments": [{
            "feature": hit.feature,
            "multiples": multiples,
            "targets": ["France", "French", "Paris"],
        }],
        "prompts": [
            "Tell me about yourself.",
            "What is your favourite place?",
            "Write a sentence about anything.",
        ],
        "max_new_tokens": 24,
    }))
    .unwrap();
    let mut tick = |_: &str| Ok(());
    let report =
        monoscope_steer::run_steering(model, &sae_dir(), None, &config, 0, &mut tick).unwrap();
    eprintln!("{}", report.to_markdown());
    let e = &report.experiments[0];
    let deltas: Vec<f64> = e.effects.iter().map(|x| x.target_logprob_delta).collect();
    assert!(
        deltas.windows(2).all(|w| w[1] > w[0]),
        "log-probability of the targets should rise with the clamp: {deltas:?}"
    );
    assert!(deltas[multiples.len() - 1] > 1.0, "{deltas:?}");
    let kl: Vec<f64> = e.effects.iter().map(|x| x.kl_neutral).collect();
    assert!(
        kl.windows(2).all(|w| w[1] >= w[0]),
        "KL on neutral text: {kl:?}"
    );
    for run in &e.prompts {
        assert_ne!(
            run.steered.last().unwrap().text,
            run.baseline,
            "{}",
            run.prompt
        );
    }
}
