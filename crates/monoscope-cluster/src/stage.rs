//! The `cluster` stage kind: parameters, ports, and the order of work.

use std::path::Path;
use std::time::Instant;

use monoscope_core::{
    Artifact, ArtifactKind, PortSpec, Stage, StageConfig, StageContext, StageDescription,
    StageError, Work, atomic, port_names, register_stage,
};
use serde::{Deserialize, Serialize};

use crate::approximate::{DEFAULT_NPROBE, IvfParams};
use crate::directions::Directions;
use crate::error::ClusterError;
use crate::labels::top_words;
use crate::layout::{LayoutParams, fuzzy_edges, layout, neighbourhood_preservation};
use crate::louvain::{Graph, louvain};
use crate::picture::MapPicture;
use crate::search::{
    SearchMethod, SearchOptions, SearchReport, find_neighbours, find_neighbours_of, measure_recall,
};
use monoscope_artifacts::cluster::{
    ClusterEntry, ClusterOutputs, ClusterPartSummary, ClusterSummary, ClusteringSummary,
    ClustersFile, MapFile, MapSummary,
};
use monoscope_artifacts::label::LabelOutputs;

/// Neighbours compared when scoring the map (the paper's "10 nearest").
const PRESERVATION_K: usize = 10;
/// Points whose map neighbourhood is checked (each check scans every point).
const PRESERVATION_SAMPLES: usize = 5000;
/// Label words kept per cluster.
const TOP_WORDS: usize = 5;
/// Clusters named in the SVG legend.
const LEGEND_CLUSTERS: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterStageConfig {
    /// Neighbours per feature written to `neighbours.jsonl` (and `cross_neighbours.jsonl`).
    pub k: usize,
    /// `exact`, `approximate` (inverted file), or `auto`: exact up to `exact_max` features.
    pub method: SearchMethod,
    /// Largest dictionary searched exactly under `method = "auto"`.
    pub exact_max: usize,
    /// Rows per block of the exact search; its scratch memory is `block² × 4` bytes.
    pub block: usize,
    /// Cells of the approximate search's partition (default: 4·√features).
    pub nlist: Option<usize>,
    /// Cells the approximate search scans per feature: more gives better recall, and the
    /// scan's time grows in proportion.
    pub nprobe: usize,
    /// Queries on which the approximate search's recall@k is measured against exact (0: none).
    pub recall_queries: usize,
    /// Neighbours per feature in the graph that is clustered and laid out.
    pub graph_k: usize,
    /// Louvain resolution: larger gives more, smaller clusters.
    pub resolution: f64,
    /// Layout optimiser passes (default: 500 up to 10,000 features, else 200).
    pub map_epochs: Option<usize>,
    /// How tightly neighbours may pack on the map (as umap-learn's `min_dist`).
    pub min_dist: f32,
    /// Repelling samples per attracting one in the layout.
    pub negative_samples: usize,
    /// Width and height of `map.png` and `map.svg`, in pixels.
    pub picture_size: u32,
    /// `map.svg` is written only up to this many features (one element per feature).
    pub svg_max_points: usize,
    /// Seed of the index, clustering and layout (default: the pipeline seed).
    pub seed: Option<u64>,
}

impl Default for ClusterStageConfig {
    fn default() -> Self {
        ClusterStageConfig {
            k: 10,
            method: SearchMethod::Auto,
            exact_max: 65_536,
            block: 2048,
            nlist: Default::default(),
            nprobe: DEFAULT_NPROBE,
            recall_queries: 1000,
            graph_k: 15,
            resolution: 1.0,
            map_epochs: Default::default(),
            min_dist: 0.1,
            negative_samples: 5,
            picture_size: 1024,
            svg_max_points: 20_000,
            seed: Default::default(),
        }
    }
}

