//! The crate's one error type. Messages name the file, key and value involved.

use std::path::PathBuf;

/// Everything that can go wrong while choosing features, steering and writing a report.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// A configuration value that cannot work (key, value, why).
    #[error("`{key}` = {value}: {reason}")]
    Config {
        key: String,
        value: String,
        reason: String,
    },
    /// Problems [`monoscope_core::StageConfig::validate`] found, one `key: message` per line.
    #[error("invalid steer configuration:\n{0}")]
    InvalidConfig(String),
    /// A feature selection (`123`, `label:…`, `text:…`) that finds nothing or cannot be run.
    #[error("feature `{spec}`: {reason}")]
    Selection { spec: String, reason: String },
    /// The run was cancelled between two model calls.
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Model(#[from] monoscope_lm::LmError),
    #[error(transparent)]
    Sae(#[from] monoscope_sae::SaeError),
    #[error(transparent)]
    Tokenizer(#[from] monoscope_formats::FormatError),
    #[error(transparent)]
    Fetch(#[from] monoscope_fetch::FetchError),
    #[error(transparent)]
    Artifact(#[from] monoscope_artifacts::ArtifactError),
}

impl SteerError {
    pub(crate) fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        SteerError::File {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn config(key: &str, value: impl ToString, reason: impl Into<String>) -> Self {
        SteerError::Config {
            key: key.to_owned(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn selection(spec: &str, reason: impl Into<String>) -> Self {
        SteerError::Selection {
            spec: spec.to_owned(),
            reason: reason.into(),
        }
    }
}
