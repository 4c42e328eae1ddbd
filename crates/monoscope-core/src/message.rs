use std::collections::BTreeMap;
use std::sync::Arc;

pub use monoscope_artifacts::Artifact;

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
