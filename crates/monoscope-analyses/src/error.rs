/// Everything that can go wrong in this crate; messages name the file, key and value at fault.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// Bad input data or a bad parameter, described in full.
    #[error("{0}")]
    Invalid(String),
    /// The run was cancelled while this crate was working.
    #[error("cancelled")]
    Cancelled,
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Sae(#[from] monoscope_sae::SaeError),
    #[error(transparent)]
    Store(#[from] monoscope_store::StoreError),
    #[error(transparent)]
    Format(#[from] monoscope_formats::FormatError),
    #[error(transparent)]
    Artifact(#[from] monoscope_artifacts::ArtifactError),
    #[error(transparent)]
    Cluster(#[from] monoscope_cluster::ClusterError),
}

impl AnalysisError {
    pub fn io(path: impl Into<std::path::PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| AnalysisError::Io { path, source }
    }
}

impl From<AnalysisError> for monoscope_core::StageError {
    fn from(e: AnalysisError) -> Self {
        match e {
            AnalysisError::Invalid(message) => monoscope_core::StageError::Invalid(message),
            AnalysisError::Cancelled => monoscope_core::StageError::Cancelled,
            AnalysisError::Cluster(monoscope_cluster::ClusterError::Cancelled) => {
                monoscope_core::StageError::Cancelled
            }
            other => monoscope_core::StageError::other(other),
        }
    }
}
