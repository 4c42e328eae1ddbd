//! A small synthetic run (every file the site reads, `run.json` and completion markers) for
//! tests of the site and the page.
//!
//! Feature 7's first top context holds a `<script>` token and its label holds markup, so a
//! test can check that untrusted strings show as text.

use std::path::{Path, PathBuf};

use monoscope_artifacts::cluster::{self, ClusterEntry, ClusterOutputs, ClustersFile, MapFile};
use monoscope_artifacts::label::{self, LabelOutputs, Summary};
use monoscope_artifacts::run::{
    CompletionMarker, FORMAT_VERSION, RunRecord, StageReport, StageStatus, write_marker,
    write_run_record as write_run_record_file,
};
use monoscope_artifacts::steer::{
    self, Effect, ExperimentReport, Mode, PromptRun, Report, Scale, SelectedFeature, Settings,
    SteerOutputs, SteeredText, TargetEffect, TargetSummary,
};
use monoscope_artifacts::train::{DensityHistogram, EvalReport, SpliceReport, TrainOutputs};
use monoscope_artifacts::{Artifact, ArtifactKind};
use serde_json::{Value, json};

use crate::inputs::RunFiles;

/// The hook the demo SAE reads.
const HOOK: &str = "blocks.1.hook_resid_post";

/// The token that must show as text, never run.
pub const SCRIPT_TOKEN: &str = "<script>document.body.dataset.pwned='1'</script>";

