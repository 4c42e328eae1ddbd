//! The files of a steer stage directory: the steering report, `report.json` (the shape below)
//! and `report.md` (the same, for people), both written atomically; and, when the stage was
//! asked for attributions, `attributions.json` ([`Attribution`] per prompt: each feature's
//! attribution to a target's log-probability at each position, beside its real ablation
//! effect); and, when asked for contrastive searches, `contrasts.json` ([`Contrast`] per pair
//! of text sets).
//!
//! ```text
//! {"model": str, "hook": str, "seed": u64, "sae": str, "settings": {...},
//!  "experiments": [{
//!     "features": [{"id": u32, "label": str|null, "selected_by": str, "max_activation": f32|null,
//!                   "activation"?: f32, "token"?: str}],
//!     "mode": "clamp"|"add"|"ablate", "scale": "max_activation"|"raw",
//!     "targets": [str], "targets_from": "config"|"logit_effects",
//!     "baseline": {"target_prob": f64, "per_target": [{"target": str, "prob": f64, "logprob_delta": 0}]},
//!     "effects": [{"multiple": f32, "values": [f32], "target_logprob_delta": f64,
//!                  "target_prob": f64, "kl_neutral": f64, "per_target": [...]}],
//!     "prompts": [{"prompt": str, "chat": bool, "baseline": str,
//!                  "steered": [{"multiple": f32, "text": str}]}]}]}
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{ArtifactError, Result};
use crate::{atomic, json};

/// The stage kind whose directory has this layout.
pub const KIND: &str = "steer";
pub const REPORT_FILE: &str = "report.json";
pub const REPORT_MARKDOWN_FILE: &str = "report.md";
pub const ATTRIBUTIONS_FILE: &str = "attributions.json";
pub const CONTRASTS_FILE: &str = "contrasts.json";

/// How an edit changes one feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Set the feature's activation to the value, keeping the SAE's error term.
    Clamp,
    /// Add the value times the feature's decoder direction, whatever the feature does.
    Add,
    /// Clamp to 0.
    Ablate,
}

/// A feature chosen for an experiment, as the report records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectedFeature {
    pub id: u32,
    pub label: Option<String>,
    /// The selection as configured: `"123"`, `"label:bridge"`, `"text:…"`.
    pub selected_by: String,
    /// The maximum activation recorded by the train stage (`eval.json`), if known.
    pub max_activation: Option<f32>,
    /// For `text:` selections: the activation on the text and the token it peaked on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A steer stage directory (or any directory `monoscope steer` wrote a report into).
#[derive(Debug, Clone, PartialEq)]
pub struct SteerOutputs {
    pub dir: PathBuf,
}

impl SteerOutputs {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SteerOutputs { dir: dir.into() }
    }

    pub fn report_path(&self) -> PathBuf {
        self.dir.join(REPORT_FILE)
    }

    pub fn report_markdown_path(&self) -> PathBuf {
        self.dir.join(REPORT_MARKDOWN_FILE)
    }

    pub fn report(&self) -> Result<Option<Report>> {
        json::read_optional(&self.report_path())
    }

    pub fn attributions_path(&self) -> PathBuf {
        self.dir.join(ATTRIBUTIONS_FILE)
    }

    pub fn attributions(&self) -> Result<Option<Vec<Attribution>>> {
        json::read_optional(&self.attributions_path())
    }

    /// Writes `attributions.json` atomically.
    pub fn write_attributions(&self, attributions: &[Attribution]) -> Result<()> {
        json::write_pretty(&self.attributions_path(), &attributions)
    }

    pub fn contrasts_path(&self) -> PathBuf {
        self.dir.join(CONTRASTS_FILE)
    }

    pub fn contrasts(&self) -> Result<Option<Vec<Contrast>>> {
        json::read_optional(&self.contrasts_path())
    }

    /// Writes `contrasts.json` atomically.
    pub fn write_contrasts(&self, contrasts: &[Contrast]) -> Result<()> {
        json::write_pretty(&self.contrasts_path(), &contrasts)
    }

    /// Writes `report.json` and `report.md` (the directory created if needed), each atomically.
    pub fn write_report(&self, report: &Report) -> Result<()> {
        json::write_pretty(&self.report_path(), report)?;
        let md_path = self.report_markdown_path();
        atomic::write(&md_path, report.to_markdown().as_bytes())
            .map_err(ArtifactError::io(&md_path))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub model: String,
    pub hook: String,
    pub seed: u64,
    /// The SAE directory.
    pub sae: String,
    pub settings: Settings,
    pub experiments: Vec<ExperimentReport>,
}

