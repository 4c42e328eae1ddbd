//! `fetch-model` and `fetch-corpus`: the first stages of most pipelines.

use monoscope_core::{
    Artifact, ArtifactKind, PortSpec, Stage, StageConfig, StageContext, StageDescription,
    StageError, port_names, register_stage,
};
use serde::{Deserialize, Serialize};

use crate::{FetchError, resolve_corpus, resolve_model};

/// The path on a stage's optional `port` input, or, when that port is not connected, `spec`
/// resolved as `fetch-model` would (a path, or a known name fetched into the cache).
pub fn model_input(
    ctx: &mut StageContext<'_>,
    port: &str,
    spec: &str,
) -> Result<std::path::PathBuf, StageError> {
    input_or(ctx, port, || resolve_model(spec))
}

/// Like [`model_input`], for a corpus.
pub fn corpus_input(
    ctx: &mut StageContext<'_>,
    port: &str,
    spec: &str,
) -> Result<std::path::PathBuf, StageError> {
    input_or(ctx, port, || resolve_corpus(spec))
}

fn input_or(
    ctx: &mut StageContext<'_>,
    port: &str,
    resolve: impl FnOnce() -> Result<std::path::PathBuf, FetchError>,
) -> Result<std::path::PathBuf, StageError> {
    match ctx.optional_artifact(port)? {
        Some(artifact) => Ok(artifact.path),
        None => resolve().map_err(StageError::other),
    }
}

/// Resolves a model (a path, or a known name fetched into the cache) and hands it on.
#[derive(Debug)]
pub struct FetchModel;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FetchModelConfig {
    /// A GGUF file, a Hugging Face model directory, or a known name (`smollm2`).
    pub model: String,
}

impl Default for FetchModelConfig {
    fn default() -> Self {
        FetchModelConfig {
            model: "smollm2".into(),
        }
    }
}

impl StageConfig for FetchModelConfig {}

impl Stage for FetchModel {
    type Config = FetchModelConfig;

    fn description() -> StageDescription {
        StageDescription {
            kind: "fetch-model".into(),
            doc: "Resolves a model path or known name, fetching and verifying it into the cache"
                .into(),
            inputs: vec![],
            outputs: vec![PortSpec::artifact(
                port_names::MODEL,
                ArtifactKind::MODEL,
                "the model file or directory",
            )],
        }
    }

    fn run(config: Self::Config, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        ctx.progress
            .set_message(format!("resolving {}", config.model));
        let path = resolve_model(&config.model).map_err(into_stage_error)?;
        let artifact = Artifact::new(ArtifactKind::MODEL, path)
            .with_metadata(serde_json::json!({ "name": config.model }));
        ctx.emit_artifact(port_names::MODEL, artifact)
    }
}

/// Resolves a corpus (a path, or a known name fetched into the cache) and hands it on.
#[derive(Debug)]
pub struct FetchCorpus;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FetchCorpusConfig {
    /// A text file, a directory, a JSONL file, or a known name (`wiki`, `shakespeare`).
    pub corpus: String,
}

impl Default for FetchCorpusConfig {
    fn default() -> Self {
        FetchCorpusConfig {
            corpus: "wiki".into(),
        }
    }
}

impl StageConfig for FetchCorpusConfig {}

impl Stage for FetchCorpus {
    type Config = FetchCorpusConfig;

    fn description() -> StageDescription {
        StageDescription {
            kind: "fetch-corpus".into(),
            doc: "Resolves a corpus path or known name, fetching and verifying it into the cache"
                .into(),
            inputs: vec![],
            outputs: vec![PortSpec::artifact(
                port_names::CORPUS,
                ArtifactKind::CORPUS,
                "the corpus file or directory",
            )],
        }
    }

    fn run(config: Self::Config, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        ctx.progress
            .set_message(format!("resolving {}", config.corpus));
        let path = resolve_corpus(&config.corpus).map_err(into_stage_error)?;
        let artifact = Artifact::new(ArtifactKind::CORPUS, path)
            .with_metadata(serde_json::json!({ "name": config.corpus }));
        ctx.emit_artifact(port_names::CORPUS, artifact)
    }
}

fn into_stage_error(e: FetchError) -> StageError {
    StageError::other(e)
}

register_stage!(FetchModel);
register_stage!(FetchCorpus);
