//! The model's tokenizer: a thin wrapper over Hugging Face `tokenizers` that also knows the
//! BOS/EOS ids and the chat template, whichever file it came from.
//!
//! GGUF files carry no `tokenizer.json`; [`crate::gguf_tokenizer`] rebuilds an equivalent one
//! from the vocab, merges and pre-tokenizer name in the metadata.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::chat::{ChatMessage, ChatTemplate};
use crate::error::{FormatError, Result};

/// Text ⇄ token ids for one model.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source: PathBuf,
    bos_id: Option<u32>,
    eos_ids: Vec<u32>,
    add_bos: bool,
    specials: HashMap<String, u32>,
    chat: ChatTemplate,
}

impl Tokenizer {
    /// Wrap a built `tokenizers::Tokenizer`.
    ///
    /// `source` is the file it came from (for error messages), `add_bos` whether the model
    /// expects BOS before every sequence, `chat_template` the Jinja source, if any (only its
    /// family is recognised, see [`ChatTemplate::detect`]).
    pub fn new(
        inner: tokenizers::Tokenizer,
        source: impl Into<PathBuf>,
        bos_id: Option<u32>,
        eos_ids: Vec<u32>,
        add_bos: bool,
        chat_template: Option<&str>,
    ) -> Self {
        let specials = inner
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| (t.content, id))
            .collect();
        Self {
            inner,
            source: source.into(),
            bos_id,
            eos_ids,
            add_bos: add_bos && bos_id.is_some(),
            specials,
            chat: ChatTemplate::detect(chat_template),
        }
    }

    /// Load `tokenizer.json` from a Hugging Face directory.
    pub fn from_tokenizer_json(
        path: &Path,
        bos_id: Option<u32>,
        eos_ids: Vec<u32>,
        chat_template: Option<&str>,
    ) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| FormatError::Tokenizer {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        // HF tokenizers that want BOS add it in their post-processor; ask it instead of guessing.
        let add_bos = match (bos_id, inner.encode("", true)) {
            (Some(b), Ok(enc)) => enc.get_ids().first() == Some(&b),
            _ => false,
        };
        Ok(Self::new(
            inner,
            path,
            bos_id,
            eos_ids,
            add_bos,
            chat_template,
        ))
    }

    /// Token ids for `text`. Special tokens written in the text (`<|im_start|>`) become their
    /// single ids. With `add_bos`, BOS is prepended when the model has one (silently not
    /// otherwise, so callers can pass `true` for every model).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| self.err(format!("cannot encode {:?}: {e}", truncate(text))))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos && let Some(b) = self.bos_id {
            ids.push(b);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text for `ids`, special tokens included. Byte-level and `<0xNN>` byte-fallback tokens
    /// are joined back into UTF-8; bytes that do not form valid UTF-8 become U+FFFD; ids
    /// outside the vocabulary are skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, false).unwrap_or_default()
    }

    /// Display text of one token, e.g. `" Paris"`.
    pub fn token_str(&self, id: u32) -> String {
        self.decode(&[id])
    }

    /// The raw vocabulary entry for `id` (`"ĠParis"` in byte-level BPE).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a raw vocabulary entry.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Whether the model was trained with BOS at the start of every sequence.
    pub fn adds_bos_by_default(&self) -> bool {
        self.add_bos
    }

    /// The id of a special (added/control) token by its text, e.g. `"<|im_end|>"`.
    pub fn special_token_id(&self, text: &str) -> Option<u32> {
        self.specials.get(text).copied()
    }

    /// Which chat template family was recognised.
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.chat
    }

    /// Render a conversation as the model's chat format; see [`ChatTemplate::render`].
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> String {
        self.chat.render(messages, add_generation_prompt)
    }

    /// The wrapped `tokenizers` tokenizer, for batch encoding or offsets.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    fn err(&self, detail: String) -> FormatError {
        FormatError::Tokenizer {
            path: self.source.clone(),
            detail,
        }
    }
}

// Summarised: the derived form would print the whole vocabulary.
impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_ids", &self.eos_ids)
            .field("add_bos", &self.add_bos)
            .field("chat", &self.chat)
            .finish_non_exhaustive()
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}
