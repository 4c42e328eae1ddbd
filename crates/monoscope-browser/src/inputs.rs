//! The files of a run that the site shows, found by the stage that wrote them.
//!
//! Only the SAE is required. Every other file is optional and read as JSON values rather than
//! fixed structs, so that a field added by a newer stage shows up in the site without a change
//! here; the few fields the site computes with are looked up by name.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{BrowserError, Result};

/// Where a run's files are. Paths are directories as the stages emit them.
#[derive(Debug, Clone, Default)]
pub struct RunFiles {
    /// The SAE directory (SAELens layout); the train stage puts `eval.json` beside it.
    pub sae_dir: PathBuf,
    /// The autointerp-label stage directory (`evidence.jsonl`, `labels.jsonl`, `summary.json`).
    pub labels_dir: Option<PathBuf>,
    /// The cluster stage directory (`neighbours.jsonl`, `clusters.json`, `map.json`).
    pub clusters_dir: Option<PathBuf>,
    /// The steer stage directory (`report.json`).
    pub steering_dir: Option<PathBuf>,
}

impl RunFiles {
    /// Finds each stage's directory among the subdirectories of a run directory by the files
    /// it holds, for runs whose stages were named freely.
    pub fn discover(run_dir: &Path) -> Result<RunFiles> {
        let entries = std::fs::read_dir(run_dir).map_err(|e| BrowserError::io(run_dir, e))?;
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        let find = |file: &str| dirs.iter().find(|d| d.join(file).is_file()).cloned();
        let sae_dir = find("sae/cfg.json").map(|d| d.join("sae")).ok_or_else(|| {
            BrowserError::Invalid(format!(
                "{}: no stage directory with `sae/cfg.json` (a train stage's output)",
                run_dir.display()
            ))
        })?;
        Ok(RunFiles {
            sae_dir,
            labels_dir: find("labels.jsonl").or_else(|| find("evidence.jsonl")),
            clusters_dir: find("clusters.json"),
            steering_dir: find("report.json"),
        })
    }

    pub fn sae_config(&self) -> Result<Value> {
        read_json(&self.sae_dir.join("cfg.json"))
    }

    /// The train stage's `eval.json`, when the SAE was trained by a monoscope run.
    pub fn eval(&self) -> Result<Option<Value>> {
        match self.sae_dir.parent() {
            Some(parent) => read_optional_json(&parent.join("eval.json")),
            None => Ok(None),
        }
    }

    pub fn evidence_path(&self) -> Option<PathBuf> {
        existing(self.labels_dir.as_ref()?.join("evidence.jsonl"))
    }

    pub fn labels_path(&self) -> Option<PathBuf> {
        existing(self.labels_dir.as_ref()?.join("labels.jsonl"))
    }

    pub fn label_summary(&self) -> Result<Option<Value>> {
        match &self.labels_dir {
            Some(dir) => read_optional_json(&dir.join("summary.json")),
            None => Ok(None),
        }
    }

    pub fn neighbours_path(&self) -> Option<PathBuf> {
        existing(self.clusters_dir.as_ref()?.join("neighbours.jsonl"))
    }

    pub fn clusters(&self) -> Result<Option<Value>> {
        match &self.clusters_dir {
            Some(dir) => read_optional_json(&dir.join("clusters.json")),
            None => Ok(None),
        }
    }

    pub fn map(&self) -> Result<Option<Value>> {
        match &self.clusters_dir {
            Some(dir) => read_optional_json(&dir.join("map.json")),
            None => Ok(None),
        }
    }

    pub fn steering_report(&self) -> Result<Option<Value>> {
        match &self.steering_dir {
            Some(dir) => read_optional_json(&dir.join("report.json")),
            None => Ok(None),
        }
    }
}

fn existing(path: PathBuf) -> Option<PathBuf> {
    path.is_file().then_some(path)
}

pub fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| BrowserError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| BrowserError::Parse {
        path: path.to_path_buf(),
        line: e.line(),
        message: e.to_string(),
    })
}

fn read_optional_json(path: &Path) -> Result<Option<Value>> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// Calls `each` with every non-empty line of a JSON-lines file, parsed, in order.
pub fn for_each_json_line(path: &Path, mut each: impl FnMut(Value) -> Result<()>) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| BrowserError::io(path, e))?;
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| BrowserError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(&line).map_err(|e| BrowserError::Parse {
            path: path.to_path_buf(),
            line: index + 1,
            message: e.to_string(),
        })?;
        each(value)?;
    }
    Ok(())
}

/// The `feature` field of a per-feature record, checked against the dictionary size.
pub fn feature_id(record: &Value, d_sae: usize, path: &Path) -> Result<usize> {
    let id = record
        .get("feature")
        .and_then(Value::as_u64)
        .ok_or_else(|| {
            BrowserError::Invalid(format!("{}: a record without `feature`", path.display()))
        })?;
    let id = id as usize;
    if id >= d_sae {
        return Err(BrowserError::Invalid(format!(
            "{}: feature = {id} but the SAE has d_sae = {d_sae}",
            path.display()
        )));
    }
    Ok(id)
}
