//! The files of an autointerp-label stage directory, as Rust types.
//!
//! - `evidence.jsonl`: one [`FeatureEvidence`] per line, in feature order, dead features
//!   included (with empty lists).
//! - `evidence.meta.json`: [`EvidenceMeta`].
//! - `labels.jsonl`: one [`LabelRecord`] per labelled feature, in feature order.
//! - `summary.json`: [`Summary`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ArtifactError, Result};
use crate::json;

/// The stage kind whose directory has this layout.
pub const KIND: &str = "autointerp-label";
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

/// An autointerp-label stage directory.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelOutputs {
    pub dir: PathBuf,
}

impl LabelOutputs {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LabelOutputs { dir: dir.into() }
    }

    pub fn evidence_path(&self) -> PathBuf {
        self.dir.join(EVIDENCE_FILE)
    }

    pub fn evidence_meta_path(&self) -> PathBuf {
        self.dir.join(EVIDENCE_META_FILE)
    }

    pub fn labels_path(&self) -> PathBuf {
        self.dir.join(LABELS_FILE)
    }

    pub fn summary_path(&self) -> PathBuf {
        self.dir.join(SUMMARY_FILE)
    }

    pub fn has_evidence(&self) -> bool {
        self.evidence_path().is_file()
    }

    pub fn has_labels(&self) -> bool {
        self.labels_path().is_file()
    }

    /// Every feature's evidence, in feature order.
    pub fn evidence(&self) -> Result<Vec<FeatureEvidence>> {
        json::read_lines(&self.evidence_path())
    }

    /// The evidence file read one feature at a time, each record checked to be below `d_sae`
    /// and after the one before it.
    pub fn evidence_reader(&self, d_sae: usize) -> Result<EvidenceReader> {
        Ok(EvidenceReader {
            lines: json::LineReader::open(&self.evidence_path())?,
            d_sae,
            next: 0,
        })
    }

    /// The evidence of one feature, without parsing the lines before it.
    pub fn evidence_of(&self, feature: u32) -> Result<Option<FeatureEvidence>> {
        let path = self.evidence_path();
        let evidence: Option<FeatureEvidence> = json::read_line_at(&path, feature as usize)?;
        match evidence {
            Some(e) if e.feature != feature => Err(ArtifactError::invalid(
                &path,
                format!(
                    "line {} holds feature {}, expected {feature} (lines must be in feature order)",
                    feature + 1,
                    e.feature
                ),
            )),
            other => Ok(other),
        }
    }

    pub fn meta(&self) -> Result<EvidenceMeta> {
        json::read(&self.evidence_meta_path())
    }

    /// Every label record, in file order.
    pub fn labels(&self) -> Result<Vec<LabelRecord>> {
        json::read_lines(&self.labels_path())
    }

    /// Feature to label record, every feature checked against `d_sae` (a later line for the
    /// same feature wins).
    pub fn labels_by_feature(&self, d_sae: usize) -> Result<BTreeMap<u32, LabelRecord>> {
        let path = self.labels_path();
        let mut labels = BTreeMap::new();
        json::for_each_line(&path, |record: LabelRecord| {
            check_feature(&path, record.feature, d_sae)?;
            labels.insert(record.feature, record);
            Ok(())
        })?;
        Ok(labels)
    }

    pub fn summary(&self) -> Result<Option<Summary>> {
        json::read_optional(&self.summary_path())
    }

    pub fn write_evidence(&self, evidence: &[FeatureEvidence]) -> Result<()> {
        json::write_lines(&self.evidence_path(), evidence)
    }

    pub fn write_evidence_meta(&self, meta: &EvidenceMeta) -> Result<()> {
        json::write_pretty(&self.evidence_meta_path(), meta)
    }

    pub fn write_labels(&self, labels: &[LabelRecord]) -> Result<()> {
        let point = crate::fault::FaultPoint::LabelsWrite;
        json::write_lines_past(&self.labels_path(), labels, Some(point))
    }

    pub fn write_summary(&self, summary: &Summary) -> Result<()> {
        json::write_pretty(&self.summary_path(), summary)
    }
}

/// [`LabelOutputs::evidence_reader`].
#[derive(Debug)]
pub struct EvidenceReader {
    lines: json::LineReader<FeatureEvidence>,
    d_sae: usize,
    /// The lowest feature the next record may hold.
    next: u64,
}

impl Iterator for EvidenceReader {
    type Item = Result<FeatureEvidence>;

    fn next(&mut self) -> Option<Result<FeatureEvidence>> {
        let evidence = match self.lines.next()? {
            Ok(evidence) => evidence,
            Err(e) => return Some(Err(e)),
        };
        let path = self.lines.path();
        if let Err(e) = check_feature(path, evidence.feature, self.d_sae) {
            return Some(Err(e));
        }
        if u64::from(evidence.feature) < self.next {
            return Some(Err(ArtifactError::invalid(
                path,
                format!(
                    "line {}: feature {} comes after feature {}; the file must be in feature order",
                    self.lines.line(),
                    evidence.feature,
                    self.next - 1
                ),
            )));
        }
        self.next = u64::from(evidence.feature) + 1;
        Some(Ok(evidence))
    }
}

/// An error naming `path` when `feature` is not below `d_sae`.
pub(crate) fn check_feature(path: &Path, feature: u32, d_sae: usize) -> Result<()> {
    if feature as usize >= d_sae {
        return Err(ArtifactError::invalid(
            path,
            format!("feature {feature} is out of range for an SAE with d_sae = {d_sae}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(feature: u32) -> FeatureEvidence {
        FeatureEvidence {
            feature,
            fires: 0,
            frequency: 0.0,
            max_activation: 0.0,
            mean_activation: 0.0,
            histogram: Histogram::default(),
            top: vec![],
            quantiles: vec![],
            random: vec![],
            logits: LogitEffects::default(),
        }
    }

    fn read_all(outputs: &LabelOutputs, d_sae: usize) -> Result<Vec<u32>> {
        outputs
            .evidence_reader(d_sae)?
            .map(|e| e.map(|e| e.feature))
            .collect()
    }

    #[test]
    fn the_evidence_reader_refuses_features_out_of_order_or_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let outputs = LabelOutputs::new(dir.path());
        outputs
            .write_evidence(&[evidence(0), evidence(2), evidence(3)])
            .unwrap();
        assert_eq!(read_all(&outputs, 4).unwrap(), [0, 2, 3]);
        let err = read_all(&outputs, 3).unwrap_err().to_string();
        assert!(
            err.contains("feature 3 is out of range for an SAE with d_sae = 3"),
            "{err}"
        );
        outputs.write_evidence(&[evidence(2), evidence(2)]).unwrap();
        let err = read_all(&outputs, 4).unwrap_err().to_string();
        assert!(
            err.contains(
                "line 2: feature 2 comes after feature 2; the file must be in feature order"
            ),
            "{err}"
        );
    }
}
