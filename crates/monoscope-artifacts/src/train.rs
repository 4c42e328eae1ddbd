//! The outputs of a stage that yields an SAE (`train`, `import-sae`): its directory holds
//!
//! - `sae/`: the SAE in the SAELens layout (its files are `monoscope-sae`'s format);
//! - `eval.json`: [`EvalReport`], held-out metrics;
//! - `metrics.jsonl`: one [`StepMetrics`] per report during training;
//! - `checkpoint/`: while training, what a rerun resumes from (removed once the SAE is saved);
//! - with a sweep, `sweep/<name>/` holding the same files for each member, and `sweep.json`
//!   comparing them all.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ArtifactError, Result};
use crate::json;

/// The stage kinds whose directory has this layout.
pub const KINDS: &[&str] = &["train", "import-sae"];
pub const SAE_DIR: &str = "sae";
pub const EVAL_FILE: &str = "eval.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CHECKPOINT_DIR: &str = "checkpoint";
pub const SWEEP_DIR: &str = "sweep";
pub const SWEEP_FILE: &str = "sweep.json";
/// With `hooks = [...]`: the folder holding one directory per hook, each laid out as a
/// stage directory of one hook.
pub const HOOKS_DIR: &str = "hooks";

/// The part of a `sweep.json` entry that names the SAE (each entry also has its settings and
/// held-out metrics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepEntry {
    pub name: String,
}

/// A directory laid out as above: a train stage's, or one sweep member's.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutputs {
    pub dir: PathBuf,
}

impl TrainOutputs {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        TrainOutputs { dir: dir.into() }
    }

    /// The outputs around an SAE directory as the stage emits it (`<dir>/sae`).
    pub fn around_sae(sae_dir: &Path) -> Option<Self> {
        let dir = sae_dir.parent()?;
        (sae_dir.file_name()? == SAE_DIR).then(|| TrainOutputs::new(dir))
    }

    /// The sweep member `name`'s outputs.
    pub fn member(&self, name: &str) -> TrainOutputs {
        TrainOutputs::new(self.dir.join(SWEEP_DIR).join(name))
    }

    pub fn sae_dir(&self) -> PathBuf {
        self.dir.join(SAE_DIR)
    }

    pub fn eval_path(&self) -> PathBuf {
        self.dir.join(EVAL_FILE)
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.dir.join(METRICS_FILE)
    }

    pub fn checkpoint_dir(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_DIR)
    }

    pub fn sweep_path(&self) -> PathBuf {
        self.dir.join(SWEEP_FILE)
    }

    /// `eval.json`, when the stage wrote one (an imported SAE without a store has none).
    pub fn eval(&self) -> Result<Option<EvalReport>> {
        json::read_optional(&self.eval_path())
    }

    pub fn write_eval(&self, report: &EvalReport) -> Result<()> {
        json::write_pretty(&self.eval_path(), report)
    }

    pub fn metrics(&self) -> Result<Vec<StepMetrics>> {
        json::read_lines(&self.metrics_path())
    }

    /// The names of the SAEs `sweep.json` compares (`main` first).
    pub fn sweep_names(&self) -> Result<Vec<String>> {
        let table: Vec<SweepEntry> = json::read(&self.sweep_path())?;
        Ok(table.into_iter().map(|entry| entry.name).collect())
    }

    pub fn write_sweep(&self, table: &[serde_json::Value]) -> Result<()> {
        json::write_pretty(&self.sweep_path(), &table)
    }
}

/// Histogram of log10 firing frequency over features that fired at least once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DensityHistogram {
    /// `bins + 1` edges in log10(frequency), from `LOG10_MIN` to 0.
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
    /// Features that never fired (log10 0 = −∞; not in any bin).
    pub never_fired: u64,
}

/// What `eval.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub tokens: u64,
    pub d_in: usize,
    pub d_sae: usize,
    /// Mean active features per token.
    pub l0: f64,
    /// Mean squared error per element, raw activations.
    pub mse: f64,
    /// `Σ‖x − x̂‖² / Σ‖x − x̄‖²`, x̄ the mean over all evaluated rows.
    pub fvu: f64,
    pub explained_variance: f64,
    /// Features that never fired on the evaluated rows.
    pub dead_fraction: f64,
    /// Features firing on more than `dense_threshold` of the tokens.
    pub dense_fraction: f64,
    pub dense_threshold: f64,
    pub density_histogram: DensityHistogram,
    /// Per feature: fraction of tokens on which it fired.
    pub feature_frequency: Vec<f64>,
    /// Per feature: largest activation seen (0 if it never fired). Steering clamps to
    /// multiples of it.
    pub feature_max_activation: Vec<f32>,
    /// The same metrics without the massive rows, and how many there were (when the caller
    /// gave a threshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub massive: Option<MassiveRows>,
    /// Filled through a the train stage's splice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splice: Option<SpliceReport>,
    /// Why `splice` is absent (no model available, disabled), when a caller says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splice_skipped: Option<String>,
}

