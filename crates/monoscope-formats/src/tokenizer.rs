//! The model's tokenizer: a thin wrapper over Hugging Face `tokenizers` that also knows the
//! BOS/EOS ids and the chat template, whichever file it came from.
//!
//! GGUF files carry no `tokenizer.json`; [`crate::gguf_tokenizer`] rebuilds an equivalent one
//! from the vocab, merges and pre-tokenizer name in the metadata.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::chat::{ChatMessage, ChatTemplate, TemplateTokens};
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
    template_tokens: TemplateTokens,
}

impl Tokenizer {
    /// Wrap a built `tokenizers::Tokenizer`.
    ///
    /// `source` is the file it came from (for error messages), `add_bos` whether the model
    /// expects BOS before every sequence, `chat_template` the Jinja source, if any: compiled
    /// here, once; one that does not compile is replaced by the plain format with a warning
    /// (see [`ChatTemplate::from_source`]). The template sees the vocabulary entries of the BOS
    /// id and the first EOS id as `bos_token` and `eos_token`; see
    /// [`with_template_tokens`](Self::with_template_tokens) to name others.
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
        let source = source.into();
        let token_text =
            |id: Option<u32>| id.and_then(|i| inner.id_to_token(i)).unwrap_or_default();
        let template_tokens = TemplateTokens {
            bos_token: token_text(bos_id),
            eos_token: token_text(eos_ids.first().copied()),
        };
        Self {
            chat: ChatTemplate::from_source(chat_template, &source),
            inner,
            source,
            bos_id,
            eos_ids,
            add_bos: add_bos && bos_id.is_some(),
            specials,
            template_tokens,
        }
    }

    /// Set the `bos_token` and `eos_token` strings the chat template sees (a Hugging Face
    /// directory names them in `tokenizer_config.json`, which may differ from the ids in
    /// `config.json`).
    pub fn with_template_tokens(mut self, tokens: TemplateTokens) -> Self {
        self.template_tokens = tokens;
        self
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

    /// The model's chat template (or [`ChatTemplate::Plain`]).
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.chat
    }

    /// The `bos_token` and `eos_token` strings the chat template sees.
    pub fn template_tokens(&self) -> &TemplateTokens {
        &self.template_tokens
    }

    /// Render a conversation in the model's chat format, as transformers'
    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)` does; see
    /// [`ChatTemplate::render`]. Fails when the template rejects the conversation (Gemma's
    /// templates reject a system message, for instance).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.chat
            .render(messages, add_generation_prompt, &self.template_tokens)
    }

    /// Token ids of a conversation in the model's chat format: the rendered text encoded without
    /// adding anything (templates write their own BOS, like Llama 3's and Gemma's), then BOS
    /// prepended when the model expects one and the template did not write it.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        self.encode_chat_text(&self.apply_chat_template(messages, add_generation_prompt)?)
    }

    /// Token ids of text that starts with a rendered conversation (from
    /// [`apply_chat_template`](Self::apply_chat_template), perhaps with an assistant prefill
    /// appended), as [`encode_chat`](Self::encode_chat) encodes it.
    pub fn encode_chat_text(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text, false)?;
        if let Some(bos) = self.bos_id
            && self.add_bos
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
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