impl StageConfig for ClusterStageConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("k", self.k),
            ("graph_k", self.graph_k),
            ("block", self.block),
            ("nprobe", self.nprobe),
            ("nlist", self.nlist.unwrap_or(1)),
        ] {
            if value == 0 {
                problems.push((key.to_string(), "= 0: expected at least 1".to_string()));
            }
        }
        if let Some(nlist) = self.nlist.filter(|&l| l > 0 && self.nprobe > l) {
            problems.push((
                "nprobe".into(),
                format!("= {}: expected at most nlist = {nlist}", self.nprobe),
            ));
        }
        if !(self.resolution.is_finite() && self.resolution > 0.0) {
            problems.push((
                "resolution".into(),
                format!("= {}: expected a positive number", self.resolution),
            ));
        }
        if !(0.0..1.0).contains(&self.min_dist) {
            problems.push((
                "min_dist".into(),
                format!("= {}: expected 0 ≤ min_dist < 1", self.min_dist),
            ));
        }
        if !(64..=8192).contains(&self.picture_size) {
            problems.push((
                "picture_size".into(),
                format!("= {}: expected 64..=8192 pixels", self.picture_size),
            ));
        }
        if self.map_epochs == Some(0) {
            problems.push(("map_epochs".into(), "= 0: expected at least 1".into()));
        }
        problems
    }
}

/// Nearest neighbours, clusters and a 2-D map of an SAE's features.
#[derive(Debug)]
pub struct Cluster;

impl Stage for Cluster {
    type Config = ClusterStageConfig;

    const PARTS: Option<&'static str> =
        Some("a contiguous range of the features whose neighbours are searched");

    fn description() -> StageDescription {
        StageDescription {
            kind: "cluster".into(),
            doc: "Nearest neighbours of SAE features by decoder cosine similarity, graph clusters, and a 2-D map (JSON, PNG, SVG)".into(),
            inputs: vec![
                PortSpec::artifact(port_names::SAE, ArtifactKind::SAE, "the SAE directory"),
                PortSpec::artifact(port_names::LABELS, ArtifactKind::LABELS, "feature labels (labels.jsonl), for the clusters' words").optional(),
                PortSpec::artifact(port_names::OTHER_SAE, ArtifactKind::SAE, "a second SAE on the same hook, for cross-SAE neighbours").optional(),
            ],
            outputs: vec![PortSpec::artifact(
                port_names::CLUSTERS,
                ArtifactKind::CLUSTERS,
                "the stage directory: neighbours.jsonl, clusters.json, map.json, map.png, summary.json",
            )],
        }
    }

    fn run(config: ClusterStageConfig, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let sae_path = ctx.recv_artifact(port_names::SAE)?.path;
        let metadata = match ctx.work.clone() {
            Work::Part { index, count } => {
                // The merge clusters, draws and searches the other SAE: a part needs neither
                // the labels nor that SAE.
                let part = search_part(&sae_path, &config, ctx, index, count)?;
                serde_json::to_value(&part).map_err(StageError::other)?
            }
            work => {
                let labels_path = ctx.optional_artifact(port_names::LABELS)?.map(|a| a.path);
                let other_path = ctx
                    .optional_artifact(port_names::OTHER_SAE)?
                    .map(|a| a.path);
                let paths = Paths {
                    sae: &sae_path,
                    labels: labels_path.as_deref(),
                    other: other_path.as_deref(),
                };
                let summary = match work {
                    Work::Merge { parts } => merge(&paths, &parts, &config, ctx)?,
                    _ => cluster(paths.sae, paths.labels, paths.other, &config, ctx)?,
                };
                serde_json::to_value(&summary).map_err(StageError::other)?
            }
        };
        let dir = ctx.stage_dir.clone();
        ctx.emit_artifact(
            port_names::CLUSTERS,
            Artifact::new(ArtifactKind::CLUSTERS, dir).with_metadata(metadata),
        )
    }
}

register_stage!(Cluster);

fn load_directions(path: &Path) -> Result<Directions, ClusterError> {
    let sae = monoscope_sae::load_sae(path)?;
    Directions::from_sae(&sae, &path.display().to_string())
}

/// The stage's inputs.
struct Paths<'a> {
    sae: &'a Path,
    labels: Option<&'a Path>,
    other: Option<&'a Path>,
}

