//! The files of an autointerp-label stage directory, as Rust types. The browser, the cluster
//! stage and `monoscope labels show` read them through these types.
//!
//! - `evidence.jsonl`: one [`FeatureEvidence`] per line, in feature order, dead features
//!   included (with empty lists).
//! - `evidence.meta.json`: [`EvidenceMeta`].
//! - `labels.jsonl`: one [`LabelRecord`] per labelled feature, in feature order.
//! - `summary.json`: [`Summary`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::LabelError;

pub const EVIDENCE_FILE: &str = "evidence.jsonl";
pub const EVIDENCE_META_FILE: &str = "evidence.meta.json";
pub const LABELS_FILE: &str = "labels.jsonl";
pub const SUMMARY_FILE: &str = "summary.json";

/// A window of tokens around one selected store row, with the feature's activation on each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// Store row of the selected token.
    pub row: u64,
    /// Document id of the selected token (all tokens of a context share it).
    pub doc: u32,
    /// Position of the selected token in its document.
    pub position: u32,
    /// Tokens, decoded one by one for display.
    pub tokens: Vec<String>,
    /// The feature's activation on each token.
    pub activations: Vec<f32>,
    /// Index in `tokens` of the selected token.
    pub focus: u32,
}

/// Linear bins between 0 and the maximum activation; `counts[i]` counts activations in
/// `[edges[i], edges[i + 1])` (the last bin is closed). Zeros (not firing) are not counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub edges: Vec<f32>,
    pub counts: Vec<u64>,
}

/// Contexts sampled uniformly among the firing tokens whose activation is in `[low, high]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantileSamples {
    pub low: f32,
    pub high: f32,
    pub examples: Vec<Context>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogitToken {
    pub token: String,
    pub value: f32,
}

/// The decoder direction through the final norm and the unembedding: the tokens whose logits
/// it raises most (`promoted`, descending) and lowers most (`suppressed`, ascending).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogitEffects {
    pub promoted: Vec<LogitToken>,
    pub suppressed: Vec<LogitToken>,
}

/// Everything the stage found about one feature in its pass over the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureEvidence {
    pub feature: u32,
    /// Tokens on which the feature is non-zero.
    pub fires: u64,
    /// `fires` / tokens scanned.
    pub frequency: f64,
    pub max_activation: f32,
    /// Mean over the tokens where it fires.
    pub mean_activation: f32,
    pub histogram: Histogram,
    /// The highest activations, descending, at most one per window.
    pub top: Vec<Context>,
    /// Samples per activation quantile (equal numbers of firing tokens), lowest first.
    pub quantiles: Vec<QuantileSamples>,
    /// Random contexts on which the feature never fires.
    pub random: Vec<Context>,
    pub logits: LogitEffects,
}

impl FeatureEvidence {
    pub fn is_dead(&self) -> bool {
        self.fires == 0
    }
}

/// `evidence.meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceMeta {
    pub hook: String,
    pub d_sae: usize,
    /// Store rows scanned.
    pub tokens: u64,
    /// Tokens shown on each side of a selected token.
    pub window: usize,
    pub sae: String,
    pub store: String,
    /// The model whose tokenizer and unembedding were used.
    pub model: String,
}

/// Balanced accuracies in `[0, 1]` (0.5 = chance); `null` when a scorer did not run or had
/// too few examples of either class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub detection: Option<f64>,
    pub fuzzing: Option<f64>,
}

/// The statistical labeller's label of the same feature, scored by the same judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub label: String,
    pub scores: Scores,
}

/// One line of `labels.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelRecord {
    pub feature: u32,
    pub label: String,
    pub explanation: String,
    /// Which explainer wrote it (`local:<model>`, `http:<model>@<url>`, `statistical`).
    pub explainer: String,
    pub scores: Scores,
    pub baseline: Option<Baseline>,
}

/// Mean, quartiles and a histogram on `[0, 1]` of one score over the labelled features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub count: usize,
    pub mean: f64,
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
    pub histogram: Histogram,
}

/// Score distributions of one labeller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoreSummary {
    pub detection: Option<Distribution>,
    pub fuzzing: Option<Distribution>,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub features: usize,
    pub live: usize,
    pub dead: usize,
    /// Features labelled by the configured explainer (the scores below are theirs).
    pub labelled: usize,
    /// Further live features labelled by the statistical labeller (`statistical_rest`).
    #[serde(default)]
    pub statistical_rest: usize,
    /// Live features without a label, by reason.
    pub skipped: BTreeMap<String, usize>,
    /// Which explainer and settings (never an API key).
    pub explainer: String,
    pub scores: ScoreSummary,
    /// The statistical baseline's scores, when the explainer is a model.
    pub baseline_scores: Option<ScoreSummary>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Explainer requests answered from the response cache.
    pub cache_hits: u64,
    pub seconds_evidence: f64,
    pub seconds_labelling: f64,
}

/// Reads a JSON-lines file into values, naming the file and line of a bad one.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, LabelError> {
    let file = std::fs::File::open(path).map_err(LabelError::io(path))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(LabelError::io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_line(path, i + 1, &line)?);
    }
    Ok(out)
}

/// The evidence of one feature, without parsing the lines before it.
pub fn read_feature_evidence(
    path: &Path,
    feature: u32,
) -> Result<Option<FeatureEvidence>, LabelError> {
    let file = std::fs::File::open(path).map_err(LabelError::io(path))?;
    let line = BufReader::new(file).lines().nth(feature as usize);
    match line {
        None => Ok(None),
        Some(line) => {
            let line = line.map_err(LabelError::io(path))?;
            let evidence: FeatureEvidence = parse_line(path, feature as usize + 1, &line)?;
            if evidence.feature != feature {
                return Err(LabelError::Invalid(format!(
                    "{}: line {} holds feature {}, expected {feature} (lines must be in feature order)",
                    path.display(),
                    feature + 1,
                    evidence.feature
                )));
            }
            Ok(Some(evidence))
        }
    }
}

/// Reads a JSON file, naming it when it is missing or malformed.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, LabelError> {
    let text = std::fs::read(path).map_err(LabelError::io(path))?;
    serde_json::from_slice(&text).map_err(|source| LabelError::Json {
        path: path.to_path_buf(),
        line: source.line(),
        source,
    })
}

fn parse_line<T: DeserializeOwned>(path: &Path, line: usize, text: &str) -> Result<T, LabelError> {
    serde_json::from_str(text).map_err(|source| LabelError::Json {
        path: path.to_path_buf(),
        line,
        source,
    })
}

/// Writes values as JSON lines, atomically.
pub fn write_jsonl<T: Serialize>(path: &Path, values: &[T]) -> Result<(), LabelError> {
    use std::io::Write;
    monoscope_core::atomic::write_with(path, |w| {
        for value in values {
            serde_json::to_writer(&mut *w, value).map_err(std::io::Error::other)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
    .map_err(LabelError::io(path))
}

/// Writes a value as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), LabelError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| LabelError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    monoscope_core::atomic::write(path, &bytes).map_err(LabelError::io(path))
}
