//! Rebuild a `tokenizers::Tokenizer` from a GGUF file's `tokenizer.ggml.*` metadata, matching
//! what llama.cpp does for the same file.
//!
//! Supported:
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE (Llama 3, SmolLM, Qwen2, GPT-2). The
//!   pre-tokenizer is chosen from `tokenizer.ggml.pre` with the regexes llama.cpp uses
//!   (`llama-vocab.cpp`), applied in sequence as llama.cpp's `unicode_regex_split` does.
//! - `tokenizer.ggml.model = "llama"`: SentencePiece (Llama 2, Mistral), rebuilt the way
//!   Hugging Face converts it: BPE whose merges are ranked by the merged piece's score, `▁` for
//!   spaces, and `<0xNN>` byte fallback.

use std::path::Path;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{Prepend, Replace};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

use crate::error::{FormatError, Result};
use crate::gguf::{GgufFile, MetadataValue};
use crate::tokenizer::Tokenizer;

/// GPT-2's pre-tokenizer regex.
pub const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's, as adapted by llama.cpp (case-insensitive contractions spelled out).
pub const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: Llama 3's with single digits.
pub const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The regex sequence llama.cpp applies for a `tokenizer.ggml.pre` value, and whether BPE
/// should take a whole pre-token from the vocab before merging (`ignore_merges`, Llama 3).
/// Unknown or absent values fall back to GPT-2's regex.
pub fn pre_tokenizer_regexes(pre: Option<&str>) -> (Vec<&'static str>, bool) {
    match pre.unwrap_or("gpt2") {
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            (vec![r"\p{N}", GPT2_REGEX], false)
        }
        "llama-bpe" | "llama3" | "llama-v3" | "falcon3" | "pixtral" | "dbrx" | "smaug-bpe" => {
            (vec![LLAMA3_REGEX], true)
        }
        "qwen2" | "stablelm2" | "deepseek-r1-qwen" | "megrez" => (vec![QWEN2_REGEX], false),
        _ => (vec![GPT2_REGEX], false),
    }
}

// llama.cpp token types (`llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

fn tok_err(path: &Path, detail: impl Into<String>) -> FormatError {
    FormatError::Tokenizer {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn string_array<'a>(g: &'a GgufFile, key: &str) -> Result<Vec<&'a str>> {
    let arr = g
        .require(key)?
        .as_array()
        .ok_or_else(|| g.bad_value(key, "expected an array of strings"))?;
    arr.iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| g.bad_value(key, format!("array element {v:?} is not a string")))
        })
        .collect()
}

/// Build the tokenizer described by `g`'s metadata.
pub fn tokenizer_from_gguf(g: &GgufFile) -> Result<Tokenizer> {
    let path = g.path();
    let tokens = string_array(g, "tokenizer.ggml.tokens")?;
    let model = g.opt_str("tokenizer.ggml.model")?;
    let (mut inner, default_add_bos) = match model {
        Some("gpt2") => (byte_level_bpe(g, &tokens)?, false),
        Some("llama") => (sentencepiece_bpe(g, &tokens)?, true),
        other => {
            return Err(tok_err(
                path,
                format!(
                    "`tokenizer.ggml.model` = {other:?}: supported are \"gpt2\" (byte-level BPE) and \"llama\" (SentencePiece)"
                ),
            ));
        }
    };

    // Control tokens (`<|im_start|>`) and user-defined ones are matched whole in the input,
    // before pre-tokenization, as llama.cpp does with `parse_special`.
    if let Some(types) = g
        .get("tokenizer.ggml.token_type")
        .and_then(MetadataValue::as_array)
    {
        let mut specials = Vec::new();
        for (i, ty) in types.iter().enumerate() {
            let ty = ty.as_f64().map(|t| t as i64);
            let special = match ty {
                Some(TOKEN_TYPE_CONTROL) => true,
                Some(TOKEN_TYPE_USER_DEFINED) => false,
                _ => continue,
            };
            if let Some(t) = tokens.get(i) {
                specials.push(AddedToken::from(t.to_string(), special).normalized(false));
            }
        }
        inner.add_special_tokens(&specials);
    }

    let id = |key: &str| -> Result<Option<u32>> {
        Ok(g.opt_u64(key)?.and_then(|v| u32::try_from(v).ok()))
    };
    let bos = id("tokenizer.ggml.bos_token_id")?;
    let mut eos_ids = Vec::new();
    for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"] {
        if let Some(e) = id(key)?
            && !eos_ids.contains(&e)
        {
            eos_ids.push(e);
        }
    }
    let add_bos = g
        .get("tokenizer.ggml.add_bos_token")
        .and_then(MetadataValue::as_bool)
        .unwrap_or(default_add_bos);
    let template = g.opt_str("tokenizer.chat_template")?;
    Ok(Tokenizer::new(inner, path, bos, eos_ids, add_bos, template))
}

