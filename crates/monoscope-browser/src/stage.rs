//! The `browser` stage: builds the feature browser at the end of a pipeline.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::Path;

use monoscope_core::{
    Artifact, ArtifactKind, PortSpec, Stage, StageConfig, StageContext, StageDescription,
    StageError, atomic, port_names, register_stage,
};
use serde::{Deserialize, Serialize};

use monoscope_artifacts::browser::BrowserOutputs;
use monoscope_artifacts::cluster::ClusterOutputs;
use monoscope_artifacts::coverage::CoverageOutputs;
use monoscope_artifacts::label::LabelOutputs;
use monoscope_artifacts::split::SplitOutputs;
use monoscope_artifacts::steer::SteerOutputs;

use crate::inputs::RunFiles;
use crate::site::{SiteOptions, SiteSummary, write_site};

/// A static site directory (`index.html` at its root).
pub const SITE: ArtifactKind = ArtifactKind(Cow::Borrowed("site"));

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BrowserStageConfig {
    /// Title of the site (default: the pipeline's stage id and the SAE's hook).
    pub title: Option<String>,
    /// Features per data file; a feature page loads one such file.
    pub chunk_size: usize,
}

impl Default for BrowserStageConfig {
    fn default() -> Self {
        BrowserStageConfig {
            title: Default::default(),
            chunk_size: 32,
        }
    }
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
            doc: "Writes the feature browser: a static site over the SAE, labels, clusters, steering reports and analyses".into(),
            inputs: vec![
                PortSpec::artifact(port_names::SAE, ArtifactKind::SAE, "the SAE directory (eval.json beside it)"),
                PortSpec::artifact(port_names::LABELS, ArtifactKind::LABELS, "evidence and labels").optional(),
                PortSpec::artifact(port_names::CLUSTERS, ArtifactKind::CLUSTERS, "neighbours, clusters and the map").optional(),
                PortSpec::artifact(port_names::STEERING, ArtifactKind::STEERING_REPORT, "steering report, attributions and contrastive searches").optional(),
                PortSpec::artifact(port_names::SPLIT, ArtifactKind::SPLIT, "feature splitting across a family of SAEs").optional(),
                PortSpec::artifact(port_names::COVERAGE, ArtifactKind::COVERAGE, "concept coverage against frequency").optional(),
            ],
            outputs: vec![PortSpec::artifact(port_names::SITE, SITE, "the site directory (open index.html)")],
        }
    }

    fn run(config: BrowserStageConfig, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let files = RunFiles {
            sae_dir: ctx.recv_artifact(port_names::SAE)?.path,
            labels: ctx
                .optional_artifact(port_names::LABELS)?
                .map(|a| LabelOutputs::new(a.path)),
            clusters: ctx
                .optional_artifact(port_names::CLUSTERS)?
                .map(|a| ClusterOutputs::new(a.path)),
            steering: ctx
                .optional_artifact(port_names::STEERING)?
                .map(|a| SteerOutputs::new(a.path)),
            split: ctx
                .optional_artifact(port_names::SPLIT)?
                .map(|a| SplitOutputs::new(a.path)),
            coverage: ctx
                .optional_artifact(port_names::COVERAGE)?
                .map(|a| CoverageOutputs::new(a.path)),
        };
        let hook = files.sae_info().ok().and_then(|i| i.metadata.hook_name);
        let options = SiteOptions {
            title: config.title.clone().unwrap_or_else(|| match hook {
                Some(hook) => format!("monoscope · {hook}"),
                None => "monoscope".into(),
            }),
            chunk_size: config.chunk_size,
        };
        ctx.progress.set_message("writing the site".to_string());
        let outputs = BrowserOutputs::new(ctx.stage_dir.as_path());
        let site_dir = outputs.site_dir();
        let summary = write_site(&files, &options, &site_dir).map_err(StageError::other)?;
        let text = summary_text(&summary, &site_dir, ctx.run_dir);
        let summary_path = outputs.summary_path();
        atomic::write(&summary_path, text.as_bytes())
            .map_err(|e| StageError::io(&summary_path, e))?;
        let metadata = serde_json::json!({
            "features": summary.features,
            "labelled": summary.labelled,
            "metrics": summary.metrics,
        });
        ctx.emit_artifact(
            port_names::SITE,
            Artifact::new(SITE, site_dir).with_metadata(metadata),
        )
    }
}

register_stage!(Browser);

/// The lines printed at the end of a run: where the site is, the SAE's headline metrics and
/// a few example features.
pub fn summary_text(summary: &SiteSummary, site_dir: &Path, run_dir: &Path) -> String {
    let mut text = String::new();
    let index = site_dir.join(crate::site::INDEX_FILE);
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
