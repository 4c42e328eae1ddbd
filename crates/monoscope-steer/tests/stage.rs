//! The `steer` stage driven through its ports on a tiny model: the report's shape, feature
//! selection by id, label and text, and the errors for bad configurations.

mod common;

use std::path::Path;

use monoscope_artifacts::label::{LabelOutputs, LabelRecord};
use monoscope_core::{
    Artifact, ArtifactKind, CancelToken, InputPort, Message, OutputPort, Progress, Stage,
    StageConfig, StageContext,
};
use monoscope_formats::testing::TinyLlama;
use monoscope_sae::Architecture;
use monoscope_steer::{Steer, SteerConfig};
use serde_json::{Value, json};

const MAX_ACTIVATION: f32 = 2.0;

struct Fixture {
    dir: tempfile::TempDir,
    model: std::path::PathBuf,
    sae: std::path::PathBuf,
    labels: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    TinyLlama::default().write(&model).unwrap();
    let sae = common::random_sae(64, 48, Architecture::TopK { k: 6 }, 21);
    let sae_dir = common::write_trained_sae(&dir.path().join("run"), &sae, MAX_ACTIVATION);
    let labels = dir.path().join("run").join("label");
    std::fs::create_dir_all(&labels).unwrap();
    let record = |feature: u32, label: &str, explanation: &str| LabelRecord {
        feature,
        label: label.into(),
        explanation: explanation.into(),
        explainer: "statistical".into(),
        scores: Default::default(),
        baseline: None,
    };
    let outputs = LabelOutputs::new(&labels);
    outputs
        .write_labels(&[
            record(7, "Hello greetings", "fires on hello"),
            record(11, "Cats and kittens", "felines"),
            record(12, "Concatenation", "joining strings"),
        ])
        .unwrap();
    outputs.write_evidence(&[]).unwrap();
    Fixture {
        model,
        sae: sae_dir,
        labels,
        dir,
    }
}

/// Runs the stage with the given inputs connected; returns the report artifact or the error.
fn run_stage(
    config: Value,
    inputs: &[(&str, ArtifactKind, &Path)],
    stage_dir: &Path,
) -> Result<Artifact, String> {
    let config: SteerConfig = serde_json::from_value(config).map_err(|e| e.to_string())?;
    let problems = config.validate();
    if !problems.is_empty() {
        return Err(format!("{problems:?}"));
    }
    let cancel = CancelToken::new();
    let ports = inputs
        .iter()
        .map(|(name, kind, path)| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            tx.send(Message::Artifact(Artifact::new(kind.clone(), *path)))
                .unwrap();
            InputPort::new(*name, rx, cancel.clone())
        })
        .collect();
    let (tx, rx) = crossbeam_channel::unbounded();
    std::fs::create_dir_all(stage_dir).unwrap();
    let run_dir = stage_dir.parent().unwrap().to_path_buf();
    let mut ctx = StageContext::new(
        "steer",
        &run_dir,
        stage_dir.to_path_buf(),
        7,
        cancel.clone(),
        Progress::hidden("steer"),
        ports,
        vec![OutputPort::new("report", vec![tx], cancel)],
    );
    Steer::run(config, &mut ctx).map_err(|e| monoscope_exec_free_chain(&e))?;
    drop(ctx);
    match rx.recv().unwrap() {
        Message::Artifact(a) => Ok(a),
        other => panic!("expected an artifact, got {other:?}"),
    }
}

/// The error with its sources, as the executor would print it.
fn monoscope_exec_free_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out += &format!(": {s}");
        source = s.source();
    }
    out
}

