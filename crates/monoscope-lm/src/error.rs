//! The crate's one error type. Messages name the hook, tensor or value at fault so that a caller
//! can act on them without reading this crate.

/// Anything that can go wrong while building, running or sampling from a model.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    /// Reading the checkpoint failed (GGUF / Hugging Face loader).
    #[error(transparent)]
    Format(#[from] monoscope_formats::FormatError),

    /// The string is not a TransformerLens-style hook name this crate knows.
    #[error("invalid hook name `{name}`: {reason}")]
    InvalidHook { name: String, reason: String },

    /// The hook names a layer the model does not have.
    #[error(
        "hook `{name}` refers to layer {layer}, but the model has {n_layers} layers (valid layers: 0..={})",
        n_layers.saturating_sub(1)
    )]
    HookLayerOutOfRange {
        name: String,
        layer: usize,
        n_layers: usize,
    },

    /// A weight the architecture needs is absent from the checkpoint.
    #[error("missing tensor `{name}` (needed by the {architecture} architecture)")]
    MissingTensor { name: String, architecture: String },

    /// A weight has the wrong shape for the configuration.
    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },

    /// The configuration is inconsistent or asks for something this crate does not implement.
    #[error("unsupported model configuration: {0}")]
    Config(String),

    /// An input that must be non-empty was empty.
    #[error("empty input: {0}")]
    EmptyInput(String),

    /// Rows of a batch have different lengths, or a padding mask does not match the ids.
    #[error("malformed batch: {0}")]
    Batch(String),

    /// A token id is not in the vocabulary.
    #[error(
        "token id {id} at batch row {row}, position {position} is outside the vocabulary of {vocab_size}"
    )]
    TokenOutOfRange {
        id: u32,
        row: usize,
        position: usize,
        vocab_size: usize,
    },

    /// The sequence is longer than the model's learned position table (GPT-2).
    #[error("position {position} exceeds the model's maximum of {max_positions} positions")]
    ContextTooLong {
        position: usize,
        max_positions: usize,
    },

    /// An intervention returned a tensor of another shape than the activation it was given.
    #[error("intervention at `{hook}` returned shape {actual:?}, expected {expected:?}")]
    InterventionShape {
        hook: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },

    /// A sampling parameter is out of its valid range.
    #[error("invalid sampling parameter `{name}` = {value}: {reason}")]
    Sampling {
        name: &'static str,
        value: f64,
        reason: &'static str,
    },

    /// A [`crate::ModelOptions`] setting the device cannot run.
    #[error("`{name}` = {value} is not supported here: {reason}")]
    Setting {
        name: &'static str,
        value: String,
        reason: String,
    },

    /// Reading a tensor back to the host failed (backend error).
    #[error("reading `{what}` back from the device: {detail}")]
    TensorRead { what: String, detail: String },
}
