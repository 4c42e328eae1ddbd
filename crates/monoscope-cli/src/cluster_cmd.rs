//! `monoscope neighbours <run> --feature N`: a feature's nearest features by decoder cosine
//! similarity, with their labels and clusters, from the cluster stage's files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use monoscope_cluster::labels::read_labels;
use monoscope_cluster::output::{
    CLUSTERS_FILE, CROSS_NEIGHBOURS_FILE, ClustersFile, NEIGHBOURS_FILE, SUMMARY_FILE,
    read_clusters, read_neighbours_of,
};

#[derive(Debug, clap::Args)]
pub struct NeighboursArgs {
    /// A run directory, or a cluster stage directory.
    pub run: PathBuf,
    /// The feature whose neighbours to show.
    #[arg(long)]
    pub feature: u32,
}

pub fn neighbours(args: NeighboursArgs) -> anyhow::Result<ExitCode> {
    let dir = cluster_dir(&args.run)?;
    let neighbours = read_neighbours_of(&dir.join(NEIGHBOURS_FILE), args.feature)?;
    let labels = find_labels(&dir)?;
    let clusters = match dir.join(CLUSTERS_FILE) {
        path if path.exists() => Some(read_clusters(&path)?),
        _ => None,
    };
    let label = |f: u32| labels.get(&f).map(String::as_str).unwrap_or("");
    let cluster = |f: u32| {
        clusters
            .as_ref()
            .and_then(|c| c.assignment.get(f as usize))
            .map_or_else(|| "-".to_string(), u32::to_string)
    };

    println!("feature {}  {}", args.feature, label(args.feature));
    if let Some(c) = clusters
        .as_ref()
        .and_then(|c| cluster_line(c, args.feature))
    {
        println!("{c}");
    }
    if neighbours.is_empty() {
        println!("no neighbours: the feature is dead (its decoder direction is zero)");
    } else {
        print_table(&neighbours, &label, &cluster);
    }
    let cross = dir.join(CROSS_NEIGHBOURS_FILE);
    if cross.exists() {
        println!("\nnearest features of the other SAE:");
        let other = read_neighbours_of(&cross, args.feature)?;
        print_table(&other, &|_| "", &|_| "-".to_string());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table<'a>(
    neighbours: &[monoscope_cluster::Neighbour],
    label: &dyn Fn(u32) -> &'a str,
    cluster: &dyn Fn(u32) -> String,
) {
    println!(
        "{:>4} {:>8} {:>8} {:>8}  label",
        "rank", "feature", "cosine", "cluster"
    );
    for (rank, n) in neighbours.iter().enumerate() {
        println!(
            "{:>4} {:>8} {:>8.4} {:>8}  {}",
            rank + 1,
            n.feature,
            n.cosine,
            cluster(n.feature),
            label(n.feature)
        );
    }
}

fn cluster_line(clusters: &ClustersFile, feature: u32) -> Option<String> {
    let id = *clusters.assignment.get(feature as usize)?;
    let c = clusters.clusters.get(id as usize)?;
    let words = match c.top_words.is_empty() {
        true => String::new(),
        false => format!(": {}", c.top_words.join(", ")),
    };
    Some(format!("cluster {id} ({} features){words}", c.size))
}

/// The cluster stage directory: `path` itself, or the one stage directory of a run that holds
/// `neighbours.jsonl`.
fn cluster_dir(path: &Path) -> anyhow::Result<PathBuf> {
    if path.join(NEIGHBOURS_FILE).exists() {
        return Ok(path.to_path_buf());
    }
    let entries =
        std::fs::read_dir(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(NEIGHBOURS_FILE).exists())
        .collect();
    found.sort();
    match found.as_slice() {
        [] => bail!(
            "{}: no cluster stage output here (no {NEIGHBOURS_FILE} in it or in its stage \
             directories); run a pipeline with a `cluster` stage first",
            path.display()
        ),
        [one] => Ok(one.clone()),
        many => bail!(
            "{}: several cluster stages ({}); pass one of their directories",
            path.display(),
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Labels for the features: those the cluster stage was given (named in its summary), else a
/// `labels.jsonl` in a sibling stage directory; none if there is neither.
fn find_labels(dir: &Path) -> anyhow::Result<BTreeMap<u32, String>> {
    let summary_path = dir.join(SUMMARY_FILE);
    if let Ok(bytes) = std::fs::read(&summary_path) {
        let summary: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not JSON", summary_path.display()))?;
        if let Some(path) = summary["labels"].as_str() {
            let path = Path::new(path);
            if path.exists() {
                return Ok(read_labels(path)?);
            }
        }
    }
    let Some(run) = dir.parent() else {
        return Ok(BTreeMap::new());
    };
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(run)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path().join("labels.jsonl")))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    match candidates.first() {
        Some(path) => Ok(read_labels(path)?),
        None => Ok(BTreeMap::new()),
    }
}
