//! The site's data files, built from a synthetic run.

use monoscope_artifacts::ArtifactKind;
use monoscope_browser::site::SiteOptions;
use monoscope_browser::testing::{SCRIPT_TOKEN, write_demo_run, write_run_record};
use monoscope_browser::{RunFiles, write_site};
use serde_json::Value;

/// Reads a `monoscope.loaded(name, json);` data script back as (name, json).
fn read_script(path: &std::path::Path) -> (String, Value) {
    let text = std::fs::read_to_string(path).unwrap();
    let body = text
        .strip_prefix("monoscope.loaded(")
        .and_then(|t| t.trim_end().strip_suffix(");"))
        .unwrap_or_else(|| panic!("{}: not a data script", path.display()));
    let (name, json) = body.split_once(", ").unwrap();
    (
        serde_json::from_str(name).unwrap(),
        serde_json::from_str(json).unwrap(),
    )
}

#[test]
fn a_site_holds_every_feature_with_its_evidence_label_and_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_demo_run(dir.path(), 70).unwrap();
    let out = dir.path().join("site");
    let options = SiteOptions {
        title: "demo <run>".into(),
        chunk_size: 32,
    };
    let summary = write_site(&files, &options, &out).unwrap();
    assert_eq!(summary.features, 70);
    assert_eq!(summary.chunks, 3);
    assert_eq!(summary.labelled, 63);
    assert_eq!(summary.metrics["ce_loss_score"], 0.875);
    assert_eq!(summary.examples.len(), 3);

    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        html.contains("<title>demo &lt;run&gt;</title>"),
        "the title is escaped"
    );

    let (name, index) = read_script(&out.join("data/index.js"));
    assert_eq!(name, "index");
    assert_eq!(index["d_sae"], 70);
    assert_eq!(index["columns"]["label"][3], "Golden Gate Bridge");
    assert_eq!(
        index["columns"]["label"][9],
        Value::Null,
        "dead features have no label"
    );
    assert_eq!(index["columns"]["frequency"].as_array().unwrap().len(), 70);
    assert_eq!(index["columns"]["cluster"][6], 2);

    let (name, chunk) = read_script(&out.join("data/features/0002.js"));
    assert_eq!(name, "chunk-2");
    assert_eq!(chunk["start"], 64);
    let features = chunk["features"].as_array().unwrap();
    assert_eq!(features.len(), 6, "the last chunk is short");
    let f = &features[1];
    assert_eq!(f["id"], 65);
    assert_eq!(f["evidence"]["fires"], 70);
    assert!(f["evidence"].get("feature").is_none());
    assert_eq!(f["label"]["label"], "concept 65");
    assert_eq!(f["neighbours"][0]["feature"], 66);
    assert_eq!(f["neighbours"][0]["label"], "concept 66");
    assert_eq!(f["cluster"]["top_words"][0], "word1");

    let (_, chunk0) = read_script(&out.join("data/features/0000.js"));
    assert_eq!(
        chunk0["features"][7]["evidence"]["top"][0]["tokens"][2],
        SCRIPT_TOKEN
    );
    assert!(out.join("data/map.js").is_file());
    assert!(out.join("data/steering.js").is_file());
}

#[test]
fn a_site_needs_only_the_sae() {
    let dir = tempfile::tempdir().unwrap();
    let full = write_demo_run(dir.path(), 16).unwrap();
    let files = RunFiles {
        sae_dir: full.sae_dir,
        ..RunFiles::default()
    };
    let out = dir.path().join("site");
    let summary = write_site(&files, &SiteOptions::default(), &out).unwrap();
    assert_eq!(summary.labelled, 0);
    let (_, index) = read_script(&out.join("data/index.js"));
    assert_eq!(index["has"]["map"], false);
    assert_eq!(index["columns"]["max_activation"][2], 3.0, "from eval.json");
    assert!(!out.join("data/map.js").exists());
}

#[test]
fn a_bad_file_is_named_and_leaves_the_old_site_alone() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_demo_run(dir.path(), 16).unwrap();
    let out = dir.path().join("site");
    write_site(&files, &SiteOptions::default(), &out).unwrap();
    let before = std::fs::read(out.join("data/index.js")).unwrap();

    let labels = files.labels.clone().unwrap().labels_path();
    let line = |feature: u32| {
        format!(
            "{{\"feature\": {feature}, \"label\": \"ok\", \"explanation\": \"\", \"explainer\": \"statistical\", \"scores\": {{\"detection\": null, \"fuzzing\": null}}, \"baseline\": null}}\n"
        )
    };
    std::fs::write(&labels, line(1) + &line(99)).unwrap();
    let error = write_site(&files, &SiteOptions::default(), &out)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("labels.jsonl") && error.contains("feature 99 is out of range"),
        "{error}"
    );

    std::fs::write(&labels, line(1) + "{not json\n").unwrap();
    let error = write_site(&files, &SiteOptions::default(), &out)
        .unwrap_err()
        .to_string();
    assert!(error.contains("labels.jsonl: line 2"), "{error}");

    assert_eq!(std::fs::read(out.join("data/index.js")).unwrap(), before);
}

#[test]
fn evidence_out_of_order_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_demo_run(dir.path(), 16).unwrap();
    let evidence = files.labels.clone().unwrap().evidence_path();
    let lines: Vec<String> = std::fs::read_to_string(&evidence)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    std::fs::write(&evidence, format!("{}\n{}\n", lines[5], lines[2])).unwrap();
    let error = write_site(&files, &SiteOptions::default(), &dir.path().join("site"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("feature order"), "{error}");
}

#[test]
fn from_run_finds_each_stage_by_the_kind_run_json_records() {
    let dir = tempfile::tempdir().unwrap();
    write_demo_run(dir.path(), 16).unwrap();
    let files = RunFiles::from_run(dir.path()).unwrap();
    assert!(files.sae_dir.ends_with("train/sae"));
    assert!(files.labels.unwrap().dir.ends_with("label"));
    assert!(files.clusters.unwrap().dir.ends_with("cluster"));
    assert!(files.steering.unwrap().dir.ends_with("steer"));
}

#[test]
fn two_stages_of_one_kind_are_named_not_guessed() {
    let dir = tempfile::tempdir().unwrap();
    write_demo_run(dir.path(), 16).unwrap();
    let label = dir.path().join("label");
    let again = dir.path().join("label-again");
    std::fs::create_dir_all(&again).unwrap();
    write_run_record(
        dir.path(),
        &[
            (
                "train",
                "train",
                ArtifactKind::SAE,
                dir.path().join("train/sae"),
            ),
            ("label", "autointerp-label", ArtifactKind::LABELS, label),
            (
                "label-again",
                "autointerp-label",
                ArtifactKind::LABELS,
                again,
            ),
        ],
    )
    .unwrap();
    let error = RunFiles::from_run(dir.path()).unwrap_err().to_string();
    assert!(
        error.contains(
            "2 stages hold labels: `label` (autointerp-label), `label-again` (autointerp-label)"
        ),
        "{error}"
    );
}

#[test]
fn a_stage_without_its_completion_marker_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    write_demo_run(dir.path(), 16).unwrap();
    std::fs::remove_file(dir.path().join("cluster/.monoscope-complete.json")).unwrap();
    let files = RunFiles::from_run(dir.path()).unwrap();
    assert!(files.clusters.is_none());
    assert!(files.labels.is_some());
}
