use std::path::PathBuf;

/// Everything that can go wrong building or serving a site.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Artifact(#[from] monoscope_artifacts::ArtifactError),
    #[error(transparent)]
    Sae(#[from] monoscope_sae::SaeError),
    #[error("{0}")]
    Invalid(String),
}

impl BrowserError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BrowserError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, BrowserError>;
