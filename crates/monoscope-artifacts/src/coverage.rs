//! The files of a coverage stage directory: completeness against frequency (which concepts of
//! a list some feature is specific to, per dictionary size, against how often each concept
//! occurs in the corpus).
//!
//! - `coverage.json`: [`CoverageFile`];
//! - `coverage.svg` and `coverage.png`: the fraction of concepts covered against corpus
//!   frequency, one line per dictionary size.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::json;

/// The stage kind whose directory has this layout.
pub const KIND: &str = "coverage";
pub const COVERAGE_FILE: &str = "coverage.json";
pub const COVERAGE_SVG_FILE: &str = "coverage.svg";
pub const COVERAGE_PNG_FILE: &str = "coverage.png";

/// A coverage stage directory.
#[derive(Debug, Clone, PartialEq)]
pub struct CoverageOutputs {
    pub dir: PathBuf,
}

impl CoverageOutputs {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CoverageOutputs { dir: dir.into() }
    }

    pub fn coverage_path(&self) -> PathBuf {
        self.dir.join(COVERAGE_FILE)
    }

    pub fn svg_path(&self) -> PathBuf {
        self.dir.join(COVERAGE_SVG_FILE)
    }

    pub fn png_path(&self) -> PathBuf {
        self.dir.join(COVERAGE_PNG_FILE)
    }

    pub fn coverage(&self) -> Result<Option<CoverageFile>> {
        json::read_optional(&self.coverage_path())
    }

    /// Writes `coverage.json` atomically.
    pub fn write_coverage(&self, coverage: &CoverageFile) -> Result<()> {
        json::write_pretty(&self.coverage_path(), coverage)
    }
}

/// `coverage.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoverageFile {
    /// When a feature counts as specific to a concept, in words, with its thresholds.
    pub criterion: String,
    /// Activation rows (tokens) scanned.
    pub tokens: u64,
    /// The dictionaries compared, smallest first: `(name, d_sae)`.
    pub members: Vec<CoverageMember>,
    pub concepts: Vec<ConceptCoverage>,
    /// The plotted curve: concepts grouped by frequency (log-spaced bins), per member.
    pub bins: Vec<FrequencyBin>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoverageMember {
    pub name: String,
    pub d_sae: usize,
}

/// One concept of the list and what covers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptCoverage {
    pub term: String,
    pub category: String,
    /// Occurrences of the term in the scanned tokens.
    pub occurrences: u64,
    /// Occurrences per million scanned tokens.
    pub frequency_per_million: f64,
    /// Per member (same order as `members`): the most specific feature, its scores, and
    /// whether it meets the criterion.
    pub best: Vec<ConceptMatch>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptMatch {
    /// `None` when no feature fired on the term's tokens.
    pub feature: Option<u32>,
    /// Fraction of the term's occurrences on which the feature fires.
    pub recall: f64,
    /// Fraction of the feature's firings that fall on the term's occurrences.
    pub precision: f64,
    pub covered: bool,
}

/// Concepts whose frequency lies in `[low, high)` per million tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrequencyBin {
    pub low: f64,
    pub high: f64,
    pub concepts: usize,
    /// Per member, the fraction of the bin's concepts covered.
    pub covered_fraction: Vec<f64>,
}
