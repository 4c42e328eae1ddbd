//! The cluster stage end to end on small SAEs with planted structure: files and their shapes,
//! recovery of the planted groups, cross-SAE neighbours, dead features, and parameter checks.

use std::path::{Path, PathBuf};

use monoscope_artifacts::cluster::{ClustersFile, MapFile, NeighbourLine};
use monoscope_artifacts::label::{LabelOutputs, LabelRecord};
use monoscope_cluster::louvain::adjusted_rand_index;
use monoscope_cluster::rng::planted_dictionary;
use monoscope_cluster::{Cluster, ClusterStageConfig};
use monoscope_core::{
    Artifact, ArtifactKind, CancelToken, InputPort, Message, OutputPort, Progress, Stage,
    StageConfig, StageContext, Work, part_dir,
};
use monoscope_sae::{Architecture, Sae, SaeMetadata, save_saelens};

/// Clusters must match the planted groups at least this well (adjusted Rand index).
const MIN_ARI: f64 = 0.9;

fn save_sae(dir: &Path, rows: &[f32], d_in: usize) -> PathBuf {
    let d_sae = rows.len() / d_in;
    let mut w_enc = vec![0.0; d_in * d_sae];
    for f in 0..d_sae {
        for i in 0..d_in {
            w_enc[i * d_sae + f] = rows[f * d_in + i];
        }
    }
    let sae = Sae {
        d_in,
        d_sae,
        architecture: Architecture::Relu,
        w_enc,
        b_enc: vec![0.0; d_sae],
        w_dec: rows.to_vec(),
        b_dec: vec![0.0; d_in],
        threshold: None,
        apply_b_dec_to_input: true,
        metadata: SaeMetadata::default(),
        extra_cfg: Default::default(),
    };
    save_saelens(&sae, dir).unwrap();
    dir.to_path_buf()
}

fn config(extra: serde_json::Value) -> ClusterStageConfig {
    let mut value = serde_json::json!({ "map_epochs": 200, "picture_size": 256 });
    value
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(value).unwrap()
}

/// Runs the stage through its ports, as the executor would; returns the stage directory.
fn run_stage(
    run_dir: &Path,
    inputs: &[(&str, ArtifactKind, &Path)],
    config: ClusterStageConfig,
) -> PathBuf {
    let cancel = CancelToken::new();
    let ports = inputs
        .iter()
        .map(|(name, kind, path)| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            tx.send(Message::Artifact(Artifact::new(
                kind.clone(),
                path.to_path_buf(),
            )))
            .unwrap();
            InputPort::new(*name, rx, cancel.clone())
        })
        .collect();
    let (out_tx, out_rx) = crossbeam_channel::bounded(1);
    let stage_dir = run_dir.join("cluster");
    std::fs::create_dir_all(&stage_dir).unwrap();
    let mut ctx = StageContext::new(
        "cluster",
        run_dir,
        stage_dir.clone(),
        5,
        cancel.clone(),
        Progress::hidden("cluster"),
        ports,
        vec![OutputPort::new("clusters", vec![out_tx], cancel)],
    );
    Cluster::run(config, &mut ctx).unwrap();
    match out_rx.try_recv().unwrap() {
        Message::Artifact(a) => {
            assert_eq!(a.kind, ArtifactKind::CLUSTERS);
            assert_eq!(a.path, stage_dir);
        }
        Message::Activations(_) => panic!("expected an artifact"),
    }
    stage_dir
}

