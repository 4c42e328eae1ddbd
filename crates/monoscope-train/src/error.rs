//! The train stage's one error type.

use monoscope_core::StageError;

#[derive(Debug, thiserror::Error)]
pub enum TrainStageError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] monoscope_store::StoreError),
    #[error(transparent)]
    Sae(#[from] monoscope_sae::SaeError),
    #[error(transparent)]
    Model(#[from] monoscope_lm::LmError),
    /// A port's error (cancellation above all), passed through unchanged.
    #[error(transparent)]
    Stage(#[from] StageError),
}

impl From<TrainStageError> for StageError {
    fn from(e: TrainStageError) -> Self {
        match e {
            TrainStageError::Stage(e) => e,
            TrainStageError::Sae(monoscope_sae::SaeError::Cancelled) => StageError::Cancelled,
            e => StageError::other(e),
        }
    }
}
