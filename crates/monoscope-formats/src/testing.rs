//! Test support: tiny random-weight models written in the real GGUF format, so that tests in
//! every crate exercise the same loader as real checkpoints, without downloading anything;
//! [`real_file_present`], the one rule for tests that need the real default model; and
//! [`fuzz`], what the workspace's `fuzz_*` tests share (case count, counting allocator,
//! mutations of valid files).

pub mod fuzz;

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::Result;
use crate::gguf::MetadataValue as V;
use crate::gguf_write::GgufWriter;
use crate::model::HostTensor;
use crate::quant::GgmlType;

/// Shape and encoding of a tiny Llama-architecture GGUF.
#[derive(Debug, Clone)]
pub struct TinyLlama {
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_ff: usize,
    pub n_ctx: usize,
    pub rope_theta: f32,
    pub norm_eps: f32,
    /// Write q/k/v biases (Qwen2-style).
    pub qkv_bias: bool,
    /// Omit `output.weight` so the head is tied to the embedding.
    pub tied: bool,
    /// Encoding of the 2-D projection matrices.
    pub matrix_type: GgmlType,
    /// Encoding of the token embedding (and untied head).
    pub embed_type: GgmlType,
    pub seed: u64,
    /// `general.architecture` and the metadata prefix: `llama` or `qwen2` (whose GGUF files keep
    /// Hugging Face's half-split RoPE pairs).
    pub arch: &'static str,
}

impl Default for TinyLlama {
    fn default() -> Self {
        Self {
            n_layers: 2,
            d_model: 64,
            n_heads: 4,
            n_kv_heads: 2,
            d_ff: 128,
            n_ctx: 256,
            rope_theta: 10_000.0,
            norm_eps: 1e-5,
            qkv_bias: false,
            tied: true,
            matrix_type: GgmlType::Q4_1,
            embed_type: GgmlType::Q8_0,
            seed: 1,
            arch: "llama",
        }
    }
}

/// GPT-2's reversible byte → printable-char map (`bytes_to_unicode`), used by byte-level BPE.
/// Whether a test that needs the real file `path` (the cached default model or corpus) can
/// run: `true` when it exists. Otherwise the test is skipped with a message saying how to get
/// the file (`how`) — or fails under `MONOSCOPE_REQUIRE_MODEL=1`, which CI sets after fetching
/// the model and corpus, so that a broken fetch cannot pass as skipped tests.
pub fn real_file_present(path: &Path, how: &str) -> bool {
    let required = std::env::var_os("MONOSCOPE_REQUIRE_MODEL").is_some_and(|v| v == "1");
    present_or_skip(path, how, required)
}

fn present_or_skip(path: &Path, how: &str, required: bool) -> bool {
    if path.exists() {
        return true;
    }
    let missing = format!("{} not found ({how})", path.display());
    assert!(!required, "MONOSCOPE_REQUIRE_MODEL=1 but {missing}");
    eprintln!("skipping real-model test: {missing}");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_real_file_skips_unless_required() {
        let missing = Path::new("/nonexistent/model.gguf");
        assert!(!present_or_skip(missing, "fetch it", false));
        assert!(present_or_skip(Path::new("/"), "fetch it", true));
        let failed = std::panic::catch_unwind(|| present_or_skip(missing, "fetch it", true));
        assert!(failed.is_err());
    }
}

pub fn byte_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, 33..=126 | 161..=172 | 174..=255);
        let cp = if printable {
            u32::from(b)
        } else {
            extra += 1;
            255 + extra
        };
        map[b as usize] = char::from_u32(cp).unwrap_or('?');
    }
    map
}

/// A tiny byte-level BPE vocabulary: three control tokens, the 256 byte symbols, and merges
/// that build " t", " h", "he", " the", "in", " in", "ll", " hello". Returns (tokens, token types,
/// merges), in GGUF order.
pub fn tiny_byte_bpe() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    let mut types = vec![3; 3];
    let b2u = byte_to_unicode();
    tokens.extend(b2u.iter().map(|c| c.to_string()));
    types.extend([1; 256]);
    let merges = [
        "Ġ t", "Ġ h", "h e", "Ġt he", "i n", "Ġ in", "l l", "e ll", "Ġh ell", "Ġhell o",
    ];
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    (tokens, types, merges.map(String::from).to_vec())
}

/// A deterministic xorshift generator: tests need reproducible weights, not good randomness.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next_f32() * scale).collect()
    }
}