fn read_json<T: serde::de::DeserializeOwned>(path: PathBuf) -> T {
    serde_json::from_slice(&std::fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn neighbour_lines(dir: &Path, file: &str) -> Vec<NeighbourLine> {
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn planted_groups_come_back_as_clusters_with_their_label_words() {
    let tmp = tempfile::tempdir().unwrap();
    let (groups, per_group, dim) = (30, 12, 64);
    let (rows, truth) = planted_dictionary(groups, per_group, dim, 0.6, 3);
    let sae = save_sae(&tmp.path().join("sae"), &rows, dim);
    // The parents: one direction per group, as a smaller SAE on the same hook would have.
    let (parents, _) = planted_dictionary(groups, 1, dim, 0.0, 3);
    let other = save_sae(&tmp.path().join("parents"), &parents, dim);
    let labels = tmp.path().join("labels");
    std::fs::create_dir_all(&labels).unwrap();
    let records: Vec<LabelRecord> = truth
        .iter()
        .enumerate()
        .map(|(f, g)| LabelRecord {
            feature: f as u32,
            label: format!("topic{g} things, variant {f}"),
            explanation: String::new(),
            explainer: "statistical".into(),
            scores: Default::default(),
            baseline: None,
        })
        .collect();
    LabelOutputs::new(&labels).write_labels(&records).unwrap();

    let dir = run_stage(
        tmp.path(),
        &[
            ("sae", ArtifactKind::SAE, &sae),
            ("labels", ArtifactKind::LABELS, &labels),
            ("other_sae", ArtifactKind::SAE, &other),
        ],
        config(serde_json::json!({ "k": 8 })),
    );
    let n = groups * per_group;

    let neighbours = neighbour_lines(&dir, "neighbours.jsonl");
    assert_eq!(neighbours.len(), n);
    for (i, line) in neighbours.iter().enumerate() {
        assert_eq!(line.feature as usize, i);
        assert_eq!(line.neighbours.len(), 8);
        assert!(line.neighbours.iter().all(|x| x.feature as usize != i));
        assert!(
            line.neighbours
                .windows(2)
                .all(|w| w[0].cosine >= w[1].cosine)
        );
        // Same-group members are far nearer than anything else.
        assert!(
            line.neighbours
                .iter()
                .all(|x| truth[x.feature as usize] == truth[i])
        );
    }

    let clusters: ClustersFile = read_json(dir.join("clusters.json"));
    assert_eq!(clusters.method, "louvain");
    assert_eq!(clusters.assignment.len(), n);
    let ari = adjusted_rand_index(&clusters.assignment, &truth);
    eprintln!(
        "exact search: adjusted Rand index {ari}, {} clusters",
        clusters.clusters.len()
    );
    assert!(ari >= MIN_ARI, "adjusted Rand index {ari} < {MIN_ARI}");
    assert!(clusters.clusters.windows(2).all(|w| w[0].size >= w[1].size));
    for (id, c) in clusters.clusters.iter().enumerate() {
        assert_eq!(c.id as usize, id);
        assert_eq!(c.size as usize, c.members.len());
        assert!(
            c.members
                .iter()
                .all(|&m| clusters.assignment[m as usize] == c.id)
        );
        let group = truth[c.members[0] as usize];
        let topics: Vec<&String> = c
            .top_words
            .iter()
            .filter(|w| w.starts_with("topic"))
            .collect();
        assert_eq!(topics, [&format!("topic{group}")], "{c:?}");
        assert!(c.top_words.contains(&"things".to_string()));
    }

    let map: MapFile = read_json(dir.join("map.json"));
    assert_eq!((map.x.len(), map.y.len()), (n, n));
    assert!(map.x.iter().chain(&map.y).all(|v| (0.0..=1.0).contains(v)));
    // Within a group of 12 the 10 nearest are nearly interchangeable, so on the map they are
    // found among each other: well above the ~3% of a random map.
    assert!(
        map.neighbourhood_preservation > 0.4,
        "preservation {}",
        map.neighbourhood_preservation
    );
    let png = std::fs::read(dir.join("map.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        std::fs::read_to_string(dir.join("map.svg"))
            .unwrap()
            .contains("topic")
    );

    let cross = neighbour_lines(&dir, "cross_neighbours.jsonl");
    assert_eq!(cross.len(), n);
    for (i, line) in cross.iter().enumerate() {
        assert_eq!(line.neighbours[0].feature, truth[i], "feature {i}");
        assert!(line.neighbours[0].cosine > 0.7);
    }

    let summary: serde_json::Value = read_json(dir.join("summary.json"));
    assert_eq!(summary["neighbours"]["method"], "exact");
    assert_eq!(summary["cross"]["other_features"], groups);
    assert_eq!(summary["labelled_features"], n);
    // No temporary files are left behind.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(!name.to_string_lossy().contains(".tmp-"), "{name:?}");
    }
}

#[test]
fn the_approximate_search_reports_its_recall_and_still_finds_the_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let (rows, truth) = planted_dictionary(40, 10, 48, 0.6, 8);
    let sae = save_sae(&tmp.path().join("sae"), &rows, 48);
    let dir = run_stage(
        tmp.path(),
        &[("sae", ArtifactKind::SAE, &sae)],
        config(serde_json::json!({ "method": "approximate", "recall_queries": 200 })),
    );
    let summary: serde_json::Value = read_json(dir.join("summary.json"));
    assert_eq!(summary["neighbours"]["method"], "approximate");
    assert_eq!(summary["neighbours"]["recall_queries"], 200);
    let recall = summary["neighbours"]["recall"].as_f64().unwrap();
    assert!(recall > 0.9, "recall@10 {recall}");
    let clusters: ClustersFile = read_json(dir.join("clusters.json"));
    let ari = adjusted_rand_index(&clusters.assignment, &truth);
    eprintln!("approximate search: recall@10 {recall}, adjusted Rand index {ari}");
    assert!(ari >= MIN_ARI, "adjusted Rand index {ari}");
    assert!(clusters.clusters.iter().all(|c| c.top_words.is_empty()));
}

#[test]
fn dead_features_have_no_neighbours_and_clusters_of_their_own() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut rows, _) = planted_dictionary(5, 8, 16, 0.5, 1);
    for dead in [3usize, 17] {
        rows[dead * 16..(dead + 1) * 16].fill(0.0);
    }
    let sae = save_sae(&tmp.path().join("sae"), &rows, 16);
    let dir = run_stage(
        tmp.path(),
        &[("sae", ArtifactKind::SAE, &sae)],
        config(serde_json::json!({ "k": 5, "graph_k": 5 })),
    );
    let neighbours = neighbour_lines(&dir, "neighbours.jsonl");
    assert!(neighbours[3].neighbours.is_empty() && neighbours[17].neighbours.is_empty());
    assert!(neighbours.iter().all(|l| {
        l.neighbours
            .iter()
            .all(|n| n.feature != 3 && n.feature != 17)
    }));
    let clusters: ClustersFile = read_json(dir.join("clusters.json"));
    for dead in [3usize, 17] {
        let id = clusters.assignment[dead] as usize;
        assert_eq!(clusters.clusters[id].members, [dead as u32]);
    }
    let map: MapFile = read_json(dir.join("map.json"));
    assert!(map.x.iter().chain(&map.y).all(|v| v.is_finite()));
    let summary: serde_json::Value = read_json(dir.join("summary.json"));
    assert_eq!(summary["dead_features"], 2);
}

