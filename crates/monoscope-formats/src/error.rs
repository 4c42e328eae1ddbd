//! The crate's one error type. Every variant names the file it came from and the offending
//! key, tensor or value, so that a user can act on the message without a debugger.

use std::path::PathBuf;

/// Anything that can go wrong while reading a checkpoint or tokenising text.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The path is neither a GGUF file nor a Hugging Face model directory.
    #[error("{}: not a model: {detail}", path.display())]
    NotAModel { path: PathBuf, detail: String },

    /// The GGUF container itself is malformed (bad header, string, array, offset...).
    #[error("{}: malformed GGUF: {detail}", path.display())]
    Gguf { path: PathBuf, detail: String },

    #[error(
        "{}: tensor `{tensor}` has unknown or unsupported ggml type id {type_id}",
        path.display()
    )]
    UnknownTensorType {
        path: PathBuf,
        tensor: String,
        type_id: u32,
    },

    #[error(
        "{}: tensor `{tensor}` is truncated: needs {expected} bytes of data but the file holds only {actual}",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        tensor: String,
        expected: u64,
        actual: u64,
    },

    #[error("{}: missing metadata key `{key}`", path.display())]
    MissingKey { path: PathBuf, key: String },

    #[error("{}: bad value for `{key}`: {detail}", path.display())]
    BadValue {
        path: PathBuf,
        key: String,
        detail: String,
    },

    /// A setting that changes the model's arithmetic and that monoscope does not implement:
    /// refused rather than ignored, so that no model computes different numbers silently.
    #[error("{}: `{key}` = {value} is not supported ({detail})", path.display())]
    UnsupportedSetting {
        path: PathBuf,
        key: String,
        value: String,
        detail: String,
    },

    #[error("{}: unsupported architecture `{arch}` (supported: {supported})", path.display())]
    UnsupportedArchitecture {
        path: PathBuf,
        arch: String,
        supported: &'static str,
    },

    #[error("{}: missing tensor `{tensor}`", path.display())]
    MissingTensor { path: PathBuf, tensor: String },

    #[error(
        "{}: tensor `{tensor}` has shape {actual:?}, expected {expected:?}",
        path.display()
    )]
    ShapeMismatch {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },

    #[error("{}: tensor `{tensor}` has unsupported dtype {dtype}", path.display())]
    UnsupportedDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },

    #[error("{}: shard `{shard}` listed in the index is missing", path.display())]
    MissingShard { path: PathBuf, shard: String },

    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("{}: invalid safetensors: {detail}", path.display())]
    Safetensors { path: PathBuf, detail: String },

    /// Building or running the tokenizer failed; `path` is where the tokenizer came from.
    #[error("{}: tokenizer: {detail}", path.display())]
    Tokenizer { path: PathBuf, detail: String },

    /// The model's chat template does not compile, or cannot render a conversation (it raised
    /// an error, e.g. "System role not supported"); `path` is where the tokenizer came from.
    #[error("{}: chat template: {detail}", path.display())]
    ChatTemplate { path: PathBuf, detail: String },
}

impl FormatError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;
