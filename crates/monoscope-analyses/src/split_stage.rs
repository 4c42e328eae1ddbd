//! The `split` stage kind: parameters, ports, and the order of work.

use std::path::Path;

use monoscope_artifacts::split::{SplitFile, SplitOutputs};
use monoscope_core::{
    Artifact, ArtifactKind, PortSpec, Stage, StageConfig, StageContext, StageDescription,
    StageError, port_names, register_stage,
};
use monoscope_sae::SparseCodes;
use monoscope_store::Store;
use serde::{Deserialize, Serialize};

use crate::error::AnalysisError;
use crate::family::load_family;
use crate::index::append_codes;
use crate::scan::{choose_hook, scan, tail_rows};
use crate::split::{MemberCodes, SplitOptions, analyse};
use crate::tokens::{load_tokenizer, model_input, token_text};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SplitConfig {
    /// Rows (tokens) of the store encoded by every SAE: the last ones, where the train stage's
    /// held-out shards are. Memory grows with it: every member's codes of these rows are held.
    pub max_tokens: u64,
    /// The hook to read (default: the SAE's, or the store's only one).
    pub hook: Option<String>,
    /// The model whose tokenizer decodes the top tokens when the `model` input is not
    /// connected (a path or a known name); without either, tokens are shown as `[id]`.
    pub model: Option<String>,
    /// Firings a child needs before its co-activation parent is trusted.
    pub min_firings: u64,
    /// Share of a child's firing tokens its co-activation parent must fire on.
    pub min_coactivation: f32,
    /// Decoder cosine a child needs with its nearest parent direction when co-activation does
    /// not decide.
    pub min_cosine: f32,
    /// Distinct top tokens kept per feature.
    pub top_tokens: usize,
    /// Rows per block of the decoder product; its scratch memory is `block² × 4` bytes.
    pub block: usize,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            max_tokens: 65_536,
            hook: None,
            model: None,
            min_firings: 5,
            min_coactivation: 0.3,
            min_cosine: 0.5,
            top_tokens: 5,
            block: 2048,
        }
    }
}

impl StageConfig for SplitConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.max_tokens == 0 {
            problems.push(("max_tokens".into(), "= 0: expected at least 1".into()));
        }
        if self.block == 0 {
            problems.push(("block".into(), "= 0: expected at least 1".into()));
        }
        if !(self.min_coactivation > 0.0 && self.min_coactivation <= 1.0) {
            problems.push((
                "min_coactivation".into(),
                format!(
                    "= {}: expected 0 < min_coactivation ≤ 1",
                    self.min_coactivation
                ),
            ));
        }
        if !(-1.0..=1.0).contains(&self.min_cosine) {
            problems.push((
                "min_cosine".into(),
                format!("= {}: expected a cosine in [-1, 1]", self.min_cosine),
            ));
        }
        problems
    }
}

impl SplitConfig {
    pub fn options(&self) -> SplitOptions {
        SplitOptions {
            min_firings: self.min_firings,
            min_coactivation: self.min_coactivation,
            min_cosine: self.min_cosine,
            top_tokens: self.top_tokens,
            block: self.block,
        }
    }
}

/// Feature splitting across a train stage's family of SAE sizes.
#[derive(Debug)]
pub struct Split;

impl Stage for Split {
    type Config = SplitConfig;

    fn description() -> StageDescription {
        StageDescription {
            kind: monoscope_artifacts::split::KIND.into(),
            doc: "Feature splitting across a train stage's sweep of SAE sizes: each feature's parent in the next smaller SAE by decoder cosine and co-activation, families and top tokens".into(),
            inputs: vec![
                PortSpec::artifact(port_names::SAE, ArtifactKind::SAE, "the train stage's main SAE (its sweep members are found beside it)"),
                PortSpec::artifact(port_names::STORE, ArtifactKind::ACTIVATION_STORE, "the activation store the family was trained on"),
                PortSpec::artifact(port_names::MODEL, ArtifactKind::MODEL, "the model the store was captured from, for its tokenizer (else `model`)").optional(),
            ],
            outputs: vec![PortSpec::artifact(
                port_names::SPLIT,
                ArtifactKind::SPLIT,
                "the stage directory: split.json",
            )],
        }
    }

