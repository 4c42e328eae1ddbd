use std::path::PathBuf;

/// Everything that can go wrong in this crate; messages name the file, key and value at fault.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Bad input data or a bad parameter, described in full.
    #[error("{0}")]
    Invalid(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: line {line}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The run was cancelled while this crate was working.
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Sae(#[from] monoscope_sae::SaeError),
}

impl ClusterError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ClusterError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<ClusterError> for monoscope_core::StageError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Invalid(message) => monoscope_core::StageError::Invalid(message),
            ClusterError::Cancelled => monoscope_core::StageError::Cancelled,
            ClusterError::Io { path, source } => monoscope_core::StageError::io(path, source),
            other => monoscope_core::StageError::other(other),
        }
    }
}
