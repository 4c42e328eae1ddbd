//! What a training run reports every `metrics_every` steps: one JSON line per report.

use serde::{Deserialize, Serialize};

/// Averages over the steps since the previous report (the "window"), except the state-like
/// fields (`step`, `tokens`, `lr`, `sparsity_coeff`, `dead_fraction`, thresholds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Steps completed.
    pub step: u64,
    /// Tokens (rows) trained on.
    pub tokens: u64,
    /// Learning rate of the last step.
    pub lr: f32,
    /// Sparsity coefficient (λ) of the last step; 0 for TopK/BatchTopK.
    pub sparsity_coeff: f32,
    /// Total loss the optimiser minimised.
    pub loss: f64,
    /// `(1/B)·Σ‖x − x̂‖²` on normalised input.
    pub mse_loss: f64,
    /// L1 (ReLU) or L0 (JumpReLU) penalty term.
    pub sparsity_loss: f64,
    /// AuxK term.
    pub aux_loss: f64,
    /// Mean squared error per element, normalised input.
    pub mse: f64,
    /// Fraction of variance unexplained: `Σ‖x − x̂‖² / Σ‖x − x̄‖²` (x̄ per batch).
    pub fvu: f64,
    /// The FVU without the massive rows (above `massive_norm`), when there is a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fvu_without_massive: Option<f64>,
    /// Massive rows seen in the window (trained on unless `exclude_massive`).
    #[serde(default)]
    pub massive_rows: u64,
    /// Mean number of active latents per token.
    pub l0: f64,
    /// Latents that have not fired for `dead_after_tokens` tokens.
    pub dead_fraction: f64,
    /// Latents that fired on more than `dense_threshold` of the window's tokens.
    pub dense_fraction: f64,
    /// Global gradient norm before clipping, averaged over the window.
    pub grad_norm: f64,
    /// BatchTopK's running threshold (on normalised input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batchtopk_threshold: Option<f64>,
}

impl StepMetrics {
    /// One JSON line (the stage appends it to its `metrics.jsonl`).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("metrics are plain numbers")
    }
}
