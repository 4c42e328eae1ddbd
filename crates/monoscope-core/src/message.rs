use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ports::ArtifactKind;

/// One item on a channel between two stages.
///
/// Cloning is cheap (batches are behind an `Arc`), which is what lets one output feed several
/// consumers.
#[derive(Debug, Clone)]
pub enum Message {
    /// A batch on a `stream of activations` port.
    Activations(Arc<ActivationBatch>),
    /// A finished file or directory on an artifact port.
    Artifact(Artifact),
}

/// Residual-stream activations for a run of tokens, for one or more hook points.
///
/// Row `r` of every hook's matrix belongs to the token `token_ids[r]`, at position
/// `positions[r]` of document `doc_ids[r]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationBatch {
    pub d_model: usize,
    pub token_ids: Vec<u32>,
    pub doc_ids: Vec<u32>,
    pub positions: Vec<u32>,
    /// Hook name (e.g. `blocks.15.hook_resid_post`) to a row-major `[rows, d_model]` matrix.
    pub hooks: BTreeMap<String, Vec<f32>>,
}

impl ActivationBatch {
    pub fn rows(&self) -> usize {
        self.token_ids.len()
    }
}

/// A finished file or directory produced by a stage.
///
/// Artifacts are written atomically before they are announced, so a consumer that receives one
/// can read it at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub kind: ArtifactKind,
    pub path: PathBuf,
    /// Small facts a consumer may need without opening the files (e.g. `d_model`, `hook_name`).
    #[serde(default)]
    pub metadata: serde_json::Value,
}

impl Artifact {
    pub fn new(kind: ArtifactKind, path: impl Into<PathBuf>) -> Self {
        Artifact {
            kind,
            path: path.into(),
            metadata: serde_json::Value::Null,
        }
    }

    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }
}
