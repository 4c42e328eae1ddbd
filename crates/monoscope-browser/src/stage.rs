//! The `browser` stage: builds the feature browser at the end of a pipeline.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::Path;

use monoscope_core::{
    Artifact, ArtifactKind, PortSpec, Stage, StageConfig, StageContext, StageDescription,
    StageError, atomic, register_stage,
};
use serde::{Deserialize, Serialize};

use crate::inputs::RunFiles;
use crate::site::{SiteOptions, SiteSummary, write_site};

/// A static site directory (`index.html` at its root).
pub const SITE: ArtifactKind = ArtifactKind(Cow::Borrowed("site"));

/// The file, in the stage directory, that `monoscope run` prints when the run ends.
pub const SUMMARY_FILE: &str = "summary.txt";

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrowserStageConfig {
    /// Title of the site (default: the pipeline's stage id and the SAE's hook).
    #[serde(default)]
    pub title: Option<String>,
    /// Features per data file; a feature page loads one such file.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: usize,
}

fn default_chunk_size() -> usize {
    32
}

impl StageConfig for BrowserStageConfig {
    fn validate(&self) -> Vec<(String, String)> {
        if self.chunk_size == 0 {
            vec![("chunk_size".into(), "= 0: expected at least 1".into())]
        } else {
            Vec::new()
        }
    }
}

/// Writes the feature browser for a run.
#[derive(Debug)]
pub struct Browser;

impl Stage for Browser {
    type Config = BrowserStageConfig;

    fn description() -> StageDescription {
        StageDescription {
            kind: "browser".into(),
            doc: "Writes the feature browser: a static site over the SAE, labels, clusters and steering reports".into(),
            inputs: vec![
                PortSpec::artifact("sae", ArtifactKind::SAE, "the SAE directory (eval.json beside it)"),
                PortSpec::artifact("labels", ArtifactKind::LABELS, "evidence and labels").optional(),
                PortSpec::artifact("clusters", ArtifactKind::CLUSTERS, "neighbours, clusters and the map").optional(),
                PortSpec::artifact("steering", ArtifactKind::STEERING_REPORT, "steering report").optional(),
            ],
            outputs: vec![PortSpec::artifact("site", SITE, "the site directory (open index.html)")],
        }
    }

    fn run(config: BrowserStageConfig, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let mut files = RunFiles {
            sae_dir: ctx.recv_artifact("sae")?.path,
            ..RunFiles::default()
        };
        for (port, slot) in [
            ("labels", &mut files.labels_dir),
            ("clusters", &mut files.clusters_dir),
            ("steering", &mut files.steering_dir),
        ] {
            if ctx.has_input(port) {
                *slot = Some(ctx.recv_artifact(port)?.path);
            }
        }
        let hook = files.sae_config().ok().and_then(|c| {
            c.pointer("/metadata/hook_name")?
                .as_str()
                .map(str::to_string)
        });
        let options = SiteOptions {
            title: config.title.clone().unwrap_or_else(|| match hook {
                Some(hook) => format!("monoscope · {hook}"),
                None => "monoscope".into(),
            }),
            chunk_size: config.chunk_size,
        };
        ctx.progress.set_message("writing the site".to_string());
        let site_dir = ctx.stage_dir.join("site");
        let summary = write_site(&files, &options, &site_dir).map_err(StageError::other)?;
        let text = summary_text(&summary, &site_dir, ctx.run_dir);
        let summary_path = ctx.stage_dir.join(SUMMARY_FILE);
        atomic::write(&summary_path, text.as_bytes())
            .map_err(|e| StageError::io(&summary_path, e))?;
        let metadata = serde_json::json!({
            "features": summary.features,
            "labelled": summary.labelled,
            "metrics": summary.metrics,
        });
        ctx.emit_artifact(
            "site",
            Artifact::new(SITE, site_dir).with_metadata(metadata),
        )
    }
}

register_stage!(Browser);

/// The lines printed at the end of a run: where the site is, the SAE's headline metrics and
/// a few example features.
pub fn summary_text(summary: &SiteSummary, site_dir: &Path, run_dir: &Path) -> String {
    let mut text = String::new();
    let index = site_dir.join("index.html");
    let shown = index.canonicalize().unwrap_or(index);
    let _ = writeln!(text, "feature browser: {}", shown.display());
    let _ = writeln!(
        text,
        "  (or serve it: monoscope serve {})",
        run_dir.display()
    );
    let m = &summary.metrics;
    let get = |key: &str| m.get(key).and_then(serde_json::Value::as_f64);
    let mut parts = Vec::new();
    if let Some(v) = get("l0") {
        parts.push(format!("L0 {v:.1}"));
    }
    if let Some(v) = get("fvu") {
        parts.push(format!("FVU {v:.3}"));
    }
    match get("ce_loss_score") {
        Some(v) => parts.push(format!("ce_loss_score {v:.3}")),
        None => parts.push("ce_loss_score not measured".into()),
    }
    if let Some(v) = get("dead_fraction") {
        parts.push(format!("dead {:.1}%", v * 100.0));
    }
    let _ = writeln!(
        text,
        "SAE ({} features, held-out): {}",
        summary.features,
        parts.join(", ")
    );
    let _ = writeln!(text, "labelled features: {}", summary.labelled);
    for (id, label, score) in &summary.examples {
        let score = score
            .map(|s| format!(" (score {s:.2})"))
            .unwrap_or_default();
        let _ = writeln!(text, "  feature {id:>6}: {label}{score}");
    }
    text
}
