//! The capture stage's one error type.

use std::path::PathBuf;

use monoscope_core::StageError;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("corpus {}: {message}", path.display())]
    Corpus { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Model(#[from] monoscope_lm::LmError),
    #[error(transparent)]
    Store(#[from] monoscope_store::StoreError),
    #[error(transparent)]
    Fetch(#[from] monoscope_fetch::FetchError),
}

impl From<CaptureError> for StageError {
    fn from(e: CaptureError) -> Self {
        StageError::other(e)
    }
}