/// The rows above a norm threshold (massive activations, see `monoscope_sae::norm`) and the
/// metrics of the other rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MassiveRows {
    /// Raw norm above which a row is massive.
    pub norm_threshold: f32,
    pub rows: u64,
    pub row_fraction: f64,
    /// Their share of `Σ‖x‖²` over the evaluated rows.
    pub sq_norm_fraction: f64,
    /// Their share of the squared error `Σ‖x − x̂‖²`.
    pub sq_err_fraction: f64,
    /// FVU, MSE and L0 over the other rows (x̄ their mean).
    pub fvu_without: f64,
    pub mse_without: f64,
    pub l0_without: f64,
}

/// CE and KL with the SAE spliced into the model at its hook (SAELens's definitions).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpliceReport {
    pub ce_loss_clean: f64,
    pub ce_loss_with_sae: f64,
    pub ce_loss_zero_ablation: f64,
    /// `(CE_zero − CE_sae) / (CE_zero − CE_clean)`.
    pub ce_loss_score: f64,
    /// Mean KL(clean ‖ spliced) per token.
    pub kl_div_with_sae: f64,
    /// Next-token predictions the means are over (0 when the caller did not say).
    #[serde(default)]
    pub tokens: u64,
    /// With a massive-row threshold: spliced positions whose activation is above it, and the
    /// CE loss and score with those positions left clean (the SAE spliced everywhere else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub massive: Option<SpliceWithoutMassive>,
}

/// [`SpliceReport::massive`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpliceWithoutMassive {
    pub norm_threshold: f32,
    pub positions: u64,
    pub ce_loss_with_sae: f64,
    pub ce_loss_score: f64,
}

impl SpliceReport {
    /// Builds the report, computing `ce_loss_score` from the three CE losses.
    pub fn new(clean: f64, with_sae: f64, zero_ablation: f64, kl_div_with_sae: f64) -> Self {
        SpliceReport {
            ce_loss_clean: clean,
            ce_loss_with_sae: with_sae,
            ce_loss_zero_ablation: zero_ablation,
            ce_loss_score: (zero_ablation - with_sae) / (zero_ablation - clean),
            kl_div_with_sae,
            tokens: 0,
            massive: None,
        }
    }
}

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

/// `metrics.jsonl` open for a training run to append its reports to.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    writer: BufWriter<std::fs::File>,
}

impl MetricsLog {
    /// A new log at `path`; or, when a run resumes at step `resumed_at`, the log it had, cut
    /// after the reports up to that step (an interrupted run may have logged past its last
    /// checkpoint).
    pub fn open(path: &Path, resumed_at: Option<u64>) -> Result<Self> {
        let io = ArtifactError::io(path);
        let kept: Vec<String> = match (resumed_at, std::fs::File::open(path)) {
            (None, _) => Vec::new(),
            (Some(step), Ok(file)) => std::io::BufReader::new(file)
                .lines()
                .map_while(std::result::Result::ok)
                .take_while(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s <= step)
                })
                .collect(),
            (Some(_), Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            (Some(_), Err(e)) => return Err(io(e)),
        };
        let file = std::fs::File::create(path).map_err(ArtifactError::io(path))?;
        let mut log = MetricsLog {
            path: path.to_path_buf(),
            writer: BufWriter::new(file),
        };
        for line in kept {
            writeln!(log.writer, "{line}").map_err(ArtifactError::io(path))?;
        }
        Ok(log)
    }

    pub fn append(&mut self, metrics: &StepMetrics) -> Result<()> {
        writeln!(self.writer, "{}", metrics.to_json_line()).map_err(ArtifactError::io(&self.path))
    }

    /// Puts every report appended so far on disk (before a checkpoint claims their step).
    pub fn flush(&mut self) -> Result<()> {
        self.writer.flush().map_err(ArtifactError::io(&self.path))
    }
}
