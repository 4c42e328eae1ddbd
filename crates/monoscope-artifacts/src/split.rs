//! The files of a split stage directory: feature splitting across a family of SAEs of growing
//! size trained on the same batches (a train stage's main SAE and its sweep members).
//!
//! - `split.json`: [`SplitFile`]: the family, smallest first; for each member after the
//!   first, each feature's parent in the next smaller member, matched by decoder cosine and by
//!   co-activation on the same tokens; each feature's family (its ancestor in the smallest
//!   member); and each feature's top tokens, so that a tree can be read without labels.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::json;

/// The stage kind whose directory has this layout.
pub const KIND: &str = "split";
pub const SPLIT_FILE: &str = "split.json";

/// A split stage directory.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitOutputs {
    pub dir: PathBuf,
}

impl SplitOutputs {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SplitOutputs { dir: dir.into() }
    }

    pub fn split_path(&self) -> PathBuf {
        self.dir.join(SPLIT_FILE)
    }

    pub fn split(&self) -> Result<Option<SplitFile>> {
        json::read_optional(&self.split_path())
    }

    /// Writes `split.json` atomically.
    pub fn write_split(&self, split: &SplitFile) -> Result<()> {
        json::write_compact(&self.split_path(), split)
    }

    pub fn exists(dir: &Path) -> bool {
        dir.join(SPLIT_FILE).is_file()
    }
}

/// `split.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitFile {
    /// The family, smallest dictionary first.
    pub members: Vec<FamilyMember>,
    /// How parents were chosen, in words (shown by the CLI and the browser).
    pub criterion: String,
    /// Activation rows (tokens) the co-activations were counted on.
    pub tokens: u64,
    /// `levels[i]` links member `i + 1`'s features to member `i`'s.
    pub levels: Vec<SplitLevel>,
}

/// One SAE of the family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyMember {
    /// `main` for the train stage's own SAE, else the sweep member's name.
    pub name: String,
    pub d_sae: usize,
    /// The SAE directory.
    pub sae_dir: String,
    /// Whether this is the SAE the run's label, cluster and steer stages used.
    pub main: bool,
    /// For each feature, its ancestor in the smallest member (its family); for the smallest
    /// member, the feature itself. `None` for a feature that never fired.
    pub family: Vec<Option<u32>>,
    /// For each feature, how many of the counted tokens it fired on.
    pub firings: Vec<u64>,
    /// For each feature, the tokens on which it fires most (decoded, at most a few).
    pub top_tokens: Vec<Vec<String>>,
}

/// The links from one member's features (the children) to the next smaller member's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitLevel {
    /// Index into `members` of the smaller SAE.
    pub parent_member: usize,
    /// Index into `members` of the larger SAE.
    pub child_member: usize,
    /// For each child feature, its parent (`None` when the child never fired and no decoder
    /// direction is close enough).
    pub parent: Vec<Option<u32>>,
    /// For each child feature, the smaller SAE's feature with the most similar decoder
    /// direction, and that cosine.
    pub parent_by_cosine: Vec<u32>,
    pub cosine: Vec<f32>,
    /// For each child feature, the smaller SAE's feature that fires most often on the tokens
    /// where the child fires, and the fraction of the child's firings it fires on (0 when the
    /// child never fired).
    pub parent_by_coactivation: Vec<Option<u32>>,
    pub coactivation: Vec<f32>,
}

impl SplitFile {
    /// The children of `feature` of member `member` in member `member + 1`.
    pub fn children(&self, member: usize, feature: u32) -> Vec<u32> {
        self.levels
            .iter()
            .find(|l| l.parent_member == member)
            .map(|level| {
                level
                    .parent
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| **p == Some(feature))
                    .map(|(child, _)| child as u32)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The parent of `feature` of member `member` in member `member - 1`.
    pub fn parent(&self, member: usize, feature: u32) -> Option<u32> {
        let level = self.levels.iter().find(|l| l.child_member == member)?;
        *level.parent.get(feature as usize)?
    }
}
