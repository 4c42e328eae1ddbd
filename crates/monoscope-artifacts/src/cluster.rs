//! The files of a cluster stage directory:
//!
//! - `neighbours.jsonl` and (against a second SAE) `cross_neighbours.jsonl`: one
//!   [`NeighbourLine`] per feature, in feature order;
//! - `clusters.json`: [`ClustersFile`];
//! - `map.json`: [`MapFile`]; `map.png` always and `map.svg` up to a size: the map drawn;
//! - `summary.json`: [`ClusterSummary`].
//!
//! With `parts = N`, part `i` searches the neighbours of a contiguous range of the features;
//! its directory (`parts/<i>/`) holds
//!
//! - `part_neighbours.jsonl`: one [`NeighbourLine`] per feature of its range, in feature order,
//!   each with the full list the merge builds the graph from (`max(k, graph_k)` neighbours);
//! - `part_summary.json`: [`ClusterPartSummary`].

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ArtifactError, Result};
use crate::{atomic, json};

/// The stage kind whose directory has this layout.
pub const KIND: &str = "cluster";
pub const NEIGHBOURS_FILE: &str = "neighbours.jsonl";
pub const CROSS_NEIGHBOURS_FILE: &str = "cross_neighbours.jsonl";
pub const CLUSTERS_FILE: &str = "clusters.json";
pub const MAP_FILE: &str = "map.json";
pub const MAP_PNG_FILE: &str = "map.png";
pub const MAP_SVG_FILE: &str = "map.svg";
pub const SUMMARY_FILE: &str = "summary.json";
pub const PART_NEIGHBOURS_FILE: &str = "part_neighbours.jsonl";
pub const PART_SUMMARY_FILE: &str = "part_summary.json";

/// One neighbour of a feature: its index and the cosine similarity of the two decoder directions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Neighbour {
    pub feature: u32,
    pub cosine: f32,
}

/// One line of `neighbours.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeighbourLine {
    pub feature: u32,
    pub neighbours: Vec<Neighbour>,
}

/// `clusters.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClustersFile {
    pub method: String,
    pub resolution: f64,
    pub modularity: f64,
    /// The cluster of each feature.
    pub assignment: Vec<u32>,
    /// Sorted by size, largest first; `id` is the position.
    pub clusters: Vec<ClusterEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterEntry {
    pub id: u32,
    pub size: u32,
    pub members: Vec<u32>,
    /// The most common label words of the members (empty without labels).
    pub top_words: Vec<String>,
}

/// `map.json`: one point per feature, coordinates in `[0, 1]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapFile {
    pub method: String,
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub neighbourhood_preservation: f64,
}

/// `summary.json` (fields in alphabetical order, as the file lists them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSummary {
    pub clusters: ClusteringSummary,
    /// The search against a second SAE's features, when one was given (`null` otherwise).
    pub cross: serde_json::Value,
    pub dead_features: usize,
    pub dim: usize,
    pub features: usize,
    pub graph_k: usize,
    pub k: usize,
    pub labelled_features: usize,
    /// The label stage directory the top words came from.
    pub labels: Option<String>,
    pub map: MapSummary,
    /// How the neighbours were found (method, times, memory bound, recall).
    pub neighbours: serde_json::Value,
    pub sae: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusteringSummary {
    pub count: usize,
    pub largest: u32,
    pub method: String,
    pub modularity: f64,
    pub resolution: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapSummary {
    pub method: String,
    pub neighbourhood_preservation: f64,
    pub preservation_k: usize,
    pub seconds: f64,
    /// Whether `map.svg` was written.
    pub svg: bool,
}

/// `part_summary.json`: what one part of a run in parts searched, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterPartSummary {
    /// The features whose neighbours this part searched: `first..end`.
    pub first: usize,
    pub end: usize,
    /// Features of the SAE (every one is a candidate neighbour).
    pub features: usize,
    /// Neighbours per list in `part_neighbours.jsonl`.
    pub list_len: usize,
    /// How the part's neighbours were found (as `neighbours` in [`ClusterSummary`], without a
    /// recall: the merge measures that on the joined lists).
    pub neighbours: serde_json::Value,
}

/// A cluster stage directory.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterOutputs {
    pub dir: PathBuf,
}

