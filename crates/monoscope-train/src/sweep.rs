//! Sweeps: several SAEs trained in one pass over the data, so that trying other sizes,
//! sparsities or architectures costs no extra capture and no extra read of the store.
//!
//! Each `[[train.sweep]]` entry (or inline `sweep = [{ name = "k64", k = 64 }]`) overrides the
//! stage's own settings; every member sees the same batches in the same order as the main SAE.
//! Members are saved under `sweep/<name>/` (`sae/`, `eval.json`, `metrics.jsonl`) and compared
//! in `sweep.json`; the stage's `sae` output stays the main SAE.

use serde::{Deserialize, Serialize};

use crate::stage::{ArchitectureName, TrainStageConfig};

/// The directory of the members inside the stage directory.
pub(crate) const DIR: &str = "sweep";
/// The comparison table of every SAE the stage trained.
pub(crate) const TABLE: &str = "sweep.json";

/// One more SAE of a sweep: what differs from the stage's own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepMember {
    /// Directory name under `sweep/` (letters, digits, `-`, `_`).
    pub name: String,
    #[serde(default)]
    pub architecture: Option<ArchitectureName>,
    #[serde(default)]
    pub d_sae: Option<usize>,
    #[serde(default)]
    pub k: Option<usize>,
    #[serde(default)]
    pub sparsity_coeff: Option<f32>,
    #[serde(default)]
    pub lr: Option<f32>,
}

impl SweepMember {
    /// The stage's settings with this member's overrides (and no sweep of its own).
    pub fn apply(&self, base: &TrainStageConfig) -> TrainStageConfig {
        let mut config = base.clone();
        config.sweep = Vec::new();
        if let Some(a) = self.architecture {
            config.architecture = a;
        }
        if let Some(d) = self.d_sae {
            config.d_sae = d;
        }
        if let Some(k) = self.k {
            config.k = k;
        }
        if self.sparsity_coeff.is_some() {
            config.sparsity_coeff = self.sparsity_coeff;
        }
        if self.lr.is_some() {
            config.lr = self.lr;
        }
        config
    }
}

/// Problems of the members, as `(key, message)` with keys like `sweep[1].k`.
pub(crate) fn validate(
    base: &TrainStageConfig,
    check: impl Fn(&TrainStageConfig) -> Vec<(String, String)>,
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, member) in base.sweep.iter().enumerate() {
        let name_ok = !member.name.is_empty()
            && member
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            problems.push((
                format!("sweep[{i}].name"),
                format!(
                    "= {:?}: expected letters, digits, '-' or '_' (it names a directory)",
                    member.name
                ),
            ));
        } else if !seen.insert(member.name.clone()) {
            problems.push((
                format!("sweep[{i}].name"),
                format!("= {:?}: another member has that name", member.name),
            ));
        }
        for (key, message) in check(&member.apply(base)) {
            problems.push((format!("sweep[{i}].{key}"), message));
        }
    }
    problems
}
