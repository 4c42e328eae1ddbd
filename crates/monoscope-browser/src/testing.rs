//! A small synthetic run (every file the site reads) for tests of the site and the page.
//!
//! Feature 7's first top context holds a `<script>` token and its label holds markup, so a
//! test can check that untrusted strings show as text.

use std::path::Path;

use serde_json::{Value, json};

use crate::inputs::RunFiles;

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
        "metadata": { "model_name": "tiny", "hook_name": "blocks.1.hook_resid_post" },
    });
    write_json(&sae.join("cfg.json"), &cfg)?;
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
    let eval = json!({
        "l0": 4.0, "fvu": 0.21, "dead_fraction": 0.1, "splice": { "ce_loss_score": 0.87 },
        "feature_frequency": frequency,
        "feature_max_activation": (0..d_sae).map(|i| if dead(i) { 0.0 } else { 1.0 + i as f64 }).collect::<Vec<_>>(),
    });
    write_json(&train.join("eval.json"), &eval)?;

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
    std::fs::write(labels.join("evidence.jsonl"), evidence)?;
    std::fs::write(labels.join("labels.jsonl"), label_lines)?;
    write_json(
        &labels.join("summary.json"),
        &json!({ "features": d_sae, "labelled": d_sae - d_sae / 10, "explainer": "statistical" }),
    )?;
    std::fs::write(clusters.join("neighbours.jsonl"), neighbour_lines)?;
    let assignment: Vec<usize> = (0..d_sae).map(|i| i % 4).collect();
    let cluster_list: Vec<Value> = (0..4)
        .map(|c| {
            let members: Vec<usize> = (0..d_sae).filter(|i| i % 4 == c).collect();
            json!({ "id": c, "size": members.len(), "members": members, "top_words": [format!("word{c}")] })
        })
        .collect();
    write_json(
        &clusters.join("clusters.json"),
        &json!({ "method": "leiden", "resolution": 1.0, "modularity": 0.4, "assignment": assignment, "clusters": cluster_list }),
    )?;
    let angle = |i: usize| i as f64 / d_sae as f64 * std::f64::consts::TAU;
    write_json(
        &clusters.join("map.json"),
        &json!({
            "method": "umap", "neighbourhood_preservation": 0.5,
            "x": (0..d_sae).map(|i| 0.5 + 0.45 * angle(i).cos()).collect::<Vec<_>>(),
            "y": (0..d_sae).map(|i| 0.5 + 0.45 * angle(i).sin()).collect::<Vec<_>>(),
        }),
    )?;
    write_json(
        &steer.join("report.json"),
        &json!({
            "model": "tiny", "hook": "blocks.1.hook_resid_post", "seed": 0,
            "experiments": [{
                "features": [{ "id": 3, "label": "Golden Gate Bridge", "selected_by": "label:bridge", "max_activation": 4.0 }],
                "mode": "clamp", "targets": [" bridge"],
                "effects": [
                    { "multiple": 0.0, "values": [0.0], "target_logprob_delta": -0.1, "target_prob": 0.01, "kl_neutral": 0.001 },
                    { "multiple": 5.0, "values": [20.0], "target_logprob_delta": 2.0, "target_prob": 0.2, "kl_neutral": 0.3 },
                ],
                "prompts": [{ "prompt": "I am", "chat": false, "baseline": "I am a person.",
                              "steered": [{ "multiple": 5.0, "text": "I am the Golden Gate Bridge <script>x</script>" }] }],
            }],
        }),
    )?;
    Ok(RunFiles {
        sae_dir: sae,
        labels_dir: Some(labels),
        clusters_dir: Some(clusters),
        steering_dir: Some(steer),
    })
}

fn write_json(path: &Path, value: &Value) -> std::io::Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(value)?)
}