/// How every experiment of a report ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub max_new_tokens: usize,
    /// 0 means greedy decoding.
    pub temperature: f64,
    pub top_p: f64,
    /// `f32` or `int8` (what the model's linear layers actually ran).
    pub matmul: String,
    pub steer_first_position: bool,
    pub neutral_text: String,
}

/// How `multiple` turns into the values features are set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// `value = multiple × the feature's maximum activation` (from `eval.json`).
    MaxActivation,
    /// `value = multiple`, in the SAE's units.
    Raw,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentReport {
    pub features: Vec<SelectedFeature>,
    pub mode: Mode,
    pub scale: Scale,
    pub targets: Vec<String>,
    /// `config`, or `logit_effects` when no targets were given and the features' most promoted
    /// tokens stood in.
    pub targets_from: String,
    /// The unsteered model's target probabilities (its `logprob_delta`s are 0).
    pub baseline: TargetSummary,
    pub effects: Vec<Effect>,
    pub prompts: Vec<PromptRun>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSummary {
    /// Mean over prompts of the summed probability of the targets as the next words.
    pub target_prob: f64,
    pub per_target: Vec<TargetEffect>,
}

/// One target word: its probability as the next word (mean over prompts) and the mean change
/// of its log-probability against the unsteered model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetEffect {
    pub target: String,
    pub prob: f64,
    pub logprob_delta: f64,
}

/// The measured effect of one step of the sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    pub multiple: f32,
    /// The value each feature was set to (clamp, ablate) or pushed by (add), in order.
    pub values: Vec<f32>,
    /// Mean over prompts and targets of `log p_steered − log p_plain` (nats).
    pub target_logprob_delta: f64,
    /// Mean over prompts of the summed target probability under steering.
    pub target_prob: f64,
    /// Mean next-token KL (nats) on the neutral text, plain ‖ steered.
    pub kl_neutral: f64,
    pub per_target: Vec<TargetEffect>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptRun {
    pub prompt: String,
    pub chat: bool,
    pub baseline: String,
    pub steered: Vec<SteeredText>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteeredText {
    pub multiple: f32,
    pub text: String,
}

impl Report {
    /// A human-readable rendering: settings, then per experiment the features, the effect
    /// table and the generations side by side.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let s = &self.settings;
        let sampling = if s.temperature > 0.0 {
            format!(
                "temperature {}, top-p {}, seed {}",
                s.temperature, s.top_p, self.seed
            )
        } else {
            "greedy".to_string()
        };
        let _ = writeln!(md, "# Steering report\n");
        let _ = writeln!(
            md,
            "Model `{}`, SAE `{}` at `{}`; {} new tokens, {sampling}, {} matmuls.\n",
            self.model, self.sae, self.hook, s.max_new_tokens, s.matmul
        );
        let _ = writeln!(
            md,
            "Neutral text for the KL column: \"{}\"\n",
            s.neutral_text
        );
        for (n, e) in self.experiments.iter().enumerate() {
            e.write_markdown(&mut md, n + 1);
        }
        md
    }
}

