//! The JSON documents that cross the boundary. Field names are part of the ABI.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What `monoscope_plugin_describe` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginDescription {
    /// The plugin's name and version, shown by `monoscope stages`.
    pub name: String,
    pub version: String,
    pub stages: Vec<StageDecl>,
}

/// One stage kind a plugin provides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageDecl {
    pub kind: String,
    pub doc: String,
    pub inputs: Vec<PortDecl>,
    pub outputs: Vec<PortDecl>,
    /// JSON Schema of the config (names, types, defaults, docs).
    pub schema: serde_json::Value,
}

/// A port. ABI version 1 carries artifacts only: files or directories handed over by path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortDecl {
    pub name: String,
    /// The artifact kind, e.g. `sae`, `labels`.
    pub artifact: String,
    #[serde(default = "yes")]
    pub required: bool,
    #[serde(default)]
    pub doc: String,
}

fn yes() -> bool {
    true
}

/// An artifact crossing the boundary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub kind: String,
    pub path: PathBuf,
    #[serde(default)]
    pub metadata: serde_json::Value,
}

/// What the host sends to `monoscope_plugin_run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    /// The resolved config, as `monoscope_plugin_validate` returned it.
    pub config: serde_json::Value,
    pub stage_id: String,
    pub run_dir: PathBuf,
    /// The stage's own directory; it exists when the call is made.
    pub stage_dir: PathBuf,
    pub seed: u64,
    /// Input port to the artifact received on it (unconnected optional inputs are absent).
    pub inputs: BTreeMap<String, ArtifactRef>,
}

/// What `monoscope_plugin_run` returns on success.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Output port to the artifact produced on it (written completely before returning).
    pub outputs: BTreeMap<String, ArtifactRef>,
}

/// What an entry point returns on failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub message: String,
    /// For rejected configs: `(key, message)` per problem.
    #[serde(default)]
    pub problems: Vec<(String, String)>,
}
