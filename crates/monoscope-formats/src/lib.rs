//! Model checkpoints in the formats users already have, loaded into one format-neutral
//! [`LoadedModel`]: hyper-parameters, weights under canonical names in their stored float type,
//! and the tokenizer.
//!
//! - [`load_model`]: the entry point; a GGUF file (recognised by its magic) or a Hugging Face
//!   directory (`config.json` + safetensors).
//! - [`model`]: the neutral types and the canonical tensor-name table; [`host_tensor`]: a
//!   weight in the checkpoint's own element type.
//! - [`gguf`], [`quant`]: the GGUF container and ggml block formats (reader and dequantisers);
//!   `gguf_write` (feature `testing`): a small writer used to build test models in the real
//!   format.
//! - [`gguf_model`], [`hf`]: the two loaders.
//! - [`tokenizer`], [`gguf_tokenizer`], [`chat`]: text ⇄ ids and chat templates.
//! - `testing` (feature `testing`): tiny random-weight GGUF models, the real-model test rule
//!   and the fuzz tests' support (counting allocator, file mutations), for tests across the
//!   workspace.
//! - [`error`]: the crate's one error type, [`FormatError`].

pub mod chat;
pub mod error;
pub mod gguf;
pub mod gguf_model;
pub mod gguf_tokenizer;
#[cfg(feature = "testing")]
pub mod gguf_write;
pub mod hf;
mod hf_config;
pub mod host_tensor;
mod loader;
pub mod model;
pub mod quant;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tokenizer;

use std::path::Path;

pub use chat::{ChatMessage, ChatTemplate, TemplateTokens};
pub use error::FormatError;
pub use gguf::{GgufFile, GgufTensorInfo, MetadataValue};
pub use gguf_model::load_gguf;
#[cfg(feature = "testing")]
pub use gguf_write::GgufWriter;
pub use hf::load_hf_dir;
pub use model::{
    Architecture, BlockConfig, HostData, HostTensor, LoadedModel, MlpActivation, ModelConfig,
    NormPlacement, QkNorm, RopeLayout, RopeScaling,
};
pub use quant::GgmlType;
pub use tokenizer::Tokenizer;

/// Load a checkpoint: a GGUF file, or a Hugging Face model directory.
pub fn load_model(path: &Path) -> Result<LoadedModel, FormatError> {
    if path.is_dir() {
        return load_hf_dir(path);
    }
    if !path.exists() {
        return Err(FormatError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ));
    }
    if gguf::is_gguf(path) {
        return load_gguf(path);
    }
    Err(FormatError::NotAModel {
        path: path.to_path_buf(),
        detail: "neither a GGUF file (no `GGUF` magic) nor a directory with config.json".into(),
    })
}
