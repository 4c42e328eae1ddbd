//! The whole stage on a tiny random-weight model and a store built in the test.

mod common;

use std::path::{Path, PathBuf};

use common::{Lcg, documents, identity_sae, write_store};
use monoscope_core::{CancelToken, Progress, Stage};
use monoscope_label::format::{FeatureEvidence, LabelOutputs, LabelRecord, Summary};
use monoscope_label::{AutointerpLabel, ExplainerKind, Inputs, LabelConfig, run_label};
use monoscope_store::ModelIdentity;

const D: usize = 64;
const D_SAE: usize = 16;

/// A tiny model, a store "captured" from it, and an SAE with one dead feature (the last).
fn setup(dir: &Path) -> Inputs {
    let model = dir.join("tiny.gguf");
    monoscope_formats::testing::TinyLlama::default()
        .write(&model)
        .unwrap();
    let loaded = monoscope_lm::load(&model, &monoscope_lm::Device::flex()).unwrap();
    let identity = ModelIdentity {
        name: loaded.name().to_string(),
        sha256: loaded.sha256().to_string(),
    };
    let mut rng = Lcg(11);
    let rows = documents(&[90, 60, 110], D, |_| {
        (0..D).map(|_| rng.normal() - 1.2).collect()
    });
    write_store(&dir.join("store"), &rows, 64, identity);
    let mut bias = vec![0.0; D_SAE];
    bias[D_SAE - 1] = -100.0;
    let sae = identity_sae(D, D_SAE, bias);
    let sae_dir = dir.join("sae");
    monoscope_sae::save_saelens(&sae, &sae_dir).unwrap();
    Inputs {
        sae: sae_dir,
        store: dir.join("store"),
        model,
        device: Default::default(),
    }
}

fn config(explainer: ExplainerKind) -> LabelConfig {
    LabelConfig {
        explainer,
        cache: false,
        top_n: 4,
        window: 3,
        quantiles: 3,
        quantile_examples: 2,
        random_examples: 4,
        score_examples: 2,
        max_new_tokens: 8,
        ..LabelConfig::default()
    }
}

fn run(
    inputs: &Inputs,
    config: &LabelConfig,
    out: &Path,
) -> Result<Summary, monoscope_label::LabelError> {
    run_label(
        config,
        inputs,
        out,
        5,
        &Progress::hidden("label"),
        &CancelToken::new(),
    )
}

fn read_outputs(out: &Path) -> (Vec<FeatureEvidence>, Vec<LabelRecord>, Summary) {
    let outputs = LabelOutputs::new(out);
    let meta = outputs.meta().unwrap();
    assert_eq!((meta.d_sae, meta.tokens, meta.window), (D_SAE, 260, 3));
    (
        outputs.evidence().unwrap(),
        outputs.labels().unwrap(),
        outputs.summary().unwrap().unwrap(),
    )
}

#[test]
fn statistical_labels_every_live_feature_and_counts_the_dead() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = setup(dir.path());
    let out: PathBuf = dir.path().join("label");
    let summary = run(&inputs, &config(ExplainerKind::Statistical), &out).unwrap();
    let (evidence, labels, written) = read_outputs(&out);
    assert_eq!(written, summary);
    assert_eq!(evidence.len(), D_SAE);
    assert!(
        evidence
            .iter()
            .enumerate()
            .all(|(i, e)| e.feature == i as u32)
    );
    assert!(evidence[D_SAE - 1].is_dead());
    assert_eq!(
        (summary.features, summary.live, summary.dead),
        (D_SAE, D_SAE - 1, 1)
    );
    assert_eq!(
        summary.labelled + summary.skipped.values().sum::<usize>(),
        summary.live
    );
    assert_eq!(summary.labelled, labels.len());
    assert!(labels.len() >= D_SAE - 3, "{:?}", summary.skipped);
    for l in &labels {
        assert_eq!(l.explainer, "statistical");
        assert!(l.baseline.is_none());
        assert!(!l.label.is_empty() && l.explanation.starts_with("Fires on"));
        let d = l.scores.detection.expect("a detection score");
        assert!((0.0..=1.0).contains(&d));
    }
    let live = &evidence[0];
    assert!(!live.logits.promoted.is_empty() && !live.logits.suppressed.is_empty());
    assert!(live.logits.promoted[0].value >= live.logits.suppressed[0].value);
    assert_eq!(
        summary.scores.detection.as_ref().unwrap().count,
        labels.len()
    );
    assert_eq!(summary.tokens_in, 0);
    // The same seed writes the same labels.
    let again = dir.path().join("again");
    run(&inputs, &config(ExplainerKind::Statistical), &again).unwrap();
    assert_eq!(read_outputs(&again).1, labels);
}