#[test]
fn bad_parameters_and_inputs_are_reported_by_name() {
    let bad = config(serde_json::json!({ "k": 0, "nprobe": 0, "resolution": -1.0 }));
    let problems = bad.validate();
    let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["k", "nprobe", "resolution"], "{problems:?}");
    let too_many = config(serde_json::json!({ "nlist": 8, "nprobe": 9 })).validate();
    assert_eq!(
        too_many,
        [(
            "nprobe".to_string(),
            "= 9: expected at most nlist = 8".to_string()
        )]
    );
    let no_cells = config(serde_json::json!({ "nlist": 0 })).validate();
    assert_eq!(
        no_cells,
        [("nlist".to_string(), "= 0: expected at least 1".to_string())]
    );
    let typo = serde_json::from_value::<ClusterStageConfig>(serde_json::json!({ "kk": 3 }));
    assert!(typo.unwrap_err().to_string().contains("kk"));

    // A missing SAE directory is an error naming it, not a panic.
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-sae");
    let stage_dir = tmp.path().join("cluster");
    std::fs::create_dir_all(&stage_dir).unwrap();
    let mut ctx = StageContext::new(
        "cluster",
        tmp.path(),
        stage_dir,
        0,
        CancelToken::new(),
        Progress::hidden("cluster"),
        Vec::new(),
        Vec::new(),
    );
    let err = monoscope_cluster::stage::cluster(
        &missing,
        None,
        None,
        &config(serde_json::json!({})),
        &mut ctx,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no-such-sae"), "{err}");
}