impl TinyLlama {
    /// Build the writer. Also returns every tensor's f32 values *before* encoding, under its
    /// canonical name, so tests can compare what a loader reads back.
    pub fn build(&self) -> Result<(GgufWriter, BTreeMap<String, HostTensor>)> {
        let mut w = GgufWriter::new();
        let (tokens, types, merges) = tiny_byte_bpe();
        let vocab = tokens.len();
        let hd = self.d_model / self.n_heads;
        let a = self.arch;
        let u = |x: usize| V::U32(x as u32);
        w.add_metadata("general.architecture", V::String(a.into()))
            .add_metadata("general.name", V::String("tiny-llama".into()))
            .add_metadata(format!("{a}.block_count"), u(self.n_layers))
            .add_metadata(format!("{a}.context_length"), u(self.n_ctx))
            .add_metadata(format!("{a}.embedding_length"), u(self.d_model))
            .add_metadata(format!("{a}.feed_forward_length"), u(self.d_ff))
            .add_metadata(format!("{a}.attention.head_count"), u(self.n_heads))
            .add_metadata(format!("{a}.attention.head_count_kv"), u(self.n_kv_heads))
            .add_metadata(format!("{a}.attention.layer_norm_rms_epsilon"), V::F32(self.norm_eps))
            .add_metadata(format!("{a}.rope.freq_base"), V::F32(self.rope_theta))
            .add_metadata(format!("{a}.rope.dimension_count"), u(hd))
            .add_metadata("tokenizer.ggml.model", V::String("gpt2".into()))
            .add_metadata("tokenizer.ggml.pre", V::String("smollm".into()))
            .add_metadata("tokenizer.ggml.tokens", V::Array(tokens.into_iter().map(V::String).collect()))
            .add_metadata("tokenizer.ggml.token_type", V::Array(types.into_iter().map(V::I32).collect()))
            .add_metadata("tokenizer.ggml.merges", V::Array(merges.into_iter().map(V::String).collect()))
            .add_metadata("tokenizer.ggml.bos_token_id", V::U32(1))
            .add_metadata("tokenizer.ggml.eos_token_id", V::U32(2))
            .add_metadata(
                "tokenizer.chat_template",
                V::String("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}".into()),
            );

        let mut rng = XorShift::new(self.seed);
        let mut orig = BTreeMap::new();
        let mut add =
            |w: &mut GgufWriter, gguf: &str, canon: String, shape: Vec<usize>, ty: GgmlType| {
                let n = shape.iter().product();
                let data = if shape.len() == 1 && canon.contains("norm") {
                    (0..n).map(|_| 1.0 + 0.1 * rng.next_f32()).collect()
                } else {
                    rng.vec(n, 0.5)
                };
                w.add_tensor(gguf, &shape, ty, &data)?;
                orig.insert(canon, HostTensor::f32(shape, data));
                Result::Ok(())
            };
        let (d, q, kv, ff) = (
            self.d_model,
            self.n_heads * hd,
            self.n_kv_heads * hd,
            self.d_ff,
        );
        let mt = self.matrix_type;
        add(
            &mut w,
            "token_embd.weight",
            "embed_tokens".into(),
            vec![vocab, d],
            self.embed_type,
        )?;
        for l in 0..self.n_layers {
            let g = |s: &str| format!("blk.{l}.{s}");
            let c = |s: &str| format!("layers.{l}.{s}");
            add(
                &mut w,
                &g("attn_norm.weight"),
                c("attn_norm.weight"),
                vec![d],
                GgmlType::F32,
            )?;
            add(
                &mut w,
                &g("attn_q.weight"),
                c("q_proj.weight"),
                vec![q, d],
                mt,
            )?;
            add(
                &mut w,
                &g("attn_k.weight"),
                c("k_proj.weight"),
                vec![kv, d],
                mt,
            )?;
            add(
                &mut w,
                &g("attn_v.weight"),
                c("v_proj.weight"),
                vec![kv, d],
                mt,
            )?;
            if self.qkv_bias {
                add(
                    &mut w,
                    &g("attn_q.bias"),
                    c("q_proj.bias"),
                    vec![q],
                    GgmlType::F32,
                )?;
                add(
                    &mut w,
                    &g("attn_k.bias"),
                    c("k_proj.bias"),
                    vec![kv],
                    GgmlType::F32,
                )?;
                add(
                    &mut w,
                    &g("attn_v.bias"),
                    c("v_proj.bias"),
                    vec![kv],
                    GgmlType::F32,
                )?;
            }
            add(
                &mut w,
                &g("attn_output.weight"),
                c("o_proj.weight"),
                vec![d, q],
                mt,
            )?;
            add(
                &mut w,
                &g("ffn_norm.weight"),
                c("mlp_norm.weight"),
                vec![d],
                GgmlType::F32,
            )?;
            add(
                &mut w,
                &g("ffn_gate.weight"),
                c("gate_proj.weight"),
                vec![ff, d],
                mt,
            )?;
            add(
                &mut w,
                &g("ffn_up.weight"),
                c("up_proj.weight"),
                vec![ff, d],
                mt,
            )?;
            add(
                &mut w,
                &g("ffn_down.weight"),
                c("down_proj.weight"),
                vec![d, ff],
                mt,
            )?;
        }
        add(
            &mut w,
            "output_norm.weight",
            "final_norm.weight".into(),
            vec![d],
            GgmlType::F32,
        )?;
        if !self.tied {
            add(
                &mut w,
                "output.weight",
                "lm_head.weight".into(),
                vec![vocab, d],
                self.embed_type,
            )?;
        }
        Ok((w, orig))
    }

    /// Write the GGUF to `path`; returns the pre-encoding values as [`TinyLlama::build`] does.
    pub fn write(&self, path: &Path) -> Result<BTreeMap<String, HostTensor>> {
        let (w, orig) = self.build()?;
        w.write(path)?;
        Ok(orig)
    }
}
