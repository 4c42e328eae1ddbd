//! Shared test fixtures: tiny random-weight checkpoints built in code, and an independent naive
//! reference forward pass (nested loops over `f64`, straight from the equations, sharing no code
//! with the crate).

#![allow(dead_code)]

pub mod reference;

use std::collections::{BTreeMap, HashMap};

use monoscope_formats::{
    Architecture, HostTensor, LoadedModel, ModelConfig, RopeLayout, Tokenizer,
};

/// Deterministic pseudo-random numbers (xorshift), uniform in [-1, 1).
pub struct Rand(u64);

impl Rand {
    pub fn new(seed: u64) -> Self {
        Self(
            seed.wrapping_mul(2654435761)
                .wrapping_add(0x9E3779B97F4A7C15)
                | 1,
        )
    }

    pub fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
}

/// What varies between the tiny test models.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub architecture: Architecture,
    pub rope_layout: RopeLayout,
    pub n_kv_heads: usize,
    pub qkv_bias: bool,
    pub tied: bool,
    pub seed: u64,
}

impl Spec {
    pub fn llama() -> Self {
        Self {
            architecture: Architecture::Llama,
            rope_layout: RopeLayout::AdjacentPairs,
            n_kv_heads: 2,
            qkv_bias: false,
            tied: false,
            seed: 1,
        }
    }

    pub fn gpt2() -> Self {
        Self {
            architecture: Architecture::Gpt2,
            rope_layout: RopeLayout::HalfSplit,
            n_kv_heads: 4,
            qkv_bias: true,
            tied: true,
            seed: 2,
        }
    }
}

pub const VOCAB: usize = 64;
pub const D_MODEL: usize = 32;
pub const N_HEADS: usize = 4;
pub const HEAD_DIM: usize = 8;
pub const D_FF: usize = 48;
pub const N_LAYERS: usize = 2;
pub const MAX_POS: usize = 64;

/// A word-level tokenizer over `t0 .. t63` (ids equal the number), enough for the model's
/// constructor; the tiny models are driven with ids directly.
pub fn tiny_tokenizer() -> Tokenizer {
    let vocab: HashMap<String, u32> = (0..VOCAB as u32).map(|i| (format!("t{i}"), i)).collect();
    let model = tokenizers::models::wordlevel::WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token("t0".into())
        .build()
        .expect("word-level model");
    let mut inner = tokenizers::Tokenizer::new(model);
    inner.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace {}));
    Tokenizer::new(
        inner,
        "in-memory test tokenizer",
        Some(1),
        vec![2],
        false,
        None,
    )
}

pub fn config(spec: &Spec) -> ModelConfig {
    ModelConfig {
        architecture: spec.architecture,
        n_layers: N_LAYERS,
        d_model: D_MODEL,
        n_heads: N_HEADS,
        n_kv_heads: spec.n_kv_heads,
        head_dim: HEAD_DIM,
        d_ff: D_FF,
        vocab_size: VOCAB,
        max_positions: MAX_POS,
        norm_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_layout: spec.rope_layout,
        rope_scaling: None,
        block: monoscope_formats::BlockConfig {
            mlp: if spec.architecture == monoscope_formats::Architecture::Gpt2 {
                monoscope_formats::MlpActivation::GeluTanh
            } else {
                monoscope_formats::MlpActivation::SwiGlu
            },
            ..Default::default()
        },
        tied_embeddings: spec.tied,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
    }
}

