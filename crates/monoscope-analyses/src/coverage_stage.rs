//! The `coverage` stage kind: parameters, ports, and the order of work.

use std::path::{Path, PathBuf};

use monoscope_artifacts::atomic;
use monoscope_artifacts::coverage::{
    ConceptCoverage, CoverageFile, CoverageMember, CoverageOutputs,
};
use monoscope_core::{
    Artifact, ArtifactKind, PortSpec, Stage, StageConfig, StageContext, StageDescription,
    StageError, port_names, register_stage,
};
use monoscope_store::Store;
use serde::{Deserialize, Serialize};

use crate::coverage::{
    Concept, DEFAULT_CONCEPTS, MatchOptions, MemberCounts, concepts_by_row, find_occurrences,
    frequency_bins, parse_concepts, term_sequences,
};
use crate::error::AnalysisError;
use crate::family::load_family;
use crate::plot::CoveragePlot;
use crate::scan::{choose_hook, read_ids, scan, tail_rows};
use crate::tokens::{load_tokenizer, model_input};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CoverageConfig {
    /// A concept list: a TSV file of `term<TAB>category` lines (`#` starts a comment line).
    /// Default: the list shipped with monoscope (countries, cities, chemical elements,
    /// sciences and other encyclopaedia subjects).
    pub concepts: Option<PathBuf>,
    /// Rows (tokens) of the store scanned: the last ones, where the train stage's held-out
    /// shards are. Time grows with it (every member encodes every row); memory does not.
    pub max_tokens: u64,
    /// The hook to read (default: the SAE's, or the store's only one).
    pub hook: Option<String>,
    /// The model whose tokenizer spells the terms when the `model` input is not connected (a
    /// path or a known name). One of the two is required.
    pub model: Option<String>,
    /// Recall a feature needs to cover a concept.
    pub min_recall: f64,
    /// Precision a feature needs to cover a concept.
    pub min_precision: f64,
    /// Occurrences a concept needs to be plotted (rarer ones are listed, not binned).
    pub min_occurrences: u64,
    /// Frequency bins per factor of ten.
    pub bins_per_decade: usize,
    /// Width and height of `coverage.svg` and `coverage.png`, in pixels.
    pub picture_width: u32,
    pub picture_height: u32,
}

impl Default for CoverageConfig {
    fn default() -> Self {
        CoverageConfig {
            concepts: None,
            max_tokens: 131_072,
            hook: None,
            model: None,
            min_recall: 0.5,
            min_precision: 0.5,
            min_occurrences: 2,
            bins_per_decade: 2,
            picture_width: 900,
            picture_height: 500,
        }
    }
}

impl StageConfig for CoverageConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.max_tokens == 0 {
            problems.push(("max_tokens".into(), "= 0: expected at least 1".into()));
        }
        if self.bins_per_decade == 0 {
            problems.push(("bins_per_decade".into(), "= 0: expected at least 1".into()));
        }
        for (key, value) in [
            ("min_recall", self.min_recall),
            ("min_precision", self.min_precision),
        ] {
            if !(value > 0.0 && value <= 1.0) {
                problems.push((key.into(), format!("= {value}: expected 0 < {key} ≤ 1")));
            }
        }
        for (key, value) in [
            ("picture_width", self.picture_width),
            ("picture_height", self.picture_height),
        ] {
            if !(300..=8192).contains(&value) {
                problems.push((key.into(), format!("= {value}: expected 300..=8192 pixels")));
            }
        }
        if let Some(path) = self.concepts.as_ref().filter(|p| !p.is_file()) {
            problems.push((
                "concepts".into(),
                format!("= {:?}: no such file", path.display().to_string()),
            ));
        }
        problems
    }
}

impl CoverageConfig {
    /// The concept list this configuration names.
    pub fn concept_list(&self) -> Result<Vec<Concept>, AnalysisError> {
        match &self.concepts {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(AnalysisError::io(path))?;
                parse_concepts(&text, &path.display().to_string())
            }
            None => parse_concepts(DEFAULT_CONCEPTS, "the default concept list"),
        }
    }
}

/// Completeness against frequency across a train stage's family of SAE sizes.
#[derive(Debug)]
pub struct Coverage;

impl Stage for Coverage {
    type Config = CoverageConfig;

    fn description() -> StageDescription {
        StageDescription {
            kind: monoscope_artifacts::coverage::KIND.into(),
            doc: "Which concepts of a list each SAE size of a train stage's sweep has a specific feature for, against how often they occur (JSON, SVG, PNG)".into(),
            inputs: vec![
                PortSpec::artifact(port_names::SAE, ArtifactKind::SAE, "the train stage's main SAE (its sweep members are found beside it)"),
                PortSpec::artifact(port_names::STORE, ArtifactKind::ACTIVATION_STORE, "the activation store the family was trained on"),
                PortSpec::artifact(port_names::MODEL, ArtifactKind::MODEL, "the model the store was captured from, for its tokenizer (else `model`)").optional(),
            ],
            outputs: vec![PortSpec::artifact(
                port_names::COVERAGE,
                ArtifactKind::COVERAGE,
                "the stage directory: coverage.json, coverage.svg, coverage.png",
            )],
        }
    }

