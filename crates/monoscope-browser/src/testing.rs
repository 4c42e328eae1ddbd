//! A small synthetic run (every file the site reads, `run.json` and completion markers) for
//! tests of the site and the page.
//!
//! Feature 7's first top context holds a `<script>` token and its label holds markup, and so
//! do the top tokens of its children in the larger SAE of the split family, so a test can
//! check that untrusted strings show as text. Feature 14's label has no letters, so that a
//! test can check the overview leaves such labels out.
//!
//! The analyses: a family of three SAEs (a quarter of the size, the SAE itself, twice the
//! size; each feature of the SAE splits from feature `i / 4` of the smallest and into features
//! `2i` and `2i + 1` of the largest), concept coverage per size, attributions for
//! [`ATTRIBUTION_PROMPTS`] prompts and one contrastive search.

use std::path::{Path, PathBuf};

use monoscope_artifacts::cluster::{self, ClusterEntry, ClusterOutputs, ClustersFile, MapFile};
use monoscope_artifacts::coverage::{
    self, ConceptCoverage, ConceptMatch, CoverageFile, CoverageMember, CoverageOutputs,
    FrequencyBin,
};
use monoscope_artifacts::label::{self, LabelOutputs, Summary};
use monoscope_artifacts::run::{
    CompletionMarker, FORMAT_VERSION, RunRecord, StageReport, StageStatus, write_marker,
    write_run_record as write_run_record_file,
};
use monoscope_artifacts::split::{self, FamilyMember, SplitFile, SplitLevel, SplitOutputs};
use monoscope_artifacts::steer::{
    self, Attribution, AttributionEntry, Contrast, ContrastHit, Effect, ExperimentReport, Mode,
    PromptRun, Report, Scale, SelectedFeature, Settings, SteerOutputs, SteeredText, TargetEffect,
    TargetSummary,
};
use monoscope_artifacts::train::{DensityHistogram, EvalReport, SpliceReport, TrainOutputs};
use monoscope_artifacts::{Artifact, ArtifactKind};
use serde_json::{Value, json};

use crate::inputs::RunFiles;

/// The hook the demo SAE reads.
const HOOK: &str = "blocks.1.hook_resid_post";

/// The token that must show as text, never run.
pub const SCRIPT_TOKEN: &str = "<script>document.body.dataset.pwned='1'</script>";

/// Prompts in the demo run's `attributions.json`.
pub const ATTRIBUTION_PROMPTS: usize = 2;
/// Entries of the first prompt's attribution, of which [`FIRST_PROMPT_ABLATED`] were ablated
/// and [`FIRST_PROMPT_AGREED`] agreed in sign.
pub const FIRST_PROMPT_ENTRIES: usize = 5;
pub const FIRST_PROMPT_ABLATED: usize = 3;
pub const FIRST_PROMPT_AGREED: usize = 2;
/// The feature a `text:` selection chose in the demo steering report.
pub const TEXT_SELECTED_FEATURE: u32 = 5;
/// The contrastive search of the demo run and its best hit.
pub const CONTRAST_NAME: &str = "Golden Gate";
pub const CONTRAST_TOP_FEATURE: u32 = 3;
/// Sizes of the split family: the smallest is a quarter of the SAE, the largest twice it.
pub fn family_sizes(d_sae: usize) -> [usize; 3] {
    [d_sae.div_ceil(4), d_sae, 2 * d_sae]
}

/// Writes a run of `d_sae` features (at least 16) under `dir` and returns where its files are.
pub fn write_demo_run(dir: &Path, d_sae: usize) -> std::io::Result<RunFiles> {
    assert!(d_sae >= 16, "the demo run needs at least 16 features");
    let train = dir.join("train");
    let sae = train.join("sae");
    let labels = dir.join("label");
    let clusters = dir.join("cluster");
    let steer = dir.join("steer");
    let split_dir = dir.join("split");
    let coverage_dir = dir.join("coverage");
    for d in [&sae, &labels, &clusters, &steer, &split_dir, &coverage_dir] {
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
        // Well scored but wordless: the overview leaves such labels out.
        14 => "0, 1, 2".to_string(),
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
        experiments: vec![
            ExperimentReport {
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
            },
            ExperimentReport {
                features: vec![SelectedFeature {
                    id: TEXT_SELECTED_FEATURE,
                    label: Some(label_of(TEXT_SELECTED_FEATURE as usize)),
                    selected_by: "text:a cup of coffee".into(),
                    max_activation: Some(6.0),
                    activation: Some(3.5),
                    token: Some(" coffee".into()),
                }],
                mode: Mode::Add,
                scale: Scale::MaxActivation,
                targets: vec![" coffee".into()],
                targets_from: "config".into(),
                baseline: TargetSummary {
                    target_prob: 0.02,
                    per_target: vec![],
                },
                effects: vec![effect(2.0, 1.0, 0.1, 0.05)],
                prompts: vec![],
            },
        ],
    };
    let steer_outputs = SteerOutputs::new(&steer);
    steer_outputs.write_report(&report).map_err(other)?;
    steer_outputs
        .write_attributions(&demo_attributions())
        .map_err(other)?;
    steer_outputs
        .write_contrasts(&[demo_contrast(&label_of)])
        .map_err(other)?;
    let split_outputs = SplitOutputs::new(&split_dir);
    split_outputs
        .write_split(&demo_split(d_sae, &dead))
        .map_err(other)?;
    let coverage_outputs = CoverageOutputs::new(&coverage_dir);
    coverage_outputs
        .write_coverage(&demo_coverage(d_sae))
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
            ("split", split::KIND, ArtifactKind::SPLIT, split_dir),
            (
                "coverage",
                coverage::KIND,
                ArtifactKind::COVERAGE,
                coverage_dir,
            ),
        ],
    )?;
    Ok(RunFiles {
        sae_dir: sae,
        labels: Some(label_outputs),
        clusters: Some(cluster_outputs),
        steering: Some(steer_outputs),
        split: Some(split_outputs),
        coverage: Some(coverage_outputs),
    })
}