/// Writes a run of `d_sae` features (at least 16) under `dir` and returns where its files are.
pub fn write_demo_run(dir: &Path, d_sae: usize) -> std::io::Result<RunFiles> {
    assert!(d_sae >= 16, "the demo run needs at least 16 features");
    let train = dir.join("train");
    let sae = train.join("sae");
    let labels = dir.join("label");
    let clusters = dir.join("cluster");
    let steer = dir.join("steer");
    for d in [&sae, &labels, &clusters, &steer] {
        std::fs::create_dir_all(d)?;
    }
    let cfg = json!({
        "architecture": "topk", "d_in": 8, "d_sae": d_sae, "k": 4,
        "metadata": { "model_name": "tiny", "hook_name": HOOK },
    });
    std::fs::write(
        sae.join(monoscope_sae::format::SAELENS_CFG),
        serde_json::to_vec_pretty(&cfg)?,
    )?;
    let dead = |i: usize| i % 10 == 9;
    let frequency: Vec<f64> = (0..d_sae)
        .map(|i| {
            if dead(i) {
                0.0
            } else {
                0.001 * (1 + i % 7) as f64
            }
        })
        .collect();
    let eval = EvalReport {
        tokens: 1000,
        d_in: 8,
        d_sae,
        l0: 4.0,
        mse: 0.01,
        fvu: 0.21,
        explained_variance: 0.79,
        dead_fraction: 0.1,
        dense_fraction: 0.0,
        dense_threshold: 0.1,
        density_histogram: DensityHistogram {
            edges: vec![-8.0, 0.0],
            counts: vec![d_sae as u64 - d_sae as u64 / 10],
            never_fired: d_sae as u64 / 10,
        },
        feature_frequency: frequency.clone(),
        feature_max_activation: (0..d_sae)
            .map(|i| if dead(i) { 0.0 } else { 1.0 + i as f32 })
            .collect(),
        massive: None,
        splice: Some(SpliceReport::new(3.0, 3.25, 5.0, 0.1)),
        splice_skipped: None,
    };
    TrainOutputs::new(&train).write_eval(&eval).map_err(other)?;

    let label_of = |i: usize| match i {
        3 => "Golden Gate Bridge".to_string(),
        7 => "<b>markup</b> in a label".to_string(),
        _ => format!("concept {i}"),
    };
    let mut evidence = String::new();
    let mut label_lines = String::new();
    let mut neighbour_lines = String::new();
    for (i, &freq) in frequency.iter().enumerate() {
        let context = |first: &str, act: f64| {
            json!({
                "row": i * 10, "doc": i, "position": 3,
                "tokens": ["The", " Golden", first, " Bridge", "\n"],
                "activations": [0.0, act * 0.5, act, 0.0, 0.0], "focus": 2,
            })
        };
        let first = if i == 7 { SCRIPT_TOKEN } else { " Gate" };
        let record = if dead(i) {
            json!({ "feature": i, "fires": 0, "frequency": 0.0, "max_activation": 0.0, "mean_activation": 0.0,
                    "histogram": { "edges": [], "counts": [] }, "top": [], "quantiles": [], "random": [],
                    "logits": { "promoted": [], "suppressed": [] } })
        } else {
            let max = 1.0 + i as f64;
            json!({
                "feature": i, "fires": 5 + i, "frequency": freq, "max_activation": max, "mean_activation": max / 2.0,
                "histogram": { "edges": [0.0, max / 2.0, max], "counts": [3, 2] },
                "top": [context(first, max), context(" Gate", max * 0.8)],
                "quantiles": [{ "low": 0.0, "high": max / 2.0, "examples": [context(" Gate", max / 4.0)] }],
                "random": [context(" park", 0.0)],
                "logits": { "promoted": [{ "token": " bridge", "value": 1.5 }], "suppressed": [{ "token": " cat", "value": -1.2 }] },
            })
        };
        evidence.push_str(&record.to_string());
        evidence.push('\n');
        if !dead(i) {
            let label = json!({
                "feature": i, "label": label_of(i), "explanation": format!("Fires on the word after Golden ({i})."),
                "explainer": "statistical", "scores": { "detection": 0.5 + (i % 5) as f64 / 10.0, "fuzzing": 0.6 },
                "baseline": null,
            });
            label_lines.push_str(&label.to_string());
            label_lines.push('\n');
        }
        let neighbours: Vec<Value> = (1..=3)
            .map(|d| json!({ "feature": (i + d) % d_sae, "cosine": 0.9 - 0.1 * d as f64 }))
            .collect();
        neighbour_lines.push_str(&json!({ "feature": i, "neighbours": neighbours }).to_string());
        neighbour_lines.push('\n');
    }
    let label_outputs = LabelOutputs::new(&labels);
    std::fs::write(label_outputs.evidence_path(), evidence)?;
    std::fs::write(label_outputs.labels_path(), label_lines)?;
    let live = d_sae - d_sae / 10;
    label_outputs
        .write_summary(&Summary {
            features: d_sae,
            live,
            dead: d_sae - live,
            labelled: live,
            statistical_rest: 0,
            skipped: Default::default(),
            explainer: "statistical".into(),
            scores: Default::default(),
            baseline_scores: None,
            tokens_in: 0,
            tokens_out: 0,
            cache_hits: 0,
            seconds_evidence: 0.0,
            seconds_labelling: 0.0,
        })
        .map_err(other)?;
    let cluster_outputs = ClusterOutputs::new(&clusters);
    std::fs::write(cluster_outputs.neighbours_path(), neighbour_lines)?;
    let clusters_file = ClustersFile {
        method: "louvain".into(),
        resolution: 1.0,
        modularity: 0.4,
        assignment: (0..d_sae as u32).map(|i| i % 4).collect(),
        clusters: (0..4)
            .map(|c| {
                let members: Vec<u32> = (0..d_sae as u32).filter(|i| i % 4 == c).collect();
                ClusterEntry {
                    id: c,
                    size: members.len() as u32,
                    members,
                    top_words: vec![format!("word{c}")],
                }
            })
            .collect(),
    };
    cluster_outputs
        .write_clusters(&clusters_file)
        .map_err(other)?;
    let angle = |i: usize| i as f32 / d_sae as f32 * std::f32::consts::TAU;
    cluster_outputs
        .write_map(&MapFile {
            method: "umap-style".into(),
            neighbourhood_preservation: 0.5,
            x: (0..d_sae).map(|i| 0.5 + 0.45 * angle(i).cos()).collect(),
            y: (0..d_sae).map(|i| 0.5 + 0.45 * angle(i).sin()).collect(),
        })
        .map_err(other)?;
    let effect = |multiple: f32, delta: f64, prob: f64, kl: f64| Effect {
        multiple,
        values: vec![multiple * 4.0],
        target_logprob_delta: delta,
        target_prob: prob,
        kl_neutral: kl,
        per_target: vec![TargetEffect {
            target: " bridge".into(),
            prob,
            logprob_delta: delta,
        }],
    };
    let report = Report {
        model: "tiny".into(),
        hook: HOOK.into(),
        seed: 0,
        sae: sae.display().to_string(),
        settings: Settings {
            max_new_tokens: 8,
            temperature: 0.0,
            top_p: 1.0,
            matmul: "f32".into(),
            steer_first_position: false,
            neutral_text: "The weather".into(),
        },
        experiments: vec![ExperimentReport {
            features: vec![SelectedFeature {
                id: 3,
                label: Some("Golden Gate Bridge".into()),
                selected_by: "label:bridge".into(),
                max_activation: Some(4.0),
                activation: None,
                token: None,
            }],
            mode: Mode::Clamp,
            scale: Scale::MaxActivation,
            targets: vec![" bridge".into()],
            targets_from: "config".into(),
            baseline: TargetSummary {
                target_prob: 0.01,
                per_target: vec![],
            },
            effects: vec![effect(0.0, -0.1, 0.01, 0.001), effect(5.0, 2.0, 0.2, 0.3)],
            prompts: vec![PromptRun {
                prompt: "I am".into(),
                chat: false,
                baseline: "I am a person.".into(),
                steered: vec![SteeredText {
                    multiple: 5.0,
                    text: "I am the Golden Gate Bridge <script>x</script>".into(),
                }],
            }],
        }],
    };
    SteerOutputs::new(&steer)
        .write_report(&report)
        .map_err(other)?;
    write_run_record(
        dir,
        &[
            ("train", "train", ArtifactKind::SAE, sae.clone()),
            ("label", label::KIND, ArtifactKind::LABELS, labels.clone()),
            (
                "cluster",
                cluster::KIND,
                ArtifactKind::CLUSTERS,
                clusters.clone(),
            ),
            (
                "steer",
                steer::KIND,
                ArtifactKind::STEERING_REPORT,
                steer.clone(),
            ),
        ],
    )?;
    Ok(RunFiles {
        sae_dir: sae,
        labels: Some(label_outputs),
        clusters: Some(cluster_outputs),
        steering: Some(SteerOutputs::new(steer)),
    })
}

