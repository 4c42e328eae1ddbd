/// Everything that can go wrong in this crate; messages name the file, key and value at fault.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Bad input data or a bad parameter, described in full.
    #[error("{0}")]
    Invalid(String),
    /// The run was cancelled while this crate was working.
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Sae(#[from] monoscope_sae::SaeError),
    #[error(transparent)]
    Artifact(#[from] monoscope_artifacts::ArtifactError),
}

impl From<ClusterError> for monoscope_core::StageError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Invalid(message) => monoscope_core::StageError::Invalid(message),
            ClusterError::Cancelled => monoscope_core::StageError::Cancelled,
            other => monoscope_core::StageError::other(other),
        }
    }
}
