//! `monoscope neighbours <run> --feature N`: a feature's nearest features by decoder cosine
//! similarity, with their labels and clusters, from the cluster stage's files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use monoscope_artifacts::cluster::{self, ClusterOutputs, ClustersFile};
use monoscope_artifacts::label::{self, LabelOutputs};
use monoscope_artifacts::{Run, locate_stage};

#[derive(Debug, clap::Args)]
pub struct NeighboursArgs {
    /// A run directory, or a cluster stage directory.
    pub run: PathBuf,
    /// The feature whose neighbours to show.
    #[arg(long)]
    pub feature: u32,
    /// The cluster stage's id, when the run has several.
    #[arg(long)]
    pub stage: Option<String>,
}

pub fn neighbours(args: NeighboursArgs) -> anyhow::Result<ExitCode> {
    let dir = locate_stage(
        &args.run,
        &[cluster::KIND],
        args.stage.as_deref(),
        "neighbours and clusters",
    )?;
    let outputs = ClusterOutputs::new(dir);
    let neighbours = outputs.neighbours_of(args.feature, false)?;
    let labels = find_labels(&outputs)?;
    let clusters = outputs.clusters()?;
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
    if outputs.has_cross_neighbours() {
        println!("\nnearest features of the other SAE:");
        let other = outputs.neighbours_of(args.feature, true)?;
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

/// Labels for the features: those the cluster stage was given (named in its summary), else
/// those of the run's label stage; none if there are neither.
fn find_labels(outputs: &ClusterOutputs) -> anyhow::Result<BTreeMap<u32, String>> {
    let given = outputs
        .summary()?
        .and_then(|s| s.labels)
        .map(|path| LabelOutputs::new(PathBuf::from(path)))
        .filter(LabelOutputs::has_labels);
    let labels = match given {
        Some(labels) => Some(labels),
        None => match outputs.dir.parent().filter(|p| Run::is_run_dir(p)) {
            Some(run) => Run::open(run)?
                .find(&[label::KIND], None, "labels")?
                .map(|stage| LabelOutputs::new(stage.dir)),
            None => None,
        },
    };
    let Some(labels) = labels.filter(LabelOutputs::has_labels) else {
        return Ok(BTreeMap::new());
    };
    Ok(labels
        .labels()?
        .into_iter()
        .map(|record| (record.feature, record.label))
        .collect())
}