/// Random canonical tensors for `spec`: `[out, in]` matrices scaled by 1/sqrt(in) so that
/// activations stay O(1) and attention patterns are far from uniform.
pub fn tensors(spec: &Spec) -> BTreeMap<String, HostTensor> {
    let c = config(spec);
    let mut r = Rand::new(spec.seed);
    let mut t = BTreeMap::new();
    let gpt2 = spec.architecture == Architecture::Gpt2;
    let mut put = |name: String, shape: Vec<usize>, data: Vec<f32>| {
        t.insert(name, HostTensor::f32(shape, data));
    };
    let d = D_MODEL;
    let (q_out, kv_out) = (N_HEADS * HEAD_DIM, c.n_kv_heads * HEAD_DIM);
    let mat = |r: &mut Rand, out: usize, inp: usize| r.vec(out * inp, 1.7 / (inp as f32).sqrt());
    let gain = |r: &mut Rand, n: usize| r.vec(n, 0.3).into_iter().map(|x| 1.0 + x).collect();
    put("embed_tokens".into(), vec![VOCAB, d], r.vec(VOCAB * d, 1.0));
    if gpt2 {
        put(
            "embed_positions".into(),
            vec![MAX_POS, d],
            r.vec(MAX_POS * d, 0.5),
        );
    }
    for l in 0..N_LAYERS {
        let p = |s: &str| format!("layers.{l}.{s}");
        put(p("attn_norm.weight"), vec![d], gain(&mut r, d));
        put(p("mlp_norm.weight"), vec![d], gain(&mut r, d));
        put(p("q_proj.weight"), vec![q_out, d], mat(&mut r, q_out, d));
        put(p("k_proj.weight"), vec![kv_out, d], mat(&mut r, kv_out, d));
        put(p("v_proj.weight"), vec![kv_out, d], mat(&mut r, kv_out, d));
        put(p("o_proj.weight"), vec![d, q_out], mat(&mut r, d, q_out));
        put(p("up_proj.weight"), vec![D_FF, d], mat(&mut r, D_FF, d));
        put(p("down_proj.weight"), vec![d, D_FF], mat(&mut r, d, D_FF));
        if !gpt2 {
            put(p("gate_proj.weight"), vec![D_FF, d], mat(&mut r, D_FF, d));
        }
        if spec.qkv_bias {
            put(p("q_proj.bias"), vec![q_out], r.vec(q_out, 0.3));
            put(p("k_proj.bias"), vec![kv_out], r.vec(kv_out, 0.3));
            put(p("v_proj.bias"), vec![kv_out], r.vec(kv_out, 0.3));
        }
        if gpt2 {
            put(p("attn_norm.bias"), vec![d], r.vec(d, 0.2));
            put(p("mlp_norm.bias"), vec![d], r.vec(d, 0.2));
            put(p("o_proj.bias"), vec![d], r.vec(d, 0.2));
            put(p("up_proj.bias"), vec![D_FF], r.vec(D_FF, 0.2));
            put(p("down_proj.bias"), vec![d], r.vec(d, 0.2));
        }
    }
    put("final_norm.weight".into(), vec![d], gain(&mut r, d));
    if gpt2 {
        put("final_norm.bias".into(), vec![d], r.vec(d, 0.2));
    }
    if !spec.tied {
        put(
            "lm_head.weight".into(),
            vec![VOCAB, d],
            r.vec(VOCAB * d, 1.0),
        );
    }
    t
}

pub fn loaded(spec: &Spec) -> LoadedModel {
    LoadedModel {
        config: config(spec),
        tensors: tensors(spec),
        tokenizer: tiny_tokenizer(),
        name: "tiny".into(),
        sha256: String::new(),
    }
}

pub fn model(spec: &Spec) -> monoscope_lm::Model {
    monoscope_lm::Model::from_loaded(loaded(spec), &monoscope_lm::Device::flex()).expect("model")
}

/// `m` with every tensor dequantised or widened to f32: what the naive reference reads.
#[allow(dead_code)]
pub fn widened(mut m: LoadedModel) -> LoadedModel {
    for t in m.tensors.values_mut() {
        t.data = t.to_f32().into();
    }
    m
}

/// `max |a - b| / max |b|`: relative error of a whole tensor against its reference.
pub fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-12);
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((*x as f64 - y).abs()));
    diff / scale
}

/// The hooks on the residual stream and sublayer outputs (`d_model` wide), which the naive
/// reference computes; the hooks inside attention and the MLP are checked against transformers
/// in `transformers_fixtures.rs`.
#[allow(dead_code)]
pub fn residual_hooks(model: &monoscope_lm::Model) -> Vec<monoscope_lm::HookName> {
    model
        .hook_names()
        .into_iter()
        .filter(|h| !h.is_inner() && !matches!(h.point(), monoscope_lm::HookPoint::ResidMid(_)))
        .collect()
}
