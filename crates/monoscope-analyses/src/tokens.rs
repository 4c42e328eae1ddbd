//! The tokenizer of a model without its weights: these analyses only turn token ids into text
//! and terms into token ids, so building the transformer (and hashing its weights) would be
//! wasted.

use std::path::Path;

use monoscope_formats::{FormatError, GgufFile, Tokenizer};

/// The tokenizer of a model: a GGUF file's metadata, or a Hugging Face directory's
/// `tokenizer.json`.
pub fn load_tokenizer(model: &Path) -> Result<Tokenizer, FormatError> {
    if model.is_dir() {
        // BOS and EOS ids live in the model's config; neither decoding single tokens nor
        // encoding terms without BOS needs them.
        return Tokenizer::from_tokenizer_json(
            &model.join("tokenizer.json"),
            None,
            Vec::new(),
            None,
        );
    }
    let gguf = GgufFile::open(model)?;
    monoscope_formats::gguf_tokenizer::tokenizer_from_gguf(&gguf)
}

/// The model whose tokenizer a stage uses: the `model` input when connected, else the
/// stage's `model` key (a path or a known name, fetched on first use), else none.
pub fn model_input(
    ctx: &mut monoscope_core::StageContext<'_>,
    configured: Option<&str>,
) -> Result<Option<std::path::PathBuf>, monoscope_core::StageError> {
    if let Some(artifact) = ctx.optional_artifact(monoscope_core::port_names::MODEL)? {
        return Ok(Some(artifact.path));
    }
    configured
        .map(|spec| monoscope_fetch::resolve_model(spec).map_err(monoscope_core::StageError::other))
        .transpose()
}

/// Text for a token id, or the id itself in brackets when there is no tokenizer.
pub fn token_text(tokenizer: Option<&Tokenizer>, id: u32) -> String {
    match tokenizer {
        Some(t) => t.token_str(id),
        None => format!("[{id}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gguf_models_tokenizer_loads_without_its_weights() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        monoscope_formats::testing::TinyLlama::default()
            .write(&path)
            .unwrap();
        let tokenizer = load_tokenizer(&path).unwrap();
        let ids = tokenizer.encode(" hello", false).unwrap();
        assert_eq!(ids.len(), 1, "{ids:?}");
        assert_eq!(token_text(Some(&tokenizer), ids[0]), " hello");
        assert_eq!(token_text(None, 7), "[7]");
        let err = load_tokenizer(&dir.path().join("missing.gguf")).unwrap_err();
        assert!(err.to_string().contains("missing.gguf"), "{err}");
    }
}