/// Three SAEs: the smallest, the demo SAE (`main`), the largest. A dead feature of the SAE has
/// no parent and no children.
fn demo_split(d_sae: usize, dead: &dyn Fn(usize) -> bool) -> SplitFile {
    let [small, main, large] = family_sizes(d_sae);
    let main_parent = |i: usize| (!dead(i)).then_some((i / 4) as u32);
    let large_parent = |j: usize| main_parent(j / 2).map(|_| (j / 2) as u32);
    let small_member = FamilyMember {
        name: "small".into(),
        d_sae: small,
        sae_dir: "train/sweep/small/sae".into(),
        main: false,
        family: (0..small as u32).map(Some).collect(),
        // Falling with the id, so that among families of one size the first is the largest.
        firings: (0..small as u64).map(|r| 1000 - r).collect(),
        top_tokens: (0..small)
            .map(|r| vec![format!(" root{r}"), " the".into()])
            .collect(),
    };
    let main_member = FamilyMember {
        name: "main".into(),
        d_sae: main,
        sae_dir: "train/sae".into(),
        main: true,
        family: (0..main).map(main_parent).collect(),
        firings: (0..main as u64)
            .map(|i| if dead(i as usize) { 0 } else { 200 - i % 50 })
            .collect(),
        top_tokens: (0..main).map(|i| vec![format!(" mid{i}")]).collect(),
    };
    let large_member = FamilyMember {
        name: "large".into(),
        d_sae: large,
        sae_dir: "train/sweep/large/sae".into(),
        main: false,
        family: (0..large)
            .map(|j| large_parent(j).and_then(|p| main_parent(p as usize)))
            .collect(),
        firings: (0..large as u64)
            .map(|j| {
                if large_parent(j as usize).is_some() {
                    100 - j % 30
                } else {
                    0
                }
            })
            .collect(),
        top_tokens: (0..large)
            .map(|j| {
                // The children of feature 7 carry markup, to be shown as text.
                if j / 2 == 7 {
                    vec![SCRIPT_TOKEN.to_string()]
                } else {
                    vec![format!(" leaf{j}")]
                }
            })
            .collect(),
    };
    let level = |parent_member: usize, parents: Vec<Option<u32>>| SplitLevel {
        parent_member,
        child_member: parent_member + 1,
        // The closest decoder direction is the chosen parent except for every fifth child,
        // so that a page shows a measure pointing elsewhere.
        parent_by_cosine: parents
            .iter()
            .enumerate()
            .map(|(c, p)| {
                let p = p.unwrap_or(0);
                if c % 5 == 4 { p ^ 1 } else { p }
            })
            .collect(),
        cosine: (0..parents.len())
            .map(|c| 0.9 - (c % 7) as f32 * 0.05)
            .collect(),
        parent_by_coactivation: parents.clone(),
        coactivation: parents
            .iter()
            .map(|p| if p.is_some() { 0.75 } else { 0.0 })
            .collect(),
        parent: parents,
    };
    SplitFile {
        members: vec![small_member, main_member, large_member],
        criterion: "decoder cosine, co-activation on the same tokens to break ties".into(),
        tokens: 5000,
        levels: vec![
            level(0, (0..main).map(main_parent).collect()),
            level(1, (0..large).map(large_parent).collect()),
        ],
    }
}