impl ExperimentReport {
    fn write_markdown(&self, md: &mut String, number: usize) {
        let mode = match self.mode {
            Mode::Clamp => "clamp",
            Mode::Add => "add",
            Mode::Ablate => "ablate",
        };
        let _ = writeln!(md, "## Experiment {number}: {mode}\n");
        let _ = writeln!(md, "| feature | label | selected by | max activation |");
        let _ = writeln!(md, "|---|---|---|---|");
        for f in &self.features {
            let mut by = f.selected_by.clone();
            if let (Some(a), Some(t)) = (f.activation, &f.token) {
                by += &format!(" (peak {a:.2} on {t:?})");
            }
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                f.id,
                cell(f.label.as_deref().unwrap_or("—")),
                cell(&by),
                f.max_activation.map_or("—".into(), |m| format!("{m:.3}"))
            );
        }
        let unit = match self.scale {
            Scale::MaxActivation => "× max activation",
            Scale::Raw => "raw value",
        };
        let _ = writeln!(
            md,
            "\nTargets ({}): {}. Baseline target probability {:.3e}.\n",
            self.targets_from,
            self.targets
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", "),
            self.baseline.target_prob
        );
        let _ = writeln!(
            md,
            "| multiple ({unit}) | values | target prob | Δ log p (nats) | KL on neutral text |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|");
        for e in &self.effects {
            let values: Vec<String> = e.values.iter().map(|v| format!("{v:.2}")).collect();
            let _ = writeln!(
                md,
                "| {} | {} | {:.3e} | {:+.3} | {:.4} |",
                e.multiple,
                values.join(", "),
                e.target_prob,
                e.target_logprob_delta,
                e.kl_neutral
            );
        }
        for p in &self.prompts {
            let _ = writeln!(
                md,
                "\n### Prompt{}: {}\n",
                if p.chat { " (chat)" } else { "" },
                p.prompt
            );
            let _ = writeln!(md, "| multiple | generation |");
            let _ = writeln!(md, "|---|---|");
            let _ = writeln!(md, "| unsteered | {} |", cell(&p.baseline));
            for s in &p.steered {
                let _ = writeln!(md, "| {} | {} |", s.multiple, cell(&s.text));
            }
        }
        md.push('\n');
    }
}

/// Text made safe for one Markdown table cell.
fn cell(text: &str) -> String {
    text.trim()
        .replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ⏎ ")
}

/// Which features a target's log-probability rests on, for one prompt: each active feature's
/// attribution at each position (activation × the gradient of the target's log-probability
/// along its decoder direction, the SAE's error term kept), and for the strongest, the real
/// effect of ablating it there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    pub prompt: String,
    /// The continuation whose log-probability is explained (one or more tokens).
    pub target: String,
    pub hook: String,
    /// The tokens of prompt and target, as the model saw them (BOS first when it has one).
    pub tokens: Vec<String>,
    /// Index of the first target token in `tokens`.
    pub target_start: usize,
    /// `log p(target | prompt)`: the sum over the target's tokens.
    pub target_logprob: f64,
    /// Per position, the attribution of the SAE's error term (what the features miss).
    pub error_attribution: Vec<f64>,
    /// The strongest (feature, position) pairs by |attribution|, strongest first.
    pub entries: Vec<AttributionEntry>,
    /// Of the ablated entries, how many changed the log-probability the way the attribution
    /// predicted (ablation effect of the opposite sign to the attribution).
    pub ablated: usize,
    pub sign_agreements: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributionEntry {
    pub feature: u32,
    pub position: usize,
    pub activation: f32,
    /// First-order effect of the feature on `target_logprob`: ablating it is predicted to
    /// change the log-probability by minus this.
    pub attribution: f64,
    /// The real change of `target_logprob` when the feature is clamped to 0 at this position
    /// (the rest of the activation, error term included, kept); `None` when not ablated.
    pub ablation_effect: Option<f64>,
    pub label: Option<String>,
}

/// A contrastive search: the features that fire more on one set of texts than on another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contrast {
    /// What the search looks for, in words (e.g. "France").
    pub name: String,
    /// The files the texts came from, one text per line.
    pub positive: String,
    pub negative: String,
    pub positive_texts: usize,
    pub negative_texts: usize,
    /// Ranked by the lower end of the difference's 95% interval, best first.
    pub hits: Vec<ContrastHit>,
}

/// One feature's contrast between the positive and the negative texts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContrastHit {
    pub feature: u32,
    /// Mean over the positive texts of the per-text peak (a multiple of the training maximum
    /// when `scaled`).
    pub positive_mean: f64,
    pub negative_mean: f64,
    /// `positive_mean - negative_mean`.
    pub difference: f64,
    /// Welch's standard error of the difference.
    pub standard_error: f64,
    /// `difference - 1.96 · standard_error`: what the ranking sorts by.
    pub lower_bound: f64,
    /// Fraction of the positive (negative) texts on which the feature fires at all.
    pub positive_firing: f64,
    pub negative_firing: f64,
    /// Whether the peaks are multiples of the feature's training maximum.
    pub scaled: bool,
    pub label: Option<String>,
}