#[test]
fn the_report_has_the_agreed_shape_and_values() {
    let f = fixture();
    let stage_dir = f.dir.path().join("run").join("steer");
    let config = json!({
        "experiments": [
            {"feature": "label:cats", "multiples": [0, 2], "targets": ["hello", " in"]},
            {"features": ["text:hello the hello", 5], "mode": "add", "values": [1.5]},
            {"feature": 4, "mode": "ablate"},
        ],
        "prompts": ["hello", "the"],
        "chat": false,
        "max_new_tokens": 4,
        "temperature": 0.8,
    });
    let artifact = run_stage(
        config,
        &[
            ("sae", ArtifactKind::SAE, &f.sae),
            ("model", ArtifactKind::MODEL, &f.model),
            ("labels", ArtifactKind::LABELS, &f.labels),
        ],
        &stage_dir,
    )
    .unwrap();
    assert_eq!(artifact.kind, ArtifactKind::STEERING_REPORT);
    assert_eq!(artifact.path, stage_dir);
    let report: Value =
        serde_json::from_slice(&std::fs::read(stage_dir.join("report.json")).unwrap()).unwrap();
    assert!(report["model"].is_string());
    assert_eq!(report["hook"], common::HOOK);
    assert_eq!(report["seed"], 7);
    let experiments = report["experiments"].as_array().unwrap();
    assert_eq!(experiments.len(), 3);

    // Experiment 1: chosen by label (whole-word "cats" beats the substring in "Concatenation").
    let e = &experiments[0];
    let feature = &e["features"][0];
    assert_eq!(feature["id"], 11);
    assert_eq!(feature["label"], "Cats and kittens");
    assert_eq!(feature["selected_by"], "label:cats");
    assert_eq!(feature["max_activation"], MAX_ACTIVATION as f64);
    assert_eq!(e["mode"], "clamp");
    assert_eq!(e["targets"], json!(["hello", " in"]));
    let effects = e["effects"].as_array().unwrap();
    assert_eq!(effects.len(), 2);
    assert_eq!(effects[1]["multiple"], 2.0);
    assert_eq!(effects[1]["values"], json!([2.0 * MAX_ACTIVATION]));
    for effect in effects {
        for key in ["target_logprob_delta", "target_prob", "kl_neutral"] {
            assert!(effect[key].as_f64().unwrap().is_finite(), "{key}: {effect}");
        }
    }
    let prompts = e["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), 2);
    assert_eq!(prompts[0]["prompt"], "hello");
    assert_eq!(prompts[0]["chat"], false);
    assert!(prompts[0]["baseline"].is_string());
    assert_eq!(prompts[0]["steered"].as_array().unwrap().len(), 2);
    assert_eq!(prompts[0]["steered"][1]["multiple"], 2.0);
    assert!(prompts[0]["steered"][1]["text"].is_string());

    // Experiment 2: two features, one found on a text; raw values; default targets.
    let e = &experiments[1];
    assert_eq!(e["mode"], "add");
    assert_eq!(e["scale"], "raw");
    assert_eq!(e["features"].as_array().unwrap().len(), 2);
    assert_eq!(e["features"][0]["selected_by"], "text:hello the hello");
    assert!(e["features"][0]["activation"].as_f64().unwrap() > 0.0);
    assert_eq!(e["features"][1]["id"], 5);
    assert_eq!(e["effects"][0]["values"], json!([1.5, 1.5]));
    assert!(!e["targets"].as_array().unwrap().is_empty());

    // Experiment 3: ablation is one step at 0.
    let e = &experiments[2];
    assert_eq!(e["mode"], "ablate");
    assert_eq!(e["effects"][0]["values"], json!([0.0]));

    let md = std::fs::read_to_string(stage_dir.join("report.md")).unwrap();
    assert!(
        md.contains("Cats and kittens") && md.contains("| unsteered |"),
        "{md}"
    );
}

#[test]
fn adding_zero_reproduces_the_sampled_baseline_and_adding_more_does_not() {
    // Adding 0 is no edit at all: with the same seed the sampled text must be identical to the
    // unsteered one, and its measured effects exactly zero.
    let f = fixture();
    let stage_dir = f.dir.path().join("run").join("steer");
    let config = json!({
        "experiments": [{"feature": 11, "mode": "add", "values": [0.0, 50.0]}],
        "prompts": ["hello the"],
        "chat": true,
        "max_new_tokens": 8,
        "temperature": 1.0,
    });
    run_stage(
        config,
        &[
            ("sae", ArtifactKind::SAE, &f.sae),
            ("model", ArtifactKind::MODEL, &f.model),
        ],
        &stage_dir,
    )
    .unwrap();
    let report: Value =
        serde_json::from_slice(&std::fs::read(stage_dir.join("report.json")).unwrap()).unwrap();
    let run = &report["experiments"][0]["prompts"][0];
    assert_eq!(run["chat"], true);
    assert_eq!(run["steered"][0]["text"], run["baseline"]);
    assert_ne!(
        run["steered"][1]["text"], run["baseline"],
        "adding 50× a direction changed nothing"
    );
    assert_eq!(report["experiments"][0]["effects"][0]["kl_neutral"], 0.0);
    assert_eq!(
        report["experiments"][0]["effects"][0]["target_logprob_delta"],
        0.0
    );
}

#[test]
fn selection_errors_say_what_is_missing() {
    let f = fixture();
    let stage_dir = f.dir.path().join("run").join("steer");
    let base = |experiment: Value| json!({"experiments": [experiment], "prompts": ["hello"], "max_new_tokens": 2});
    let sae_and_model: [(&str, ArtifactKind, &Path); 2] = [
        ("sae", ArtifactKind::SAE, &f.sae),
        ("model", ArtifactKind::MODEL, &f.model),
    ];
    let err = run_stage(
        base(json!({"feature": "label:cats"})),
        &sae_and_model,
        &stage_dir,
    )
    .unwrap_err();
    assert!(
        err.contains("label:cats") && err.contains("`labels` input"),
        "{err}"
    );

    let with_labels = [
        ("sae", ArtifactKind::SAE, f.sae.as_path()),
        ("model", ArtifactKind::MODEL, f.model.as_path()),
        ("labels", ArtifactKind::LABELS, f.labels.as_path()),
    ];
    let err = run_stage(
        base(json!({"feature": "label:zebra"})),
        &with_labels,
        &stage_dir,
    )
    .unwrap_err();
    assert!(
        err.contains("label:zebra") && err.contains("labels.jsonl"),
        "{err}"
    );

    // On this fixture the text's strongest feature is 3.
    let err = run_stage(
        base(json!({"features": ["text:hello the hello", 3]})),
        &sae_and_model,
        &stage_dir,
    )
    .unwrap_err();
    assert!(
        err.contains("`3`") && err.contains("as `text:hello the hello` already does"),
        "{err}"
    );

    let err = run_stage(base(json!({"feature": 48})), &sae_and_model, &stage_dir).unwrap_err();
    assert!(err.contains("`48`") && err.contains("0..48"), "{err}");

    // Multiples need the maxima of eval.json.
    std::fs::remove_file(f.sae.parent().unwrap().join("eval.json")).unwrap();
    let err = run_stage(
        base(json!({"feature": 3, "multiples": [2]})),
        &sae_and_model,
        &stage_dir,
    )
    .unwrap_err();
    assert!(
        err.contains("eval.json") && err.contains("raw values"),
        "{err}"
    );

    // A truncated eval.json is named.
    std::fs::write(
        f.sae.parent().unwrap().join("eval.json"),
        "{\"feature_max_acti",
    )
    .unwrap();
    let err = run_stage(base(json!({"feature": 3})), &sae_and_model, &stage_dir).unwrap_err();
    assert!(err.contains("eval.json: line 1"), "{err}");
}

#[test]
fn bad_configurations_are_refused_before_running() {
    let problems = |config: Value| -> String {
        match serde_json::from_value::<SteerConfig>(config) {
            Err(e) => e.to_string(),
            Ok(c) => format!("{:?}", c.validate()),
        }
    };
    let p = problems(json!({"experiments": []}));
    assert!(
        p.contains("experiments") && p.contains("at least one"),
        "{p}"
    );
    let p = problems(json!({"experiments": [{"mode": "clamp"}]}));
    assert!(
        p.contains("experiments[0].feature") && p.contains("missing"),
        "{p}"
    );
    let p = problems(json!({"experiments": [{"feature": "bridge"}]}));
    assert!(p.contains("`bridge`") && p.contains("label:"), "{p}");
    let p = problems(json!({"experiments": [{"feature": 1, "multiples": [1], "values": [2]}]}));
    assert!(p.contains("not both"), "{p}");
    let p = problems(json!({"experiments": [{"feature": 1, "mode": "ablate", "multiples": [1]}]}));
    assert!(p.contains("ablate"), "{p}");
    let p = problems(json!({"experiments": [{"feature": 1, "multiples": []}]}));
    assert!(p.contains("experiments[0].multiples"), "{p}");
    let p = problems(json!({"experiments": [{"feature": 1}], "temperature": -1.0, "top_p": 0.0}));
    assert!(p.contains("temperature") && p.contains("top_p"), "{p}");
    let p = problems(json!({"experiments": [{"feature": 1, "clamp": 3}]}));
    assert!(p.contains("unknown field `clamp`"), "{p}");
}

#[test]
fn the_stage_describes_its_ports() {
    let d = Steer::description();
    assert_eq!(d.kind, "steer");
    let names: Vec<(&str, bool)> = d
        .inputs
        .iter()
        .map(|p| (p.name.as_ref(), p.required))
        .collect();
    assert_eq!(names, [("sae", true), ("model", false), ("labels", false)]);
    assert_eq!(d.outputs[0].name, "report");
}

#[test]
fn the_library_entry_point_checks_the_configuration_too() {
    // The CLI builds its configuration in code and calls `run_steering` directly.
    let model = common::tiny_model();
    let config: SteerConfig = serde_json::from_value(json!({
        "experiments": [{"feature": 1}],
        "prompts": [],
        "max_new_tokens": 0,
    }))
    .unwrap();
    let err = monoscope_steer::run_steering(
        &model,
        Path::new("/nonexistent"),
        None,
        &config,
        0,
        &mut |_: &str| Ok(()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("prompts: = []") && err.contains("max_new_tokens: = 0"),
        "{err}"
    );
}

#[test]
fn attributions_and_contrasts_are_written_beside_the_report() {
    let f = fixture();
    let stage_dir = f.dir.path().join("run").join("steer");
    let texts = f.dir.path().join("texts");
    std::fs::create_dir_all(&texts).unwrap();
    std::fs::write(texts.join("pos.txt"), "hello hello\nthe hello\nhello the\n").unwrap();
    std::fs::write(texts.join("neg.txt"), "the the\nin the\n").unwrap();
    // Steering on int8: the stage loads the f32 model for the gradients.
    let config = json!({
        "experiments": [{"feature": 4, "mode": "ablate"}],
        "prompts": ["hello"],
        "chat": false,
        "max_new_tokens": 2,
        "matmul": "int8",
        "attributions": [
            {"prompt": "hello the", "target": " hello"},
            {"prompt": "the", "target": " in the"},
        ],
        "attribution_top": 6,
        "attribution_ablate": 4,
        "contrasts": [{"name": "hello", "positive": texts.join("pos.txt"), "negative": texts.join("neg.txt")}],
        "contrast_top": 3,
    });
    run_stage(
        config,
        &[
            ("sae", ArtifactKind::SAE, &f.sae),
            ("model", ArtifactKind::MODEL, &f.model),
            ("labels", ArtifactKind::LABELS, &f.labels),
        ],
        &stage_dir,
    )
    .unwrap();
    let outputs = monoscope_artifacts::steer::SteerOutputs::new(&stage_dir);
    let attributions = outputs.attributions().unwrap().unwrap();
    assert_eq!(attributions.len(), 2);
    assert_eq!(attributions[1].target, " in the");
    for a in &attributions {
        assert_eq!(a.entries.len(), 6);
        assert_eq!(a.ablated, 4);
        assert_eq!(
            a.entries
                .iter()
                .filter(|e| e.ablation_effect.is_some())
                .count(),
            4
        );
        assert!(a.target_logprob < 0.0 && a.target_logprob.is_finite());
    }
    let contrasts = outputs.contrasts().unwrap().unwrap();
    assert_eq!(contrasts.len(), 1);
    assert_eq!(
        (contrasts[0].positive_texts, contrasts[0].negative_texts),
        (3, 2)
    );
    assert!(!contrasts[0].hits.is_empty() && contrasts[0].hits.len() <= 3);
}

#[test]
fn attribution_and_contrast_settings_are_checked_naming_the_key() {
    let problems = |extra: Value| -> String {
        let mut config = json!({"experiments": [{"feature": 1}]});
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        match serde_json::from_value::<SteerConfig>(config) {
            Err(e) => e.to_string(),
            Ok(c) => format!("{:?}", c.validate()),
        }
    };
    let p = problems(json!({"attributions": [{"prompt": "a", "target": ""}]}));
    assert!(
        p.contains("attributions[0].target") && p.contains("empty"),
        "{p}"
    );
    let p = problems(json!({"attribution_top": 2, "attribution_ablate": 3}));
    assert!(
        p.contains("attribution_ablate") && p.contains("at most"),
        "{p}"
    );
    let p = problems(
        json!({"contrasts": [{"name": "x", "positive": "/no/such/pos.txt", "negative": "/no/such/neg.txt"}]}),
    );
    assert!(
        p.contains("contrasts[0].positive") && p.contains("/no/such/pos.txt"),
        "{p}"
    );
    let p = problems(json!({"attributions": [{"prompt": "a", "target": "b", "targets": []}]}));
    assert!(p.contains("unknown field `targets`"), "{p}");
}
