//! The site's data files, built from a synthetic run.

use monoscope_artifacts::ArtifactKind;
use monoscope_browser::site::SiteOptions;
use monoscope_browser::testing::{
    ATTRIBUTION_PROMPTS, CONTRAST_NAME, CONTRAST_TOP_FEATURE, FIRST_PROMPT_AGREED,
    FIRST_PROMPT_ENTRIES, SCRIPT_TOKEN, family_sizes, write_demo_run, write_run_record,
};
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
    for analysis in ["families", "coverage", "attribution", "contrast"] {
        assert_eq!(index["has"][analysis], false, "{analysis}");
        assert!(
            !out.join(format!("data/{analysis}.js")).exists(),
            "{analysis}"
        );
    }
    assert_eq!(index["split"], Value::Null);
    let (_, chunk) = read_script(&out.join("data/features/0000.js"));
    assert!(chunk["features"][3].get("split").is_none());
}

#[test]
fn the_analyses_each_get_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let d_sae = 70;
    let files = write_demo_run(dir.path(), d_sae).unwrap();
    let out = dir.path().join("site");
    write_site(&files, &SiteOptions::default(), &out).unwrap();
    let (_, index) = read_script(&out.join("data/index.js"));
    for analysis in ["families", "coverage", "attribution", "contrast"] {
        assert_eq!(index["has"][analysis], true, "{analysis}");
    }
    assert_eq!(index["split"]["main"], 1);
    assert_eq!(index["split"]["members"][2]["d_sae"], 2 * d_sae);

    // Feature 7 of the SAE: split from feature 1 of the smallest, into 14 and 15 of the largest.
    let (_, chunk) = read_script(&out.join("data/features/0000.js"));
    let split = &chunk["features"][7]["split"];
    assert_eq!(split["family"], 1);
    assert_eq!(split["parents"].as_array().unwrap().len(), 1);
    assert_eq!(split["parents"][0]["member"], 0);
    assert_eq!(split["parents"][0]["feature"], 1);
    assert_eq!(split["parents"][0]["top_tokens"][0], " root1");
    assert_eq!(split["parents"][0]["coactivation"], 0.75);
    let children = &split["children"][0];
    assert_eq!(children["member"], 2);
    assert_eq!(children["total"], 2);
    let ids: Vec<u64> = children["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["feature"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [14, 15]);
    assert_eq!(children["features"][0]["top_tokens"][0], SCRIPT_TOKEN);
    assert_eq!(children["features"][0]["link"]["parent"], 7);
    let dead = &chunk["features"][9]["split"];
    assert_eq!(dead["family"], Value::Null);
    assert_eq!(dead["parents"].as_array().unwrap().len(), 0);
    assert_eq!(dead["children"].as_array().unwrap().len(), 0);

    // Families: every root whose largest-member features number more than one, the largest
    // first; root 0 has no dead feature under it, so it splits into all eight.
    let (name, families) = read_script(&out.join("data/families.js"));
    assert_eq!(name, "families");
    assert_eq!(families["roots"], family_sizes(d_sae)[0]);
    let first = &families["families"][0];
    assert_eq!(first["root"], 0);
    assert_eq!(first["sizes"], serde_json::json!([1, 4, 8]));
    let tree = &first["tree"];
    assert_eq!(tree["member"], 0);
    assert_eq!(tree["children"].as_array().unwrap().len(), 4);
    assert_eq!(tree["children"][0]["member"], 1);
    assert_eq!(tree["children"][0]["children"].as_array().unwrap().len(), 2);
    let (_, map) = read_script(&out.join("data/map.js"));
    assert_eq!(map["family"][6], 1);
    assert_eq!(map["family"][9], Value::Null);

    let (_, coverage) = read_script(&out.join("data/coverage.js"));
    assert_eq!(coverage["main_member"], 1);
    assert_eq!(coverage["concepts"][1]["best"][1]["feature"], 3);
    assert_eq!(coverage["bins"][2]["covered_fraction"][1], 1.0);

    let (_, attribution) = read_script(&out.join("data/attribution.js"));
    let prompts = attribution.as_array().unwrap();
    assert_eq!(prompts.len(), ATTRIBUTION_PROMPTS);
    assert_eq!(
        prompts[0]["entries"].as_array().unwrap().len(),
        FIRST_PROMPT_ENTRIES
    );
    assert_eq!(prompts[0]["sign_agreements"], FIRST_PROMPT_AGREED);
    assert_eq!(prompts[0]["entries"][3]["ablation_effect"], Value::Null);

    let (_, contrast) = read_script(&out.join("data/contrast.js"));
    assert_eq!(contrast[0]["name"], CONTRAST_NAME);
    assert_eq!(contrast[0]["hits"][0]["feature"], CONTRAST_TOP_FEATURE);
}

#[test]
fn a_family_of_one_size_has_no_families_page() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_demo_run(dir.path(), 16).unwrap();
    let outputs = files.split.clone().unwrap();
    let mut split = outputs.split().unwrap().unwrap();
    split.members.retain(|m| m.main);
    split.levels.clear();
    outputs.write_split(&split).unwrap();
    let out = dir.path().join("site");
    write_site(&files, &SiteOptions::default(), &out).unwrap();
    let (_, index) = read_script(&out.join("data/index.js"));
    assert_eq!(index["has"]["families"], false);
    assert!(!out.join("data/families.js").exists());
    let (_, map) = read_script(&out.join("data/map.js"));
    assert_eq!(map["family"], Value::Null);
}

#[test]
fn analyses_that_do_not_fit_the_sae_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_demo_run(dir.path(), 16).unwrap();
    let out = dir.path().join("site");
    let build = || {
        write_site(&files, &SiteOptions::default(), &out)
            .unwrap_err()
            .to_string()
    };

    let split_outputs = files.split.clone().unwrap();
    let good_split = split_outputs.split().unwrap().unwrap();
    let mut split = good_split.clone();
    split.members[1].d_sae = 32;
    split_outputs.write_split(&split).unwrap();
    let error = build();
    assert!(
        error.contains("split.json")
            && error.contains("the main member `main` has 32 features but the site's SAE has 16"),
        "{error}"
    );
    let mut split = good_split.clone();
    split.levels[1].parent[3] = Some(99);
    split_outputs.write_split(&split).unwrap();
    let error = build();
    assert!(
        error.contains("level 2 → 1: parent 99 is out of range"),
        "{error}"
    );
    split_outputs.write_split(&good_split).unwrap();

    let steer = files.steering.clone().unwrap();
    let mut attributions = steer.attributions().unwrap().unwrap();
    attributions[1].entries[0].feature = 16;
    steer.write_attributions(&attributions).unwrap();
    let error = build();
    assert!(
        error.contains("attributions.json")
            && error.contains("feature 16 is out of range (the SAE has 16 features)"),
        "{error}"
    );
    attributions[1].entries[0].feature = 0;
    attributions[1].entries[0].position = 50;
    steer.write_attributions(&attributions).unwrap();
    let error = build();
    assert!(
        error.contains("position 50 is past the 7 tokens"),
        "{error}"
    );
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
    assert!(files.split.unwrap().dir.ends_with("split"));
    assert!(files.coverage.unwrap().dir.ends_with("coverage"));
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
