//! The crate's one error type. Messages name the file, key, value or step involved.

use std::path::PathBuf;

/// Everything that can go wrong while building, training, saving or loading an SAE.
#[derive(Debug, thiserror::Error)]
pub enum SaeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{path}: tensor `{key}` is missing")]
    MissingTensor { path: PathBuf, key: String },
    #[error("{path}: tensor `{key}` has shape {found:?}, expected {expected:?}")]
    TensorShape {
        path: PathBuf,
        key: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error(
        "{path}: tensor `{key}` has dtype {dtype}, expected a float type (F32, F16, BF16, F64)"
    )]
    TensorDtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },
    #[error("{path}: `{key}` = {value} is not supported: {reason}")]
    Unsupported {
        path: PathBuf,
        key: String,
        value: String,
        reason: String,
    },
    #[error(
        "{path}: neither a SAELens directory (cfg.json + sae_weights.safetensors) nor a sparsify directory (cfg.json + sae.safetensors)"
    )]
    UnknownLayout { path: PathBuf },
    #[error("invalid configuration: `{key}` = {value}: {reason}")]
    Config {
        key: String,
        value: String,
        reason: String,
    },
    #[error("input has {len} values, which is not a whole number of rows of width d_in = {d_in}")]
    RowWidth { len: usize, d_in: usize },
    #[error("non-finite {what} ({value}) at step {step}")]
    NonFinite {
        step: u64,
        what: &'static str,
        value: f64,
    },
    #[error("training already finished: step {step} of {total_steps}")]
    Finished { step: u64, total_steps: u64 },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// A non-finite loss or gradient; the message names the last good checkpoint.
    #[error("training diverged: {0}")]
    Diverged(String),
    /// The caller asked a fit to stop.
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Artifact(#[from] monoscope_artifacts::ArtifactError),
    /// A burn device failed (a device trainer's computation or transfer), as text.
    #[error("device: {0}")]
    Device(String),
    /// A [`crate::SpliceEvaluator`] failed (the language model's error, as text).
    #[error("splice evaluation: {0}")]
    Splice(String),
}

impl SaeError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| SaeError::Io { path, source }
    }

    pub(crate) fn config(key: &str, value: impl ToString, reason: impl Into<String>) -> Self {
        SaeError::Config {
            key: key.to_owned(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