#[test]
fn local_model_labels_a_sample_with_a_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = setup(dir.path());
    let out = dir.path().join("label");
    let mut config = config(ExplainerKind::Local);
    config.max_features = 3;
    config.statistical_rest = false;
    let summary = run(&inputs, &config, &out).unwrap();
    let (_, labels, _) = read_outputs(&out);
    assert_eq!(summary.live, D_SAE - 1);
    let sampled = "not in the sample of max_features = 3";
    assert_eq!(summary.skipped.get(sampled), Some(&(D_SAE - 1 - 3)));
    assert_eq!(
        summary.labelled + summary.skipped.values().sum::<usize>(),
        summary.live
    );
    assert!(summary.explainer.starts_with("local:"));
    assert!(summary.tokens_in > 0, "{summary:?}");
    for l in &labels {
        assert!(l.explainer.starts_with("local:"));
        let baseline = l.baseline.as_ref().expect("a statistical baseline");
        assert!(!baseline.label.is_empty());
        for s in [l.scores, baseline.scores] {
            for v in [s.detection, s.fuzzing] {
                assert!(v.is_some_and(|v| (0.0..=1.0).contains(&v)), "{l:?}");
            }
        }
    }
}

#[test]
fn a_model_other_than_the_stores_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = setup(dir.path());
    let other = dir.path().join("other.gguf");
    monoscope_formats::testing::TinyLlama {
        seed: 2,
        ..Default::default()
    }
    .write(&other)
    .unwrap();
    inputs.model = other;
    let err = run(
        &inputs,
        &config(ExplainerKind::Statistical),
        &dir.path().join("l"),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("captured from") && msg.contains("other.gguf"),
        "{msg}"
    );
    assert!(!LabelOutputs::new(dir.path().join("l")).has_labels());
}

#[test]
fn stage_description_matches_the_contract() {
    let d = AutointerpLabel::description();
    assert_eq!(d.kind, "autointerp-label");
    let inputs: Vec<(&str, bool)> = d
        .inputs
        .iter()
        .map(|p| (p.name.as_ref(), p.required))
        .collect();
    assert_eq!(inputs, [("sae", true), ("store", true), ("model", false)]);
    assert_eq!(d.outputs[0].name, "labels");
    assert_eq!(
        d.outputs[0].ty,
        monoscope_core::PortType::Artifact(monoscope_core::ArtifactKind::LABELS)
    );
}

#[test]
fn the_rest_of_the_live_features_get_statistical_labels() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = setup(dir.path());
    let out = dir.path().join("label");
    let mut config = config(ExplainerKind::Local);
    config.max_features = 3;
    config.score = false;
    let summary = run(&inputs, &config, &out).unwrap();
    let (_, labels, _) = read_outputs(&out);
    let by_model = labels
        .iter()
        .filter(|l| l.explainer.starts_with("local:"))
        .count();
    let statistical = labels
        .iter()
        .filter(|l| l.explainer == "statistical")
        .count();
    assert_eq!(by_model, summary.labelled);
    assert_eq!(statistical, summary.statistical_rest);
    assert!(
        summary.labelled <= 3 && summary.labelled + summary.skipped.values().sum::<usize>() >= 3
    );
    assert!(statistical >= D_SAE - 1 - 3 - 2, "{summary:?}");
    assert!(
        labels.windows(2).all(|w| w[0].feature < w[1].feature),
        "in feature order"
    );
    assert!(
        !summary
            .skipped
            .keys()
            .any(|k| k.contains("not in the sample"))
    );
}

/// Regression: with its server down, an HTTP explainer's stage logged one warning per feature,
/// exited successfully and was marked complete, so the labels asked for were never obtained.
#[test]
fn an_explainer_outage_fails_the_stage_and_keeps_what_was_obtained() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = setup(dir.path());
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = config(ExplainerKind::Http);
    config.http.url = format!("http://127.0.0.1:{port}/v1");
    config.http.max_retries = 0;
    config.max_features = 5;
    let out = dir.path().join("label");
    let err = run(&inputs, &config, &out).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("the explainer failed for 5 of 5 features")
            && text.contains("max_failed_fraction = 0.1")
            && text.contains("labels.jsonl"),
        "{text}"
    );
    assert!(LabelOutputs::new(&out).labels().unwrap().is_empty());
    assert!(LabelOutputs::new(&out).summary().unwrap().is_none());

    // Within the stated tolerance the same outage is a stage that succeeds with skips.
    config.max_failed_fraction = 1.0;
    let summary = run(&inputs, &config, &out).unwrap();
    assert_eq!(summary.skipped.values().sum::<usize>(), 5);
}
