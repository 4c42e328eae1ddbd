//! The train stage's settings.
//!
//! A sweep trains several SAEs in one pass over the data, so that trying other sizes,
//! sparsities or architectures costs no extra capture and no extra read of the store: each
//! `sweep` entry (`sweep = [{ name = "k64", k = 64 }]`) overrides the stage's own settings, and
//! every member sees the same batches in the same order as the main SAE.

use monoscope_core::StageConfig;
use monoscope_lm::{MatmulKind, Precision};
use serde::{Deserialize, Serialize};

/// Which SAE to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ArchitectureName {
    /// ReLU with an L1 penalty weighted by decoder norms (Anthropic, April 2024).
    ReluL1,
    /// TopK with AuxK for dead latents (Gao et al.).
    Topk,
    /// BatchTopK, saved as JumpReLU with a global threshold.
    Batchtopk,
    /// JumpReLU with a straight-through threshold gradient.
    Jumprelu,
}

/// The update rule (see `monoscope_sae::Optimizer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerName {
    /// Sign descent in a schedule-free average (sparsify's default).
    Signum,
    /// Adam with a linear decay over the last fifth of the steps.
    Adam,
}

impl From<OptimizerName> for monoscope_sae::Optimizer {
    fn from(name: OptimizerName) -> Self {
        match name {
            OptimizerName::Signum => monoscope_sae::Optimizer::Signum,
            OptimizerName::Adam => monoscope_sae::Optimizer::Adam,
        }
    }
}

/// How the input scale is estimated (see `monoscope_sae::InputScale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum InputScaleName {
    /// The median row norm becomes √d_in: indifferent to massive activations.
    Median,
    /// The mean squared norm becomes d_in (the paper's definition).
    MeanSquare,
    /// Raw activations, as sparsify trains.
    None,
}

