//! The files the stage writes (all atomically) and the readers other tools use:
//!
//! - `neighbours.jsonl` and `cross_neighbours.jsonl`: one [`NeighbourLine`] per feature, in
//!   feature order: `{"feature":u32,"neighbours":[{"feature":u32,"cosine":f32}]}`;
//! - `clusters.json`: a [`ClustersFile`];
//! - `map.json`: a [`MapFile`].

use std::io::{BufRead, Write};
use std::path::Path;

use monoscope_core::atomic;
use serde::{Deserialize, Serialize};

use crate::error::ClusterError;
use crate::exact::Neighbour;

pub const NEIGHBOURS_FILE: &str = "neighbours.jsonl";
pub const CROSS_NEIGHBOURS_FILE: &str = "cross_neighbours.jsonl";
pub const CLUSTERS_FILE: &str = "clusters.json";
pub const MAP_FILE: &str = "map.json";
pub const SUMMARY_FILE: &str = "summary.json";

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

/// Writes one line per feature with its first `k` neighbours.
pub fn write_neighbours(
    path: &Path,
    lists: &[Vec<Neighbour>],
    k: usize,
) -> Result<(), ClusterError> {
    atomic::write_with(path, |out| {
        for (feature, list) in lists.iter().enumerate() {
            let line = NeighbourLine {
                feature: feature as u32,
                neighbours: list.iter().take(k).copied().collect(),
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    })
    .map_err(|e| ClusterError::io(path, e))
}

/// Writes a value as pretty JSON.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), ClusterError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| ClusterError::Invalid(format!("{}: cannot serialise: {e}", path.display())))?;
    atomic::write(path, &bytes).map_err(|e| ClusterError::io(path, e))
}

/// The neighbours of one feature from a `neighbours.jsonl` (or `cross_neighbours.jsonl`).
pub fn read_neighbours_of(path: &Path, feature: u32) -> Result<Vec<Neighbour>, ClusterError> {
    let file = std::fs::File::open(path).map_err(|e| ClusterError::io(path, e))?;
    let mut lines = 0usize;
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| ClusterError::io(path, e))?;
        lines += 1;
        if index != feature as usize {
            continue;
        }
        let parsed: NeighbourLine =
            serde_json::from_str(&line).map_err(|e| ClusterError::Parse {
                path: path.to_path_buf(),
                line: index + 1,
                message: e.to_string(),
            })?;
        if parsed.feature != feature {
            return Err(ClusterError::Parse {
                path: path.to_path_buf(),
                line: index + 1,
                message: format!("holds feature {}, expected {feature}", parsed.feature),
            });
        }
        return Ok(parsed.neighbours);
    }
    Err(ClusterError::Invalid(format!(
        "{}: feature {feature} is out of range (the file lists {lines} features)",
        path.display()
    )))
}

/// Reads `clusters.json`.
pub fn read_clusters(path: &Path) -> Result<ClustersFile, ClusterError> {
    let bytes = std::fs::read(path).map_err(|e| ClusterError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| ClusterError::Parse {
        path: path.to_path_buf(),
        line: e.line(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_lines_round_trip_and_out_of_range_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NEIGHBOURS_FILE);
        let lists = vec![
            vec![
                Neighbour {
                    feature: 1,
                    cosine: 0.5,
                },
                Neighbour {
                    feature: 2,
                    cosine: 0.25,
                },
            ],
            vec![],
            vec![Neighbour {
                feature: 0,
                cosine: -0.125,
            }],
        ];
        write_neighbours(&path, &lists, 1).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            r#"{"feature":0,"neighbours":[{"feature":1,"cosine":0.5}]}"#
        );
        assert_eq!(read_neighbours_of(&path, 2).unwrap(), lists[2]);
        assert!(read_neighbours_of(&path, 1).unwrap().is_empty());
        let err = read_neighbours_of(&path, 3).unwrap_err().to_string();
        assert!(
            err.contains("feature 3 is out of range (the file lists 3"),
            "{err}"
        );
    }
}
