//! What an artifact port carries: a finished file or directory, with its kind and a few facts.

use std::borrow::Cow;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The kind of file or directory an artifact port carries, e.g. `sae`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ArtifactKind(pub Cow<'static, str>);

impl ArtifactKind {
    /// A language model checkpoint: a GGUF file or a Hugging Face directory.
    pub const MODEL: ArtifactKind = ArtifactKind(Cow::Borrowed("model"));
    /// A text corpus file or directory.
    pub const CORPUS: ArtifactKind = ArtifactKind(Cow::Borrowed("corpus"));
    /// An activation store directory (manifest plus zstd shards).
    pub const ACTIVATION_STORE: ArtifactKind = ArtifactKind(Cow::Borrowed("activation-store"));
    /// A sparse autoencoder directory in the SAELens layout.
    pub const SAE: ArtifactKind = ArtifactKind(Cow::Borrowed("sae"));
    /// Feature evidence and labels.
    pub const LABELS: ArtifactKind = ArtifactKind(Cow::Borrowed("labels"));
    /// Feature neighbours, clusters and a 2-D map.
    pub const CLUSTERS: ArtifactKind = ArtifactKind(Cow::Borrowed("clusters"));
    /// A steering report.
    pub const STEERING_REPORT: ArtifactKind = ArtifactKind(Cow::Borrowed("steering-report"));
    /// Feature splitting across a family of SAEs (`split.json`).
    pub const SPLIT: ArtifactKind = ArtifactKind(Cow::Borrowed("split"));
    /// Concept coverage against frequency (`coverage.json` and its plot).
    pub const COVERAGE: ArtifactKind = ArtifactKind(Cow::Borrowed("coverage"));

    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        ArtifactKind(name.into())
    }
}

/// A finished file or directory produced by a stage.
///
/// Artifacts are written atomically before they are announced, so a consumer that receives one
/// can read it at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub kind: ArtifactKind,
    pub path: PathBuf,
    /// Small facts a consumer may need without opening the files (e.g. `d_model`, `hook_name`).
    #[serde(default)]
    pub metadata: serde_json::Value,
}

impl Artifact {
    pub fn new(kind: ArtifactKind, path: impl Into<PathBuf>) -> Self {
        Artifact {
            kind,
            path: path.into(),
            metadata: serde_json::Value::Null,
        }
    }

    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }
}