impl From<InputScaleName> for monoscope_sae::InputScale {
    fn from(name: InputScaleName) -> Self {
        match name {
            InputScaleName::Median => monoscope_sae::InputScale::Median,
            InputScaleName::MeanSquare => monoscope_sae::InputScale::MeanSquare,
            InputScaleName::None => monoscope_sae::InputScale::None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TrainStageConfig {
    /// Hook to train on (default: the store's only hook).
    pub hook: Option<String>,
    /// Hooks to train one SAE each on (e.g. every layer), in `hooks/<hook>/`; the stage's `sae`
    /// output is the first one's. With `parts = N`, each part trains a contiguous share.
    pub hooks: Vec<String>,
    pub architecture: ArchitectureName,
    /// Dictionary size (latents).
    pub d_sae: usize,
    /// Active latents per token (topk, batchtopk).
    pub k: usize,
    /// L1 coefficient (relu-l1) or L0 coefficient (jumprelu); the library default when unset.
    pub sparsity_coeff: Option<f32>,
    /// The update rule; the library default when unset (`signum`).
    pub optimizer: Option<OptimizerName>,
    /// Peak learning rate; when unset, the optimizer's default for batches of 4,096 rows and
    /// 2¹⁴ latents, scaled by √(batch_size / 4096) and 1/√(d_sae / 2¹⁴).
    pub lr: Option<f32>,
    /// Norm of the initial encoder rows; when unset, the library default (√(1/3) for topk and
    /// batchtopk, whose decoder rows are kept at unit norm; else the decoder rows' norm).
    pub encoder_init_norm: Option<f32>,
    /// How the input scale is estimated.
    pub input_scale: InputScaleName,
    /// Rows with a norm above this multiple of the median norm are *massive*: evaluation and
    /// training metrics are also reported without them.
    pub massive_norm_factor: f32,
    /// Leave the massive rows out of training (measured better on held-out rows, which then
    /// report their FVU with and without such rows).
    pub exclude_massive: bool,
    /// A latent that has not fired for this many tokens is dead (AuxK revives dead latents).
    /// Default: 10M tokens, or a tenth of the run when that is shorter.
    pub dead_after_tokens: Option<u64>,
    /// AuxK coefficient (topk, batchtopk); 0 turns AuxK off. Default 1/32.
    pub aux_coeff: Option<f32>,
    /// Dead latents AuxK reconstructs with. Default: min(d_in / 2, 256).
    pub aux_k: Option<usize>,
    /// Rows (tokens) per step.
    pub batch_size: usize,
    /// Passes over the training shards.
    pub epochs: usize,
    /// Shards at the end of the store kept for evaluation.
    pub holdout_shards: usize,
    /// Training from the `activations` stream: rows to train on (required there; a stream's
    /// length is not known in advance). Training ends earlier if the stream does.
    pub training_tokens: Option<u64>,
    /// Training from the stream: its first rows, kept for evaluation (with the capture's
    /// `store` connected, the store's first rows, which the CE-loss splice reads).
    pub holdout_rows: usize,
    /// Training from the stream: rows of the mixing buffer (filled, shuffled, half handed out
    /// as batches, refilled). Memory: `buffer_rows × d_in × 4` bytes.
    pub buffer_rows: usize,
    /// Steps between metric lines in `metrics.jsonl`.
    pub metrics_every: u64,
    /// Rows used to estimate the input scale.
    pub scale_rows: usize,
    /// Seed of initialisation and data order (default: the pipeline seed).
    pub seed: Option<u64>,
    /// Held-out next-token predictions for the CE-loss splice (`ce_loss_score`, KL); 0 skips
    /// it. Needs the model: the `model` input, else the cached default the store was captured
    /// with.
    pub splice_tokens: usize,
    /// Arithmetic of the model's linear layers in the CE-loss splice: `f32` (the reference)
    /// or `int8`.
    pub matmul: MatmulKind,
    /// On a GPU device, the float type of the SAE trainer's matrix products and of the splice
    /// model's weights and products: `f32`, `f16` or `bf16` (parameters, optimizer state,
    /// the residual stream, norms and softmax stay f32). The CPU takes `f32` only.
    pub precision: Precision,
    /// Steps between checkpoints in `checkpoint/` (0: none). A rerun finding a checkpoint of
    /// the same configuration and store continues from it; it is removed once the SAE is saved.
    pub checkpoint_every: u64,
    /// More SAEs trained on the same batches, each overriding some of the settings above:
    /// `sweep = [{ name = "k64", k = 64 }, { name = "wide", d_sae = 9216 }]`. Saved under
    /// `sweep/<name>/`; `sweep.json` compares them with the main SAE.
    pub sweep: Vec<SweepMember>,
}

impl Default for TrainStageConfig {
    fn default() -> Self {
        TrainStageConfig {
            hook: Default::default(),
            hooks: Default::default(),
            architecture: ArchitectureName::Topk,
            d_sae: 4608,
            k: 32,
            sparsity_coeff: Default::default(),
            optimizer: Default::default(),
            lr: Default::default(),
            encoder_init_norm: Default::default(),
            input_scale: InputScaleName::Median,
            massive_norm_factor: 10.0,
            exclude_massive: true,
            dead_after_tokens: Default::default(),
            aux_coeff: Default::default(),
            aux_k: Default::default(),
            batch_size: 2048,
            epochs: 1,
            holdout_shards: 1,
            training_tokens: Default::default(),
            holdout_rows: 8192,
            buffer_rows: 65_536,
            metrics_every: 20,
            scale_rows: 16_384,
            seed: Default::default(),
            splice_tokens: 2048,
            matmul: Default::default(),
            precision: Default::default(),
            checkpoint_every: Default::default(),
            sweep: Default::default(),
        }
    }
}

impl StageConfig for TrainStageConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = self.own_problems();
        problems.extend(validate_sweep(self, Self::own_problems));
        problems.extend(self.hooks_problems());
        problems
    }
}

impl TrainStageConfig {
    /// `hooks`: with no `hook` beside it, each named once, each a directory name.
    fn hooks_problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let (Some(hook), false) = (&self.hook, self.hooks.is_empty()) {
            problems.push((
                "hooks".into(),
                format!("cannot be given with `hook` = {hook:?}: set one of them"),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, hook) in self.hooks.iter().enumerate() {
            let usable = !hook.is_empty()
                && hook != "."
                && hook != ".."
                && !hook.contains(['/', '\\', '\0']);
            if !usable {
                problems.push((
                    format!("hooks[{i}]"),
                    format!("= {hook:?}: expected a hook name (it names a directory)"),
                ));
            } else if !seen.insert(hook) {
                problems.push((format!("hooks[{i}]"), format!("= {hook:?}: listed twice")));
            }
        }
        problems
    }

    /// Problems of the settings themselves, sweep aside.
    fn own_problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("d_sae", self.d_sae),
            ("batch_size", self.batch_size),
            ("epochs", self.epochs),
            ("holdout_rows", self.holdout_rows),
        ] {
            if value == 0 {
                problems.push((key.to_string(), "= 0: expected at least 1".to_string()));
            }
        }
        if self.buffer_rows < 2 * self.batch_size {
            problems.push((
                "buffer_rows".into(),
                format!(
                    "= {}: expected at least 2 × batch_size ({}), as half of it is handed out at a time",
                    self.buffer_rows,
                    2 * self.batch_size
                ),
            ));
        }
        if !(self.massive_norm_factor.is_finite() && self.massive_norm_factor > 1.0) {
            problems.push((
                "massive_norm_factor".into(),
                format!(
                    "= {}: expected a multiple of the median norm above 1",
                    self.massive_norm_factor
                ),
            ));
        }
        if let Some(c) = self.aux_coeff
            && !(c.is_finite() && c >= 0.0)
        {
            problems.push((
                "aux_coeff".into(),
                format!("= {c}: expected 0 (off) or a positive number"),
            ));
        }
        if self.aux_k == Some(0) {
            problems.push((
                "aux_k".into(),
                "= 0: expected at least 1 (aux_coeff = 0 turns AuxK off)".into(),
            ));
        }
        if self.dead_after_tokens == Some(0) {
            problems.push((
                "dead_after_tokens".into(),
                "= 0: expected at least 1".into(),
            ));
        }
        if let Some(lr) = self.lr
            && !(lr.is_finite() && lr > 0.0)
        {
            problems.push(("lr".into(), format!("= {lr}: expected a positive number")));
        }
        if matches!(
            self.architecture,
            ArchitectureName::Topk | ArchitectureName::Batchtopk
        ) && (self.k == 0 || self.k > self.d_sae)
        {
            problems.push((
                "k".into(),
                format!("= {}: expected 1..=d_sae ({})", self.k, self.d_sae),
            ));
        }
        problems
    }
}

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
    #[serde(default)]
    pub optimizer: Option<OptimizerName>,
    #[serde(default)]
    pub encoder_init_norm: Option<f32>,
    #[serde(default)]
    pub exclude_massive: Option<bool>,
    #[serde(default)]
    pub dead_after_tokens: Option<u64>,
    #[serde(default)]
    pub aux_coeff: Option<f32>,
    #[serde(default)]
    pub aux_k: Option<usize>,
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
        if self.optimizer.is_some() {
            config.optimizer = self.optimizer;
        }
        if self.encoder_init_norm.is_some() {
            config.encoder_init_norm = self.encoder_init_norm;
        }
        if let Some(e) = self.exclude_massive {
            config.exclude_massive = e;
        }
        if self.dead_after_tokens.is_some() {
            config.dead_after_tokens = self.dead_after_tokens;
        }
        if self.aux_coeff.is_some() {
            config.aux_coeff = self.aux_coeff;
        }
        if self.aux_k.is_some() {
            config.aux_k = self.aux_k;
        }
        config
    }
}