impl ClusterOutputs {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ClusterOutputs { dir: dir.into() }
    }

    pub fn neighbours_path(&self) -> PathBuf {
        self.dir.join(NEIGHBOURS_FILE)
    }

    pub fn cross_neighbours_path(&self) -> PathBuf {
        self.dir.join(CROSS_NEIGHBOURS_FILE)
    }

    pub fn clusters_path(&self) -> PathBuf {
        self.dir.join(CLUSTERS_FILE)
    }

    pub fn map_path(&self) -> PathBuf {
        self.dir.join(MAP_FILE)
    }

    pub fn map_png_path(&self) -> PathBuf {
        self.dir.join(MAP_PNG_FILE)
    }

    pub fn map_svg_path(&self) -> PathBuf {
        self.dir.join(MAP_SVG_FILE)
    }

    pub fn summary_path(&self) -> PathBuf {
        self.dir.join(SUMMARY_FILE)
    }

    pub fn part_neighbours_path(&self) -> PathBuf {
        self.dir.join(PART_NEIGHBOURS_FILE)
    }

    pub fn part_summary_path(&self) -> PathBuf {
        self.dir.join(PART_SUMMARY_FILE)
    }

    pub fn has_neighbours(&self) -> bool {
        self.neighbours_path().is_file()
    }

    pub fn has_cross_neighbours(&self) -> bool {
        self.cross_neighbours_path().is_file()
    }

    /// Every feature's neighbours, `None` for a feature the file does not list.
    pub fn neighbours(&self, d_sae: usize) -> Result<Vec<Option<Vec<Neighbour>>>> {
        let path = self.neighbours_path();
        let mut lists = vec![None; d_sae];
        json::for_each_line(&path, |line: NeighbourLine| {
            crate::label::check_feature(&path, line.feature, d_sae)?;
            lists[line.feature as usize] = Some(line.neighbours);
            Ok(())
        })?;
        Ok(lists)
    }

    /// The neighbours of one feature (`cross`: against the second SAE).
    pub fn neighbours_of(&self, feature: u32, cross: bool) -> Result<Vec<Neighbour>> {
        let path = if cross {
            self.cross_neighbours_path()
        } else {
            self.neighbours_path()
        };
        read_neighbours_of(&path, feature)
    }

    pub fn clusters(&self) -> Result<Option<ClustersFile>> {
        json::read_optional(&self.clusters_path())
    }

    pub fn map(&self) -> Result<Option<MapFile>> {
        json::read_optional(&self.map_path())
    }

    pub fn summary(&self) -> Result<Option<ClusterSummary>> {
        json::read_optional(&self.summary_path())
    }

    /// A part's directory: its summary, `None` if the part did not finish.
    pub fn part_summary(&self) -> Result<Option<ClusterPartSummary>> {
        json::read_optional(&self.part_summary_path())
    }

    /// A part's directory: the lists of its features `first..end` (from its summary), in
    /// feature order; an error names a line for another feature or a missing one.
    pub fn part_neighbours(&self, first: usize, end: usize) -> Result<Vec<Vec<Neighbour>>> {
        let path = self.part_neighbours_path();
        let mut lists = Vec::with_capacity(end.saturating_sub(first));
        json::for_each_line(&path, |line: NeighbourLine| {
            let expected = first + lists.len();
            if line.feature as usize != expected || expected >= end {
                return Err(ArtifactError::invalid(
                    &path,
                    format!(
                        "holds feature {} where feature {expected} of this part's {first}..{end} \
                         was expected",
                        line.feature
                    ),
                ));
            }
            lists.push(line.neighbours);
            Ok(())
        })?;
        if first + lists.len() != end {
            return Err(ArtifactError::invalid(
                &path,
                format!(
                    "lists features {first}..{} of this part's {first}..{end}",
                    first + lists.len()
                ),
            ));
        }
        Ok(lists)
    }

    /// Writes one line per feature with its first `k` neighbours (`cross`: against the
    /// second SAE).
    pub fn write_neighbours(&self, lists: &[Vec<Neighbour>], k: usize, cross: bool) -> Result<()> {
        let path = if cross {
            self.cross_neighbours_path()
        } else {
            self.neighbours_path()
        };
        write_neighbour_lines(&path, 0, lists, k)
    }

    /// A part's directory: the whole lists of its features, the first being feature `first`.
    pub fn write_part_neighbours(&self, first: usize, lists: &[Vec<Neighbour>]) -> Result<()> {
        write_neighbour_lines(&self.part_neighbours_path(), first, lists, usize::MAX)
    }

    pub fn write_part_summary(&self, summary: &ClusterPartSummary) -> Result<()> {
        json::write_compact(&self.part_summary_path(), summary)
    }

    pub fn write_clusters(&self, clusters: &ClustersFile) -> Result<()> {
        json::write_compact(&self.clusters_path(), clusters)
    }

    pub fn write_map(&self, map: &MapFile) -> Result<()> {
        json::write_compact(&self.map_path(), map)
    }

    pub fn write_summary(&self, summary: &ClusterSummary) -> Result<()> {
        json::write_compact(&self.summary_path(), summary)
    }
}