/// `run.json` listing `stages` (id, kind, the artifact it made) and a completion marker in
/// each stage's directory, as the executor writes them.
pub fn write_run_record(
    dir: &Path,
    stages: &[(&str, &str, ArtifactKind, PathBuf)],
) -> std::io::Result<()> {
    let mut reports = Vec::new();
    for (id, kind, artifact_kind, path) in stages {
        let marker = CompletionMarker {
            format_version: FORMAT_VERSION,
            kind: kind.to_string(),
            fingerprint: format!("{id}-fingerprint"),
            finished_at: "2026-01-01T00:00:00Z".into(),
            seconds: 1.0,
            artifacts: vec![(
                "out".into(),
                Artifact::new(artifact_kind.clone(), path.clone()),
            )],
        };
        write_marker(&dir.join(id), &marker).map_err(other)?;
        reports.push(StageReport {
            id: id.to_string(),
            kind: kind.to_string(),
            status: StageStatus::Ran,
            seconds: 1.0,
            waited_seconds: 0.0,
            peak_rss_bytes: None,
            fingerprint: marker.fingerprint,
        });
    }
    let record = RunRecord {
        format_version: FORMAT_VERSION,
        tool: "monoscope".into(),
        version: "test".into(),
        git_commit: "test".into(),
        pipeline: "demo".into(),
        pipeline_file: "demo.toml".into(),
        seed: 0,
        overrides: vec![],
        provenance: Default::default(),
        started_at: "2026-01-01T00:00:00Z".into(),
        finished_at: Some("2026-01-01T00:00:01Z".into()),
        status: "succeeded".into(),
        error: None,
        peak_rss_bytes: None,
        stages: reports,
    };
    write_run_record_file(dir, &record).map_err(other)
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
    std::io::Error::other(e)
}