/// Runs the stage with `parts = count` as the executor would: each part in its own directory
/// (`cluster/parts/<i>/`), then the merge with the parts' announced artifacts; returns the
/// stage directory.
fn run_stage_in_parts(
    run_dir: &Path,
    inputs: &[(&str, ArtifactKind, &Path)],
    config: ClusterStageConfig,
    count: usize,
) -> PathBuf {
    let stage_dir = run_dir.join("cluster");
    let cancel = CancelToken::new();
    let ports = |names: &[&str]| -> Vec<InputPort> {
        inputs
            .iter()
            .filter(|(name, _, _)| names.contains(name))
            .map(|(name, kind, path)| {
                let (tx, rx) = crossbeam_channel::bounded(1);
                tx.send(Message::Artifact(Artifact::new(
                    kind.clone(),
                    path.to_path_buf(),
                )))
                .unwrap();
                InputPort::new(*name, rx, cancel.clone())
            })
            .collect()
    };
    let mut announced = Vec::new();
    for index in 0..count {
        let dir = part_dir(&stage_dir, index);
        std::fs::create_dir_all(&dir).unwrap();
        let mut ctx = StageContext::new(
            "cluster",
            run_dir,
            dir.clone(),
            5,
            cancel.clone(),
            Progress::hidden("cluster"),
            ports(&["sae"]),
            vec![OutputPort::new("clusters", Vec::new(), cancel.clone())],
        );
        ctx.work = Work::Part { index, count };
        Cluster::run(config.clone(), &mut ctx).unwrap();
        assert_eq!(ctx.emitted().len(), 1);
        assert_eq!(ctx.emitted()[0].1.path, dir);
        announced.push(ctx.emitted().to_vec());
    }
    let mut ctx = StageContext::new(
        "cluster",
        run_dir,
        stage_dir.clone(),
        5,
        cancel.clone(),
        Progress::hidden("cluster"),
        ports(&["sae", "labels", "other_sae"]),
        vec![OutputPort::new("clusters", Vec::new(), cancel.clone())],
    );
    ctx.work = Work::Merge { parts: announced };
    Cluster::run(config, &mut ctx).unwrap();
    assert_eq!(ctx.emitted()[0].1.path, stage_dir);
    stage_dir
}

#[test]
fn parts_of_the_exact_search_give_the_files_of_a_run_in_one_piece() {
    let tmp = tempfile::tempdir().unwrap();
    let (groups, per_group, dim) = (20, 9, 32);
    let (mut rows, truth) = planted_dictionary(groups, per_group, dim, 0.6, 4);
    rows[7 * dim..8 * dim].fill(0.0); // a dead feature
    let sae = save_sae(&tmp.path().join("sae"), &rows, dim);
    let (parents, _) = planted_dictionary(groups, 1, dim, 0.0, 4);
    let other = save_sae(&tmp.path().join("parents"), &parents, dim);
    let labels = tmp.path().join("labels");
    std::fs::create_dir_all(&labels).unwrap();
    let records: Vec<LabelRecord> = truth
        .iter()
        .enumerate()
        .map(|(f, g)| LabelRecord {
            feature: f as u32,
            label: format!("topic{g} word{}", f % 3),
            explanation: String::new(),
            explainer: "statistical".into(),
            scores: Default::default(),
            baseline: None,
        })
        .collect();
    LabelOutputs::new(&labels).write_labels(&records).unwrap();
    let inputs = [
        ("sae", ArtifactKind::SAE, sae.as_path()),
        ("labels", ArtifactKind::LABELS, labels.as_path()),
        ("other_sae", ArtifactKind::SAE, other.as_path()),
    ];
    // A block that the parts' ranges cut, and graph_k > k: the parts keep the longer lists.
    let settings =
        || config(serde_json::json!({ "method": "exact", "k": 4, "graph_k": 7, "block": 16 }));
    let whole_dir = tmp.path().join("whole");
    let whole = run_stage(&whole_dir, &inputs, settings());
    for count in [2, 3, 7] {
        let parts_dir = tmp.path().join(format!("parts{count}"));
        let parts = run_stage_in_parts(&parts_dir, &inputs, settings(), count);
        for file in [
            "neighbours.jsonl",
            "cross_neighbours.jsonl",
            "clusters.json",
            "map.json",
            "map.png",
            "map.svg",
        ] {
            assert!(
                std::fs::read(parts.join(file)).unwrap()
                    == std::fs::read(whole.join(file)).unwrap(),
                "{file} differs with {count} parts"
            );
        }
        let summary: serde_json::Value = read_json(parts.join("summary.json"));
        assert_eq!(summary["neighbours"]["parts"], count);
        assert_eq!(summary["neighbours"]["method"], "exact");
        assert_eq!(summary["cross"]["other_features"], groups);
        assert_eq!(summary["dead_features"], 1);
        let first: serde_json::Value = read_json(part_dir(&parts, 0).join("part_summary.json"));
        assert_eq!(first["list_len"], 7);
    }
}

