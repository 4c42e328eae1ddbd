//! Checks against the real default model, SmolLM2-135M-Instruct Q4_1. Skipped (with a message)
//! when the file is not in the cache; the fetch component puts it there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fancy_regex::Regex;
use monoscope_formats::testing::byte_to_unicode;
use monoscope_formats::{
    Architecture, ChatMessage, GgufFile, LoadedModel, MetadataValue, RopeLayout, load_model,
};

fn model_path() -> Option<PathBuf> {
    let cache = std::env::var_os("MONOSCOPE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/monoscope")))?;
    let p = cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let how = "cargo xtask pipeline run pipelines/fetch.toml";
    monoscope_formats::testing::real_file_present(&p, how).then_some(p)
}

/// Loaded once for all tests in this file: dequantising 135M weights takes a moment.
fn model() -> Option<&'static LoadedModel> {
    static M: OnceLock<Option<LoadedModel>> = OnceLock::new();
    M.get_or_init(|| {
        let p = model_path()?;
        let t = std::time::Instant::now();
        let m = load_model(&p).expect("load the default model");
        eprintln!("loaded {} in {:.2?}", p.display(), t.elapsed());
        Some(m)
    })
    .as_ref()
}

#[test]
fn config_matches_smollm2() {
    let Some(m) = model() else { return };
    let c = &m.config;
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(
        (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim),
        (30, 576, 9, 3, 64)
    );
    assert_eq!((c.d_ff, c.vocab_size, c.max_positions), (1536, 49152, 8192));
    assert_eq!(c.rope_theta, 1e5);
    assert!((c.norm_eps - 1e-5).abs() < 1e-12);
    assert_eq!(c.rope_layout, RopeLayout::AdjacentPairs);
    assert!(c.tied_embeddings);
    assert!(!m.tensors.contains_key("lm_head.weight"));
    assert_eq!(c.bos_token_id, Some(1));
    assert_eq!(c.eos_token_ids, vec![2]);
    assert_eq!(m.name, "SmolLM2-135M-Instruct");
    assert_eq!(
        m.sha256,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    // 1 embedding + 9 per layer + final norm.
    assert_eq!(m.tensors.len(), 1 + 30 * 9 + 1);
    assert_eq!(m.tensors["layers.29.k_proj.weight"].shape, vec![192, 576]);
    assert_eq!(
        m.tensors["layers.0.down_proj.weight"].shape,
        vec![576, 1536]
    );
    assert_eq!(m.tensors["embed_tokens"].shape, vec![49152, 576]);
}

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Dequantised values equal a naive per-element decode of the raw bytes, in the right
/// orientation (row r of the matrix is the r-th run of blocks).
#[test]
fn dequant_matches_raw_blocks() {
    let (Some(m), Some(p)) = (model(), model_path()) else {
        return;
    };
    let g = GgufFile::open(&p).unwrap();
    // Q8_0 embedding, row 9000: block = 2-byte f16 scale + 32 int8.
    let raw = g.tensor_bytes("token_embd.weight").unwrap();
    let e = &m.tensors["embed_tokens"].to_f32();
    for col in 0..576 {
        let i = 9000 * 576 + col;
        let blk = &raw[(i / 32) * 34..];
        let want = f16(blk) * f32::from(blk[2 + i % 32] as i8);
        assert_eq!(e[i], want, "embed[9000][{col}]");
    }
    // Q4_1 q_proj of layer 3, row 100: block = f16 d, f16 m, 16 bytes of nibble pairs.
    let raw = g.tensor_bytes("blk.3.attn_q.weight").unwrap();
    let q = &m.tensors["layers.3.q_proj.weight"].to_f32();
    for col in 0..576 {
        let i = 100 * 576 + col;
        let blk = &raw[(i / 32) * 20..];
        let j = i % 32;
        let byte = blk[4 + j % 16];
        let nib = if j < 16 { byte & 15 } else { byte >> 4 };
        let want = f16(blk) * f32::from(nib) + f16(&blk[2..]);
        assert_eq!(q[i], want, "q_proj[100][{col}]");
    }
    // F32 norm copied verbatim.
    let raw = g.tensor_bytes("blk.7.ffn_norm.weight").unwrap();
    let n = &m.tensors["layers.7.mlp_norm.weight"].to_f32();
    for (k, c) in raw.chunks_exact(4).enumerate() {
        assert_eq!(n[k], f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    }
}

const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Split keeping both matches and the text between them.
fn isolate(re: &Regex, s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut last = 0;
    for m in re.find_iter(s) {
        let m = m.unwrap();
        if m.start() > last {
            out.push(s[last..m.start()].to_string());
        }
        out.push(m.as_str().to_string());
        last = m.end();
    }
    if last < s.len() {
        out.push(s[last..].to_string());
    }
    out
}

/// An independent, slow BPE over the GGUF's own vocab and merges: pre-tokenize as llama.cpp
/// does for `smollm` (digits, then the GPT-2 regex), map bytes to symbols, then repeatedly
/// merge the adjacent pair of lowest rank.
fn naive_bpe(g: &GgufFile, text: &str) -> Vec<u32> {
    let strs = |k: &str| -> Vec<String> {
        g.get(k)
            .and_then(MetadataValue::as_array)
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let tokens = strs("tokenizer.ggml.tokens");
    let vocab: HashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let merges = strs("tokenizer.ggml.merges");
    let rank: HashMap<(String, String), usize> = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (a, b) = m.split_once(' ').unwrap();
            ((a.to_string(), b.to_string()), i)
        })
        .collect();
    let b2u = byte_to_unicode();
    let digits = Regex::new(r"\p{N}").unwrap();
    let gpt2 = Regex::new(GPT2_RE).unwrap();
    let mut ids = Vec::new();
    for piece in isolate(&digits, text) {
        for word in isolate(&gpt2, &piece) {
            let mut syms: Vec<String> = word.bytes().map(|b| b2u[b as usize].to_string()).collect();
            loop {
                let best = (0..syms.len().saturating_sub(1))
                    .filter_map(|i| {
                        rank.get(&(syms[i].clone(), syms[i + 1].clone()))
                            .map(|&r| (r, i))
                    })
                    .min();
                let Some((_, i)) = best else { break };
                let merged = format!("{}{}", syms[i], syms[i + 1]);
                syms.splice(i..i + 2, [merged]);
            }
            ids.extend(syms.iter().map(|s| vocab[s.as_str()]));
        }
    }
    ids
}

#[test]
fn tokenizer_matches_naive_bpe_and_round_trips() {
    let (Some(m), Some(p)) = (model(), model_path()) else {
        return;
    };
    let g = GgufFile::open(&p).unwrap();
    let t = &m.tokenizer;
    assert_eq!(t.vocab_size(), 49152);
    assert_eq!(t.bos_id(), Some(1));
    assert_eq!(t.eos_ids(), &[2]);
    assert!(!t.adds_bos_by_default());
    assert_eq!(t.special_token_id("<|im_start|>"), Some(1));
    assert_eq!(t.special_token_id("<|im_end|>"), Some(2));
    assert_eq!(t.special_token_id("Paris"), None);

    let paris = t.encode(" Paris", false).unwrap();
    assert_eq!(paris.len(), 1, "{paris:?}");
    assert_eq!(t.token_str(paris[0]), " Paris");

    let texts = [
        "The capital of France is",
        "12345 and 3.14159",
        "Hello, world! It's 2024; we'll see.",
        "  leading spaces\nand\n\nnewlines\t tabs   ",
        "emoji 🦀🎉 crab",
        "日本語のテキストと中文",
        "naïve café — “quotes”",
    ];
    for text in texts {
        let ids = t.encode(text, false).unwrap();
        assert_eq!(ids, naive_bpe(&g, text), "ids for {text:?}");
        assert_eq!(t.decode(&ids), text, "round trip of {text:?}");
    }
    let digits = t.encode("12345", false).unwrap();
    assert_eq!(digits.len(), 5, "digits split individually: {digits:?}");
    assert_eq!(
        t.encode("hi", true).unwrap()[0],
        1,
        "BOS prepended on request"
    );

    let chat = "<|im_start|>user\nHi there<|im_end|>\n";
    let ids = t.encode(chat, false).unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 1);
    assert_eq!(t.decode(&ids), chat);
}

#[test]
fn chat_template_is_chatml_with_default_system() {
    let Some(m) = model() else { return };
    // The fixture the Jinja engine is checked against (tests/chat_templates.rs) is this model's.
    let fixture = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat/smollm2.jinja"),
    )
    .unwrap();
    assert_eq!(m.tokenizer.chat_template().source(), Some(fixture.as_str()));
    let msgs = [ChatMessage::new("user", "What is the capital of France?")];
    let s = m.tokenizer.apply_chat_template(&msgs, true).unwrap();
    assert_eq!(
        s,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    let with_sys = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi"),
    ];
    assert_eq!(
        m.tokenizer.apply_chat_template(&with_sys, false).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
}
