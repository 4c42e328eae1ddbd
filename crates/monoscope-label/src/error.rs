/// Everything that can go wrong in this crate. Per-feature failures of an explainer (an HTTP
/// error after its retries, an empty or unparsable answer) are values of this type too: the
/// stage records their message as the feature's skip reason and goes on.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// A configuration value or an input that cannot be used (the message names it).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Artifact(#[from] monoscope_artifacts::ArtifactError),
    #[error(transparent)]
    Store(#[from] monoscope_store::StoreError),
    #[error(transparent)]
    Sae(#[from] monoscope_sae::SaeError),
    #[error(transparent)]
    Model(#[from] monoscope_lm::LmError),
    #[error(transparent)]
    Device(#[from] monoscope_device::DeviceError),
    #[error(transparent)]
    Format(#[from] monoscope_formats::FormatError),
    #[error(transparent)]
    Fetch(#[from] monoscope_fetch::FetchError),
    /// An HTTP explainer request that failed for good (after retries where they apply).
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    /// The explainer answered, but with nothing usable.
    #[error("explainer answer unusable: {0}")]
    Answer(String),
    /// The explainer failed for more of the requested features than the stage allows.
    #[error(
        "the explainer failed for {failed} of {requested} features, more than \
         max_failed_fraction = {allowed} allows ({reasons}); the {obtained} labels obtained are \
         in {}{cache}",
        labels.display(),
        cache = if *cached { " and in the response cache, so a rerun asks only for the missing ones" } else { "; set cache = true so that a rerun asks only for the missing ones" }
    )]
    ExplainerFailed {
        failed: usize,
        requested: usize,
        obtained: usize,
        allowed: f64,
        /// Each skip reason with its count.
        reasons: String,
        labels: std::path::PathBuf,
        cached: bool,
    },
    #[error("cancelled")]
    Cancelled,
}

impl From<LabelError> for monoscope_core::StageError {
    fn from(e: LabelError) -> Self {
        match e {
            LabelError::Cancelled => monoscope_core::StageError::Cancelled,
            other => monoscope_core::StageError::other(other),
        }
    }
}