/// One line per list, for features `first..`, each with its first `k` neighbours.
fn write_neighbour_lines(
    path: &Path,
    first: usize,
    lists: &[Vec<Neighbour>],
    k: usize,
) -> Result<()> {
    atomic::write_with(path, |out| {
        for (feature, list) in (first..).zip(lists) {
            let line = NeighbourLine {
                feature: feature as u32,
                neighbours: list.iter().take(k).copied().collect(),
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    })
    .map_err(ArtifactError::io(path))
}

/// The neighbours of one feature from a neighbours file, reading no further than its line.
fn read_neighbours_of(path: &Path, feature: u32) -> Result<Vec<Neighbour>> {
    match json::read_line_at::<NeighbourLine>(path, feature as usize)? {
        Some(line) if line.feature == feature => Ok(line.neighbours),
        Some(line) => Err(ArtifactError::Parse {
            path: path.to_path_buf(),
            line: feature as usize + 1,
            message: format!("holds feature {}, expected {feature}", line.feature),
        }),
        None => Err(ArtifactError::invalid(
            path,
            format!(
                "feature {feature} is out of range (the file lists {} features)",
                json::count_lines(path)?
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_lines_round_trip_and_out_of_range_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let outputs = ClusterOutputs::new(dir.path());
        let n = |feature, cosine| Neighbour { feature, cosine };
        let lists = vec![vec![n(1, 0.5), n(2, 0.25)], vec![], vec![n(0, -0.125)]];
        outputs.write_neighbours(&lists, 1, false).unwrap();
        let text = std::fs::read_to_string(outputs.neighbours_path()).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            r#"{"feature":0,"neighbours":[{"feature":1,"cosine":0.5}]}"#
        );
        assert_eq!(outputs.neighbours_of(2, false).unwrap(), lists[2]);
        assert!(outputs.neighbours_of(1, false).unwrap().is_empty());
        let err = outputs.neighbours_of(3, false).unwrap_err().to_string();
        assert!(
            err.contains("feature 3 is out of range (the file lists 3"),
            "{err}"
        );
        let all = outputs.neighbours(3).unwrap();
        assert_eq!(all[0].as_deref(), Some(&[n(1, 0.5)][..]));
        let err = outputs.neighbours(2).unwrap_err().to_string();
        assert!(
            err.contains("out of range for an SAE with d_sae = 2"),
            "{err}"
        );
    }

    #[test]
    fn a_parts_lists_round_trip_with_their_feature_numbers_checked() {
        let dir = tempfile::tempdir().unwrap();
        let part = ClusterOutputs::new(dir.path());
        let n = |feature, cosine| Neighbour { feature, cosine };
        let lists = vec![vec![n(0, 0.5), n(9, 0.25), n(1, 0.125)], vec![]];
        part.write_part_neighbours(4, &lists).unwrap();
        let text = std::fs::read_to_string(part.part_neighbours_path()).unwrap();
        assert!(
            text.starts_with(r#"{"feature":4,"neighbours":[{"feature":0,"#),
            "{text}"
        );
        assert_eq!(part.part_neighbours(4, 6).unwrap(), lists);
        let err = part.part_neighbours(3, 5).unwrap_err().to_string();
        assert!(err.contains("holds feature 4 where feature 3"), "{err}");
        let err = part.part_neighbours(4, 7).unwrap_err().to_string();
        assert!(
            err.contains("lists features 4..6 of this part's 4..7"),
            "{err}"
        );
        assert_eq!(part.part_summary().unwrap(), None);
    }
}
