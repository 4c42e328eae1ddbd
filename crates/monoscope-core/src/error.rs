use std::path::PathBuf;

/// Why a stage stopped without finishing.
///
/// The executor adds the stage id when it reports the error, so messages here need not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The run was cancelled (Ctrl-C, or another stage failed). Not a failure of this stage.
    #[error("cancelled")]
    Cancelled,
    /// The stage panicked; the executor turns the panic payload into this error.
    #[error("panicked: {0}")]
    Panicked(String),
    /// A port was used that the stage's description does not declare, or an input was malformed.
    #[error("port `{port}`: {message}")]
    Port { port: String, message: String },
    /// An I/O operation on a named file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Bad input data or configuration discovered while running (the message names it).
    #[error("{0}")]
    Invalid(String),
    /// Any other error from a library the stage uses.
    #[error(transparent)]
    Other(#[from] Box<dyn std::error::Error + Send + Sync>),
}

impl StageError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StageError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        StageError::Invalid(message.into())
    }

    /// Wraps any error type; the executor prints its whole source chain.
    pub fn other(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        StageError::Other(Box::new(error))
    }
}

impl From<monoscope_artifacts::ArtifactError> for StageError {
    fn from(error: monoscope_artifacts::ArtifactError) -> Self {
        StageError::other(error)
    }
}