#[test]
fn parts_of_the_approximate_search_build_one_index_and_report_the_recall_of_the_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (rows, _) = planted_dictionary(40, 10, 48, 0.6, 8);
    let sae = save_sae(&tmp.path().join("sae"), &rows, 48);
    let inputs = [("sae", ArtifactKind::SAE, sae.as_path())];
    let settings = || {
        config(serde_json::json!({ "method": "approximate", "recall_queries": 150, "nprobe": 4 }))
    };
    let whole = run_stage(&tmp.path().join("whole"), &inputs, settings());
    let parts = run_stage_in_parts(&tmp.path().join("parts"), &inputs, settings(), 3);
    let whole_lines = neighbour_lines(&whole, "neighbours.jsonl");
    let part_lines = neighbour_lines(&parts, "neighbours.jsonl");
    assert_eq!(whole_lines.len(), part_lines.len());
    // The same pairs are scored for every feature; only a cosine's last bit may differ.
    for (w, p) in whole_lines.iter().zip(&part_lines) {
        assert_eq!(w.feature, p.feature);
        let ids = |l: &NeighbourLine| l.neighbours.iter().map(|n| n.feature).collect::<Vec<_>>();
        assert_eq!(ids(w), ids(p), "feature {}", w.feature);
        for (a, b) in w.neighbours.iter().zip(&p.neighbours) {
            assert!((a.cosine - b.cosine).abs() < 1e-5);
        }
    }
    let summary = |dir: &Path| -> serde_json::Value { read_json(dir.join("summary.json")) };
    let (w, p) = (
        summary(&whole)["neighbours"].clone(),
        summary(&parts)["neighbours"].clone(),
    );
    assert_eq!(p["method"], "approximate");
    assert_eq!(p["parts"], 3);
    assert_eq!(p["recall_queries"], 150);
    // Measured in the merge on the joined lists, with the whole run's sample of queries.
    assert_eq!(p["recall"], w["recall"]);
    for key in ["nlist", "nprobe", "largest_list", "train_sample"] {
        assert_eq!(p["index"][key], w["index"][key], "{key}");
    }
    // A part's own report has no recall.
    let part: serde_json::Value = read_json(part_dir(&parts, 1).join("part_summary.json"));
    assert!(part["neighbours"].get("recall").is_none(), "{part}");
}

/// Runs the stage on the quickstart SAE. Set `MONOSCOPE_CLUSTER_OUT` to keep the output there.
#[test]
#[ignore = "needs the quickstart run: cargo xtask pipeline run pipelines/quickstart.toml"]
fn quickstart_sae_map() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sae = root.join("runs/quickstart/train/sae");
    if !sae.join("cfg.json").exists() {
        eprintln!("skipped: {} is missing", sae.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = std::env::var_os("MONOSCOPE_CLUSTER_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let config: ClusterStageConfig = serde_json::from_value(serde_json::json!({})).unwrap();
    let dir = run_stage(&out, &[("sae", ArtifactKind::SAE, &sae)], config);
    let summary: serde_json::Value = read_json(dir.join("summary.json"));
    println!("{}", serde_json::to_string_pretty(&summary).unwrap());
    assert_eq!(summary["features"], 4608);
}