/// The search settings of `config`, with `seed` for the index.
fn search_options(config: &ClusterStageConfig, seed: u64) -> SearchOptions {
    SearchOptions {
        method: config.method,
        exact_max: config.exact_max,
        block: config.block,
        ivf: IvfParams {
            nlist: config.nlist,
            ..IvfParams::new(config.nprobe, seed)
        },
        recall_queries: config.recall_queries,
    }
}

/// Each labelled feature's label.
type Labels = std::collections::BTreeMap<u32, String>;

/// The labels of `labels_path` (none without one), for an SAE of `d_sae` features.
fn load_labels(labels_path: Option<&Path>, d_sae: usize) -> Result<Labels, StageError> {
    Ok(match labels_path {
        Some(path) => LabelOutputs::new(path)
            .labels_by_feature(d_sae)?
            .into_iter()
            .map(|(feature, record)| (feature, record.label))
            .collect(),
        None => Default::default(),
    })
}

/// Neighbours kept per feature for the files and the graph.
fn list_len(config: &ClusterStageConfig) -> usize {
    config.k.max(config.graph_k)
}

/// Sets the progress bar at `done` queries, or stops the search if the stage is cancelled.
fn progress_of(
    ctx: &StageContext<'_>,
) -> impl Fn(usize) -> Result<(), ClusterError> + Sync + use<> {
    let (progress, cancel) = (ctx.progress.clone(), ctx.cancel.clone());
    move |done: usize| {
        if cancel.is_cancelled() {
            return Err(ClusterError::Cancelled);
        }
        progress.set_position(done as u64);
        Ok(())
    }
}

/// Does the stage's work into `ctx.stage_dir`; returns the summary it also writes.
pub fn cluster(
    sae_path: &Path,
    labels_path: Option<&Path>,
    other_path: Option<&Path>,
    config: &ClusterStageConfig,
    ctx: &mut StageContext<'_>,
) -> Result<ClusterSummary, StageError> {
    let seed = config.seed.unwrap_or(ctx.seed);
    let directions = load_directions(sae_path)?;
    let n = directions.len();
    let labels = load_labels(labels_path, n)?;
    let options = search_options(config, seed);
    ctx.progress.set_length(n as u64);
    ctx.progress
        .set_message(format!("neighbours of {n} features"));
    let (lists, search) = find_neighbours(
        &directions,
        &directions,
        list_len(config),
        true,
        &options,
        &progress_of(ctx),
    )?;
    let paths = Paths {
        sae: sae_path,
        labels: labels_path,
        other: other_path,
    };
    finish(&paths, &directions, labels, lists, search, config, ctx)
}

/// Part `index` of `count` (`parts = N`): the full neighbour lists of its share of the
/// features, searched among all of them, into `ctx.stage_dir` (the part's directory).
fn search_part(
    sae_path: &Path,
    config: &ClusterStageConfig,
    ctx: &mut StageContext<'_>,
    index: usize,
    count: usize,
) -> Result<ClusterPartSummary, StageError> {
    let seed = config.seed.unwrap_or(ctx.seed);
    let directions = load_directions(sae_path)?;
    let n = directions.len();
    let share = Work::share(index, count, n);
    let options = search_options(config, seed);
    ctx.progress.set_length(share.len() as u64);
    ctx.progress.set_message(format!(
        "neighbours of features {}..{} of {n}",
        share.start, share.end
    ));
    let (lists, search) = find_neighbours_of(
        &directions,
        share.clone(),
        &directions,
        list_len(config),
        true,
        &options,
        &progress_of(ctx),
    )?;
    let outputs = ClusterOutputs::new(ctx.stage_dir.clone());
    outputs.write_part_neighbours(share.start, &lists)?;
    let summary = ClusterPartSummary {
        first: share.start,
        end: share.end,
        features: n,
        list_len: list_len(config),
        neighbours: serde_json::to_value(&search).map_err(StageError::other)?,
    };
    outputs.write_part_summary(&summary)?;
    ctx.progress.finish();
    Ok(summary)
}