    fn run(config: CoverageConfig, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let sae = ctx.recv_artifact(port_names::SAE)?.path;
        let store = ctx.recv_artifact(port_names::STORE)?.path;
        let model = model_input(ctx, config.model.as_deref())?.ok_or_else(|| {
            StageError::Invalid(
                "coverage needs a tokenizer to spell the concepts: connect the `model` input or \
                 set `model`"
                    .into(),
            )
        })?;
        let coverage = run_coverage(&config, &sae, &store, &model, ctx)?;
        let covered: Vec<usize> = (0..coverage.members.len())
            .map(|m| {
                coverage
                    .concepts
                    .iter()
                    .filter(|c| c.best[m].covered)
                    .count()
            })
            .collect();
        let metadata = serde_json::json!({
            "members": coverage.members,
            "concepts": coverage.concepts.len(),
            "occurring": coverage.concepts.iter().filter(|c| c.occurrences > 0).count(),
            "covered": covered,
            "tokens": coverage.tokens,
        });
        let dir = ctx.stage_dir.clone();
        ctx.emit_artifact(
            port_names::COVERAGE,
            Artifact::new(ArtifactKind::COVERAGE, dir).with_metadata(metadata),
        )
    }
}

register_stage!(Coverage);

/// The stage's work on paths, into `ctx.stage_dir`; returns what it wrote to `coverage.json`.
pub fn run_coverage(
    config: &CoverageConfig,
    sae: &Path,
    store: &Path,
    model: &Path,
    ctx: &StageContext<'_>,
) -> Result<CoverageFile, AnalysisError> {
    let concepts = config.concept_list()?;
    let family = load_family(sae)?;
    let store = Store::open(store)?;
    let hook = choose_hook(config.hook.as_deref(), &family.main().sae, &store)?;
    let tokenizer = load_tokenizer(model)?;
    let sequences = concepts
        .iter()
        .map(|c| term_sequences(&tokenizer, &c.term))
        .collect::<Result<Vec<_>, _>>()?;
    let range = tail_rows(&store, config.max_tokens);
    let progress = &ctx.progress;
    progress.set_message(format!("finding {} concepts", concepts.len()));
    let ids = read_ids(&store, &range)?;
    let occurrences = find_occurrences(&sequences, &ids);
    let at = concepts_by_row(&occurrences);
    ctx.cancel.check().map_err(|_| AnalysisError::Cancelled)?;

    progress.set_length(ids.len() as u64);
    progress.set_message(format!(
        "encoding {} tokens with {} SAEs",
        ids.len(),
        family.members.len()
    ));
    let saes = family.saes();
    let mut counts: Vec<MemberCounts> = saes
        .iter()
        .map(|s| MemberCounts::new(s.d_sae, concepts.len()))
        .collect();
    let massive_norm = family.massive_norm()?;
    scan(&store, &hook, &range, &saes, massive_norm, &mut |chunk| {
        if ctx.cancel.is_cancelled() {
            return Err(AnalysisError::Cancelled);
        }
        for (member, codes) in counts.iter_mut().zip(&chunk.codes) {
            member.add(chunk.first, codes, &at);
        }
        progress.set_position((chunk.first + chunk.ids.len()) as u64);
        Ok(())
    })?;

    let options = MatchOptions {
        min_recall: config.min_recall,
        min_precision: config.min_precision,
    };
    let tokens = ids.len() as u64;
    let concept_coverage: Vec<ConceptCoverage> = concepts
        .iter()
        .enumerate()
        .map(|(c, concept)| {
            let n = occurrences[c].len() as u64;
            ConceptCoverage {
                term: concept.term.clone(),
                category: concept.category.clone(),
                occurrences: n,
                frequency_per_million: n as f64 * 1e6 / tokens.max(1) as f64,
                best: counts
                    .iter()
                    .map(|m| options.best(n, &m.hits[c], &m.firings))
                    .collect(),
            }
        })
        .collect();
    let binned: Vec<(f64, Vec<bool>)> = concept_coverage
        .iter()
        .filter(|c| c.occurrences >= config.min_occurrences.max(1))
        .map(|c| {
            (
                c.frequency_per_million,
                c.best.iter().map(|b| b.covered).collect(),
            )
        })
        .collect();
    let bins = frequency_bins(&binned, family.members.len(), config.bins_per_decade);
    let coverage = CoverageFile {
        criterion: options.criterion(),
        tokens,
        members: family
            .members
            .iter()
            .map(|m| CoverageMember {
                name: m.name.clone(),
                d_sae: m.sae.d_sae,
            })
            .collect(),
        concepts: concept_coverage,
        bins,
    };
    let outputs = CoverageOutputs::new(ctx.stage_dir.clone());
    outputs.write_coverage(&coverage)?;
    let legend: Vec<String> = coverage
        .members
        .iter()
        .map(|m| format!("{} ({} features)", m.name, m.d_sae))
        .collect();
    let plot = CoveragePlot {
        members: &legend,
        bins: &coverage.bins,
        width: config.picture_width,
        height: config.picture_height,
    };
    let svg = outputs.svg_path();
    atomic::write_with(&svg, |out| plot.write_svg(out)).map_err(AnalysisError::io(&svg))?;
    let png = outputs.png_path();
    atomic::write_with(&png, |out| plot.write_png(out)).map_err(AnalysisError::io(&png))?;
    tracing::info!(
        stage = ctx.stage_id,
        "{} concepts, {} occurring in {} tokens; covered per member: {:?}",
        coverage.concepts.len(),
        coverage
            .concepts
            .iter()
            .filter(|c| c.occurrences > 0)
            .count(),
        tokens,
        (0..coverage.members.len())
            .map(|m| coverage
                .concepts
                .iter()
                .filter(|c| c.best[m].covered)
                .count())
            .collect::<Vec<_>>()
    );
    Ok(coverage)
}