/// Concepts covered more often by the larger SAEs; the SAE's own match for the Golden Gate
/// Bridge is feature 3.
fn demo_coverage(d_sae: usize) -> CoverageFile {
    let sizes = family_sizes(d_sae);
    let names = ["small", "main", "large"];
    let concept = |term: &str,
                   category: &str,
                   per_million: f64,
                   features: [Option<u32>; 3],
                   covered: [bool; 3]| {
        ConceptCoverage {
            term: term.into(),
            category: category.into(),
            occurrences: (per_million * 5.0) as u64,
            frequency_per_million: per_million,
            best: (0..3)
                .map(|m| ConceptMatch {
                    feature: features[m],
                    recall: if covered[m] { 0.8 } else { 0.2 },
                    precision: if covered[m] { 0.7 } else { 0.1 },
                    covered: covered[m],
                })
                .collect(),
        }
    };
    CoverageFile {
        criterion: "recall ≥ 0.5 and precision ≥ 0.5".into(),
        tokens: 200_000,
        members: names
            .iter()
            .zip(sizes)
            .map(|(name, d_sae)| CoverageMember {
                name: name.to_string(),
                d_sae,
            })
            .collect(),
        concepts: vec![
            concept(
                "Paris",
                "city",
                120.0,
                [Some(1), Some(4), Some(8)],
                [true, true, true],
            ),
            concept(
                "Golden Gate Bridge",
                "landmark",
                15.0,
                [Some(0), Some(3), Some(6)],
                [false, true, true],
            ),
            concept(
                "cello",
                "instrument",
                2.0,
                [None, Some(12), Some(24)],
                [false, false, true],
            ),
            concept(
                SCRIPT_TOKEN,
                "markup",
                0.5,
                [None, None, Some(2)],
                [false, false, false],
            ),
        ],
        bins: vec![
            FrequencyBin {
                low: 0.1,
                high: 1.0,
                concepts: 1,
                covered_fraction: vec![0.0, 0.0, 0.0],
            },
            FrequencyBin {
                low: 1.0,
                high: 10.0,
                concepts: 1,
                covered_fraction: vec![0.0, 0.0, 1.0],
            },
            FrequencyBin {
                low: 10.0,
                high: 1000.0,
                concepts: 2,
                covered_fraction: vec![0.5, 1.0, 1.0],
            },
        ],
    }
}

fn demo_attributions() -> Vec<Attribution> {
    let tokens = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    let entry = |feature: u32, position: usize, attribution: f64, ablation_effect: Option<f64>| {
        AttributionEntry {
            feature,
            position,
            activation: 2.5,
            attribution,
            ablation_effect,
            label: None,
        }
    };
    let first = Attribution {
        prompt: "The Golden Gate Bridge is in".into(),
        target: " San Francisco".into(),
        hook: HOOK.into(),
        tokens: tokens(&[
            "<bos>",
            "The",
            " Golden",
            " Gate",
            " Bridge",
            " is",
            " in",
            " San",
            " Francisco",
        ]),
        target_start: 7,
        target_logprob: -2.25,
        error_attribution: vec![0.0, 0.01, 0.05, 0.1, 0.2, -0.02, 0.03, 0.0, 0.0],
        entries: vec![
            // Two ablations agree in sign with the attribution (the log-probability falls when a
            // feature with positive attribution is removed); the third does not.
            entry(3, 4, 1.2, Some(-0.9)),
            entry(7, 3, 0.6, Some(-0.4)),
            entry(12, 6, -0.3, Some(-0.1)),
            entry(1, 2, 0.2, None),
            entry(5, 5, 0.1, None),
        ],
        ablated: FIRST_PROMPT_ABLATED,
        sign_agreements: FIRST_PROMPT_AGREED,
    };
    let second = Attribution {
        prompt: "I drink a cup of".into(),
        target: " coffee".into(),
        hook: HOOK.into(),
        tokens: tokens(&["<bos>", "I", " drink", " a", " cup", " of", " coffee"]),
        target_start: 6,
        target_logprob: -1.5,
        error_attribution: vec![0.0, 0.0, 0.02, 0.0, 0.1, 0.05, 0.0],
        entries: vec![entry(5, 4, 0.8, Some(-0.7)), entry(2, 2, 0.3, Some(-0.2))],
        ablated: 2,
        sign_agreements: 2,
    };
    vec![first, second]
}

fn demo_contrast(label_of: &dyn Fn(usize) -> String) -> Contrast {
    let hit = |feature: u32, difference: f64, standard_error: f64| ContrastHit {
        feature,
        positive_mean: difference + 0.1,
        negative_mean: 0.1,
        difference,
        standard_error,
        lower_bound: difference - 1.96 * standard_error,
        positive_firing: 0.9,
        negative_firing: 0.1,
        scaled: true,
        label: Some(label_of(feature as usize)),
    };
    Contrast {
        name: CONTRAST_NAME.into(),
        positive: "texts/golden-gate.txt".into(),
        negative: "texts/neutral.txt".into(),
        positive_texts: 20,
        negative_texts: 20,
        hits: vec![
            hit(CONTRAST_TOP_FEATURE, 0.8, 0.05),
            hit(7, 0.5, 0.1),
            hit(11, 0.3, 0.12),
        ],
    }
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