/// Joins the parts' lists (announced on `clusters`, in part order) into the whole run's, and
/// does the rest as a run in one piece: `neighbours.jsonl`, clusters, map, pictures,
/// cross-SAE neighbours, summary. The recall of an approximate search is measured here, on
/// the joined lists, with the queries a run in one piece samples: the figure is that of the
/// lists written. The search's times in the summary are the parts' added up.
fn merge(
    paths: &Paths<'_>,
    parts: &[Vec<(String, Artifact)>],
    config: &ClusterStageConfig,
    ctx: &mut StageContext<'_>,
) -> Result<ClusterSummary, StageError> {
    let seed = config.seed.unwrap_or(ctx.seed);
    let directions = load_directions(paths.sae)?;
    let n = directions.len();
    let labels = load_labels(paths.labels, n)?;
    let artifacts = Work::part_artifacts(parts, port_names::CLUSTERS)?;
    ctx.progress.set_message(format!(
        "joining the neighbours of {} parts",
        artifacts.len()
    ));
    let mut lists = Vec::with_capacity(n);
    let mut reports = Vec::with_capacity(artifacts.len());
    for (i, artifact) in artifacts.iter().enumerate() {
        let part = ClusterOutputs::new(artifact.path.clone());
        let invalid = |message: String| {
            StageError::from(ClusterError::Invalid(format!(
                "{} (part {i} of {}): {message}",
                artifact.path.display(),
                artifacts.len()
            )))
        };
        let summary = part
            .part_summary()?
            .ok_or_else(|| invalid("no part summary: this part did not finish".into()))?;
        let expected = Work::share(i, artifacts.len(), n);
        if summary.features != n
            || (summary.first..summary.end) != expected
            || summary.list_len != list_len(config)
        {
            return Err(invalid(format!(
                "searched features {}..{} of {} with {} neighbours each, expected {}..{} of {n} \
                 with {}",
                summary.first,
                summary.end,
                summary.features,
                summary.list_len,
                expected.start,
                expected.end,
                list_len(config)
            )));
        }
        lists.extend(part.part_neighbours(summary.first, summary.end)?);
        reports.push(
            serde_json::from_value::<SearchReport>(summary.neighbours)
                .map_err(|e| invalid(format!("its search report: {e}")))?,
        );
        ctx.cancel.check()?;
    }
    let mut search = SearchReport::join(&reports)?;
    let options = search_options(config, seed);
    if search.index.is_some() && options.recall_queries > 0 {
        ctx.progress
            .set_message("measuring the recall of the search");
    }
    measure_recall(
        &mut search,
        &directions,
        &directions,
        &lists,
        true,
        &options,
    )?;
    finish(paths, &directions, labels, lists, search, config, ctx)
}