fn vocab_of(tokens: &[&str]) -> Vocab {
    tokens
        .iter()
        .enumerate()
        .rev() // on duplicate entries keep the first id, as llama.cpp's lookup does
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect()
}

fn byte_level_bpe(g: &GgufFile, tokens: &[&str]) -> Result<tokenizers::Tokenizer> {
    let path = g.path();
    let merges = string_array(g, "tokenizer.ggml.merges")?;
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    g.bad_value("tokenizer.ggml.merges", format!("merge {m:?} has no space"))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let pre = g.opt_str("tokenizer.ggml.pre")?;
    let (regexes, ignore_merges) = pre_tokenizer_regexes(pre);
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_of(tokens), merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| tok_err(path, format!("building BPE: {e}")))?;

    let mut pre_toks: Vec<PreTokenizerWrapper> = Vec::new();
    for r in regexes {
        let split = Split::new(
            SplitPattern::Regex(r.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| tok_err(path, format!("pre-tokenizer regex {r:?}: {e}")))?;
        pre_toks.push(split.into());
    }
    // The regexes above already split the text; ByteLevel only maps bytes to its alphabet.
    pre_toks.push(ByteLevel::new(false, false, false).into());

    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(Sequence::new(pre_toks)));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(inner)
}

/// SentencePiece vocab + scores as a BPE: a merge (a, b) exists wherever both halves of a
/// piece are pieces, ranked by the merged piece's score (higher merges first), which is the
/// order SentencePiece's greedy highest-score merging applies them.
fn sentencepiece_bpe(g: &GgufFile, tokens: &[&str]) -> Result<tokenizers::Tokenizer> {
    let path = g.path();
    let key = "tokenizer.ggml.scores";
    let scores: Vec<f64> = g
        .require(key)?
        .as_array()
        .ok_or_else(|| g.bad_value(key, "expected an array of numbers"))?
        .iter()
        .map(|v| {
            v.as_f64()
                .ok_or_else(|| g.bad_value(key, format!("{v:?} is not a number")))
        })
        .collect::<Result<_>>()?;
    let vocab = vocab_of(tokens);
    let mut ranked: Vec<(f64, u32, u32, &str, &str)> = Vec::new();
    for (i, piece) in tokens.iter().enumerate() {
        let score = scores.get(i).copied().unwrap_or(0.0);
        for (cut, _) in piece.char_indices().skip(1) {
            let (a, b) = piece.split_at(cut);
            if let (Some(&ia), Some(&ib)) = (vocab.get(a), vocab.get(b)) {
                ranked.push((score, ia, ib, a, b));
            }
        }
    }
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then((x.1, x.2).cmp(&(y.1, y.2))));
    let merges = ranked
        .into_iter()
        .map(|(_, _, _, a, b)| (a.to_string(), b.to_string()))
        .collect();
    let unk = g
        .opt_u64("tokenizer.ggml.unknown_token_id")?
        .and_then(|i| tokens.get(i as usize))
        .map_or("<unk>", |t| t);
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(unk.to_string())
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(|e| tok_err(path, format!("building SentencePiece BPE: {e}")))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    let prefix = g
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(MetadataValue::as_bool)
        .unwrap_or(true);
    let mut norms: Vec<NormalizerWrapper> = Vec::new();
    if prefix {
        norms.push(Prepend::new("▁".into()).into());
    }
    let replace = Replace::new(" ", "▁").map_err(|e| tok_err(path, e.to_string()))?;
    norms.push(replace.into());
    inner.with_normalizer(Some(tokenizers::normalizers::Sequence::new(norms)));
    let unspace = Replace::new("▁", " ").map_err(|e| tok_err(path, e.to_string()))?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        unspace.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    inner.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(inner)
}