    fn run(config: SplitConfig, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let sae = ctx.recv_artifact(port_names::SAE)?.path;
        let store = ctx.recv_artifact(port_names::STORE)?.path;
        let model = model_input(ctx, config.model.as_deref())?;
        let split = run_split(&config, &sae, &store, model.as_deref(), ctx)?;
        let split_into_two_or_more = split_parents(&split);
        let metadata = serde_json::json!({
            "members": split.members.iter().map(|m| serde_json::json!({"name": m.name, "d_sae": m.d_sae})).collect::<Vec<_>>(),
            "tokens": split.tokens,
            "parents_split_in_two_or_more": split_into_two_or_more,
        });
        let dir = ctx.stage_dir.clone();
        ctx.emit_artifact(
            port_names::SPLIT,
            Artifact::new(ArtifactKind::SPLIT, dir).with_metadata(metadata),
        )
    }
}

register_stage!(Split);

/// Per level, how many parents have two or more children.
pub fn split_parents(split: &SplitFile) -> Vec<usize> {
    split
        .levels
        .iter()
        .map(|level| {
            let mut children = vec![0usize; split.members[level.parent_member].d_sae];
            for p in level.parent.iter().flatten() {
                children[*p as usize] += 1;
            }
            children.iter().filter(|&&n| n >= 2).count()
        })
        .collect()
}

/// The stage's work on paths, into `ctx.stage_dir`; returns what it wrote.
pub fn run_split(
    config: &SplitConfig,
    sae: &Path,
    store: &Path,
    model: Option<&Path>,
    ctx: &StageContext<'_>,
) -> Result<SplitFile, AnalysisError> {
    let family = load_family(sae)?;
    let store = Store::open(store)?;
    let hook = choose_hook(config.hook.as_deref(), &family.main().sae, &store)?;
    let tokenizer = model.map(load_tokenizer).transpose()?;
    let range = tail_rows(&store, config.max_tokens);
    let progress = &ctx.progress;
    progress.set_length(range.end - range.start);
    progress.set_message(format!(
        "encoding {} tokens with {} SAEs",
        range.end - range.start,
        family.members.len()
    ));
    let saes = family.saes();
    let mut codes = vec![SparseCodes::default(); saes.len()];
    let mut token_ids = Vec::new();
    let massive_norm = family.massive_norm()?;
    scan(&store, &hook, &range, &saes, massive_norm, &mut |chunk| {
        if ctx.cancel.is_cancelled() {
            return Err(AnalysisError::Cancelled);
        }
        for (all, part) in codes.iter_mut().zip(&chunk.codes) {
            append_codes(all, part);
        }
        token_ids.extend_from_slice(&chunk.ids.token_ids);
        progress.set_position(token_ids.len() as u64);
        Ok(())
    })?;
    let dirs: Vec<String> = family
        .members
        .iter()
        .map(|m| m.sae_dir.display().to_string())
        .collect();
    let members: Vec<MemberCodes<'_>> = family
        .members
        .iter()
        .zip(&codes)
        .zip(&dirs)
        .map(|((m, codes), dir)| MemberCodes {
            name: &m.name,
            sae_dir: dir,
            main: m.main,
            sae: &m.sae,
            codes,
        })
        .collect();
    let decode = |id: u32| token_text(tokenizer.as_ref(), id);
    let split = analyse(
        &members,
        &token_ids,
        &decode,
        &config.options(),
        &mut |step| {
            if ctx.cancel.is_cancelled() {
                return Err(AnalysisError::Cancelled);
            }
            if !step.is_empty() {
                progress.set_message(step.to_string());
            }
            Ok(())
        },
    )?;
    SplitOutputs::new(ctx.stage_dir.clone()).write_split(&split)?;
    tracing::info!(
        stage = ctx.stage_id,
        "{} members over {} tokens; parents split in two or more per level: {:?}",
        split.members.len(),
        split.tokens,
        split_parents(&split)
    );
    Ok(split)
}