/// What follows the search, the same for a run in one piece and a merge of parts:
/// `neighbours.jsonl` from `lists` (each `max(k, graph_k)` long, every feature's), clusters,
/// map, pictures, cross-SAE neighbours and the summary.
fn finish(
    paths: &Paths<'_>,
    directions: &Directions,
    labels: Labels,
    lists: Vec<Vec<crate::exact::Neighbour>>,
    search: SearchReport,
    config: &ClusterStageConfig,
    ctx: &mut StageContext<'_>,
) -> Result<ClusterSummary, StageError> {
    let (sae_path, labels_path, other_path) = (paths.sae, paths.labels, paths.other);
    let seed = config.seed.unwrap_or(ctx.seed);
    let outputs = ClusterOutputs::new(ctx.stage_dir.clone());
    let n = directions.len();
    let options = search_options(config, seed);
    let progress = ctx.progress.clone();
    outputs.write_neighbours(&lists, config.k, false)?;

    progress.set_message("clustering the neighbour graph");
    let started = Instant::now();
    let graph_lists: Vec<_> = lists
        .iter()
        .map(|l| l[..l.len().min(config.graph_k)].to_vec())
        .collect();
    let fuzzy = fuzzy_edges(&graph_lists);
    let clustering = louvain(&Graph::from_edges(n, &fuzzy), config.resolution, seed);
    let mut members = vec![Vec::new(); clustering.count];
    for (feature, &c) in clustering.assignment.iter().enumerate() {
        members[c as usize].push(feature as u32);
    }
    let clusters: Vec<ClusterEntry> = members
        .into_iter()
        .enumerate()
        .map(|(id, members)| ClusterEntry {
            id: id as u32,
            size: members.len() as u32,
            top_words: top_words(&members, &labels, TOP_WORDS),
            members,
        })
        .collect();
    let clusters_file = ClustersFile {
        method: "louvain".into(),
        resolution: config.resolution,
        modularity: clustering.modularity,
        assignment: clustering.assignment,
        clusters,
    };
    outputs.write_clusters(&clusters_file)?;
    let cluster_seconds = started.elapsed().as_secs_f64();
    ctx.cancel.check()?;

    progress.set_message("laying out the map");
    let started = Instant::now();
    let epochs = config
        .map_epochs
        .unwrap_or(if n <= 10_000 { 500 } else { 200 });
    let map = layout(
        n,
        &fuzzy,
        LayoutParams {
            epochs,
            min_dist: config.min_dist,
            negative_samples: config.negative_samples,
            seed,
        },
    );
    let preservation = neighbourhood_preservation(
        &graph_lists,
        &map,
        PRESERVATION_K,
        PRESERVATION_SAMPLES,
        seed,
    );
    let map_file = MapFile {
        method: format!(
            "umap-style (own), {epochs} epochs, min_dist {}",
            config.min_dist
        ),
        x: map.x,
        y: map.y,
        neighbourhood_preservation: preservation,
    };
    outputs.write_map(&map_file)?;
    let map_seconds = started.elapsed().as_secs_f64();
    ctx.cancel.check()?;

    let picture = MapPicture {
        x: &map_file.x,
        y: &map_file.y,
        cluster: &clusters_file.assignment,
        alive: directions.alive_mask(),
    };
    let png = outputs.map_png_path();
    atomic::write_with(&png, |out| picture.write_png(config.picture_size, out))
        .map_err(|e| StageError::io(&png, e))?;
    let svg_written = n <= config.svg_max_points;
    if svg_written {
        let legend: Vec<String> = clusters_file
            .clusters
            .iter()
            .take(LEGEND_CLUSTERS)
            .map(|c| format!("{} ({} features) {}", c.id, c.size, c.top_words.join(", ")))
            .collect();
        let svg = outputs.map_svg_path();
        atomic::write_with(&svg, |out| {
            picture.write_svg(config.picture_size, &legend, out)
        })
        .map_err(|e| StageError::io(&svg, e))?;
    }

    let cross = match other_path {
        Some(path) => {
            progress.set_message("neighbours in the other SAE");
            let other = load_directions(path)?;
            progress.set_length(n as u64);
            progress.set_position(0);
            let (cross_lists, report) = find_neighbours(
                directions,
                &other,
                config.k,
                false,
                &options,
                &progress_of(ctx),
            )?;
            outputs.write_neighbours(&cross_lists, config.k, true)?;
            Some(serde_json::json!({
                "other_sae": path.display().to_string(),
                "other_features": other.len(),
                "search": report,
            }))
        }
        None => None,
    };

    let summary = ClusterSummary {
        sae: sae_path.display().to_string(),
        features: n,
        dim: directions.dim(),
        dead_features: directions.dead_count(),
        labels: labels_path.map(|p| p.display().to_string()),
        labelled_features: labels.len(),
        k: config.k,
        neighbours: serde_json::to_value(&search).map_err(StageError::other)?,
        graph_k: config.graph_k,
        clusters: ClusteringSummary {
            method: clusters_file.method.clone(),
            count: clusters_file.clusters.len(),
            largest: clusters_file.clusters.first().map_or(0, |c| c.size),
            modularity: clusters_file.modularity,
            resolution: config.resolution,
            seconds: cluster_seconds,
        },
        map: MapSummary {
            method: map_file.method.clone(),
            neighbourhood_preservation: preservation,
            preservation_k: PRESERVATION_K,
            seconds: map_seconds,
            svg: svg_written,
        },
        cross: cross.unwrap_or(serde_json::Value::Null),
    };
    outputs.write_summary(&summary)?;
    tracing::info!(
        stage = ctx.stage_id,
        "{} clusters (modularity {:.3}), map preservation {:.3}, neighbours by {} search",
        clusters_file.clusters.len(),
        clusters_file.modularity,
        preservation,
        search.method
    );
    Ok(summary)
}