/// Problems of the members, as `(key, message)` with keys like `sweep[1].k`.
fn validate_sweep(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> TrainStageConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_recipe_settings_are_checked_and_named() {
        let problems = config(serde_json::json!({
            "lr": -1.0, "aux_coeff": -0.5, "aux_k": 0, "dead_after_tokens": 0,
            "massive_norm_factor": 1.0, "sweep": [{ "name": "a", "aux_k": 0 }],
        }))
        .validate();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        for key in [
            "lr",
            "aux_coeff",
            "aux_k",
            "dead_after_tokens",
            "massive_norm_factor",
            "sweep[0].aux_k",
        ] {
            assert!(keys.contains(&key), "{key} not in {problems:?}");
        }
        let fine = config(serde_json::json!({ "optimizer": "adam", "input_scale": "mean-square" }));
        assert!(fine.validate().is_empty());
    }

    #[test]
    fn a_sweep_member_overrides_the_recipe() {
        let base = config(serde_json::json!({ "sweep": [{
            "name": "a", "optimizer": "adam", "exclude_massive": false,
            "aux_coeff": 0.0, "encoder_init_norm": 1.0,
        }]}));
        let member = base.sweep[0].apply(&base);
        assert_eq!(member.optimizer, Some(OptimizerName::Adam));
        assert!(base.exclude_massive && !member.exclude_massive);
        assert_eq!(member.aux_coeff, Some(0.0));
        assert_eq!(member.encoder_init_norm, Some(1.0));
    }
}
