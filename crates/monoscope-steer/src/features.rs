//! What is known about each feature (maximum activation and frequency from the train stage's
//! `eval.json`, labels from an autointerp-label stage), and choosing features by id, by a
//! search over labels, or by what fires most on a text.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use monoscope_artifacts::label::{LabelOutputs, LabelRecord};
use monoscope_artifacts::train::TrainOutputs;
use serde::{Deserialize, Serialize};

use crate::SteerError;

/// A feature as the configuration names it: `123`, `"123"`, `"label:bridge"` or
/// `"text:The Golden Gate Bridge"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum FeatureRef {
    Id(u32),
    Query(String),
}

/// A parsed [`FeatureRef`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureSpec {
    Id(u32),
    /// Case-insensitive search over labels.
    Label(String),
    /// The feature that fires most on this text.
    Text(String),
}

impl FeatureSpec {
    pub fn parse(spec: &FeatureRef) -> Result<Self, SteerError> {
        let query = match spec {
            FeatureRef::Id(id) => return Ok(FeatureSpec::Id(*id)),
            FeatureRef::Query(q) => q.trim(),
        };
        let nonempty = |rest: &str, what: &str| {
            let rest = rest.trim();
            if rest.is_empty() {
                Err(SteerError::selection(
                    query,
                    format!("empty {what} after the prefix"),
                ))
            } else {
                Ok(rest.to_string())
            }
        };
        if let Some(rest) = query.strip_prefix("label:") {
            Ok(FeatureSpec::Label(nonempty(rest, "label search")?))
        } else if let Some(rest) = query.strip_prefix("text:") {
            Ok(FeatureSpec::Text(nonempty(rest, "text")?))
        } else if let Ok(id) = query.parse::<u32>() {
            Ok(FeatureSpec::Id(id))
        } else {
            Err(SteerError::selection(
                query,
                "expected a feature id, `label:<words>` or `text:<text>`",
            ))
        }
    }
}

impl fmt::Display for FeatureSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeatureSpec::Id(id) => write!(f, "{id}"),
            FeatureSpec::Label(q) => write!(f, "label:{q}"),
            FeatureSpec::Text(t) => write!(f, "text:{t}"),
        }
    }
}

/// Per-feature facts from the files beside the SAE.
#[derive(Debug, Clone, Default)]
pub struct FeatureTable {
    /// `feature_max_activation` of `eval.json` (the SAE's units).
    pub max_activation: Option<Vec<f32>>,
    /// `feature_frequency` of `eval.json`: fraction of tokens on which the feature fires.
    pub frequency: Option<Vec<f64>>,
    /// `tokens` of `eval.json`: how many held-out tokens the frequencies are over.
    pub tokens: Option<u64>,
    pub labels: BTreeMap<u32, LabelRecord>,
    /// Where the maxima came from, for messages.
    pub eval_path: Option<PathBuf>,
    pub labels_path: Option<PathBuf>,
}

impl FeatureTable {
    /// Reads the `eval.json` of the stage that wrote the SAE (when it is a train or import
    /// stage's `sae/` and the file exists), and the labels of `labels_dir` when given.
    pub fn load(
        sae_dir: &Path,
        d_sae: usize,
        labels_dir: Option<&Path>,
    ) -> Result<Self, SteerError> {
        let mut table = FeatureTable::default();
        if let Some(outputs) = TrainOutputs::around_sae(sae_dir)
            && let Some(eval) = outputs.eval()?
        {
            let eval_path = outputs.eval_path();
            for (key, len) in [
                ("feature_max_activation", eval.feature_max_activation.len()),
                ("feature_frequency", eval.feature_frequency.len()),
            ] {
                if len != d_sae {
                    return Err(SteerError::file(
                        &eval_path,
                        format!("`{key}` has {len} values but the SAE has {d_sae} features"),
                    ));
                }
            }
            if let Some(bad) = eval
                .feature_max_activation
                .iter()
                .position(|v| !v.is_finite())
            {
                return Err(SteerError::file(
                    &eval_path,
                    format!("`feature_max_activation`[{bad}] is not a finite number"),
                ));
            }
            table.max_activation = Some(eval.feature_max_activation);
            table.frequency = Some(eval.feature_frequency);
            table.tokens = Some(eval.tokens);
            table.eval_path = Some(eval_path);
        }
        if let Some(dir) = labels_dir {
            let outputs = LabelOutputs::new(dir);
            table.labels = outputs.labels_by_feature(d_sae)?;
            table.labels_path = Some(outputs.labels_path());
        }
        Ok(table)
    }

    pub fn label(&self, feature: u32) -> Option<&str> {
        self.labels.get(&feature).map(|l| l.label.as_str())
    }

    pub fn max_activation(&self, feature: u32) -> Option<f32> {
        self.max_activation.as_ref().map(|m| m[feature as usize])
    }

    pub fn frequency(&self, feature: u32) -> Option<f64> {
        self.frequency.as_ref().map(|f| f[feature as usize])
    }

    /// Held-out tokens the feature fired on (frequency × tokens), when both are known.
    pub fn firings(&self, feature: u32) -> Option<u64> {
        Some((self.frequency(feature)? * self.tokens? as f64).round() as u64)
    }

    /// The best label match for `query`: an exact label first, then a label containing it as a
    /// whole word, then as a substring, then an explanation containing it; the lowest feature
    /// id within a tier. Returns the feature and how many features matched.
    pub fn search_labels(&self, query: &str) -> Result<(u32, usize), SteerError> {
        let spec = format!("label:{query}");
        if self.labels_path.is_none() {
            return Err(SteerError::selection(
                &spec,
                "no labels to search: connect the `labels` input (an autointerp-label stage), \
                 or choose by id or with `text:<text>`",
            ));
        }
        let q = query.to_lowercase();
        let tier = |l: &LabelRecord| {
            let label = l.label.to_lowercase();
            if label == q {
                Some(0)
            } else if label.split(|c: char| !c.is_alphanumeric()).any(|w| w == q)
                || (q.contains(' ') && label.contains(&q))
            {
                Some(1)
            } else if label.contains(&q) {
                Some(2)
            } else if l.explanation.to_lowercase().contains(&q) {
                Some(3)
            } else {
                None
            }
        };
        let matches: Vec<(u8, u32)> = self
            .labels
            .values()
            .filter_map(|l| tier(l).map(|t| (t, l.feature)))
            .collect();
        match matches.iter().min() {
            Some(&(_, feature)) => Ok((feature, matches.len())),
            None => Err(SteerError::selection(
                &spec,
                format!(
                    "no label or explanation in {} contains it ({} labels)",
                    self.labels_path
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display(),
                    self.labels.len()
                ),
            )),
        }
    }
}
