//! Through a real GGUF file (Q4_1 matrices, Q8_0 embedding, written by the formats crate's test
//! writer): `load` must compute what the naive reference computes on the dequantised weights.

mod common;

use common::{reference, rel_err};
use monoscope_formats::GgmlType;
use monoscope_formats::testing::TinyLlama;
use monoscope_lm::{Device, ForwardOptions, Logits, TokenBatch};

fn check(spec: TinyLlama) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    spec.write(&path).unwrap();
    let model = monoscope_lm::load(&path, &Device::flex()).unwrap();
    // The model keeps the quantised blocks; the reference reads their dequantised values.
    let loaded = common::widened(monoscope_formats::load_model(&path).unwrap());
    let vocab = loaded.config.vocab_size;
    let ids: Vec<u32> = (0..10).map(|i| (i * 37 + 5) % vocab as u32).collect();
    let out = model
        .forward(
            &TokenBatch::single(&ids).unwrap(),
            &ForwardOptions {
                record: common::residual_hooks(&model),
                logits: Logits::All,
                ..ForwardOptions::default()
            },
        )
        .unwrap();
    let want = reference::forward(&loaded, &ids);
    for hook in common::residual_hooks(&model) {
        let err = rel_err(
            &out.activation_host(&hook).unwrap(),
            &want.hook_flat(&hook.to_string()),
        );
        assert!(err < 1e-4, "{hook}: relative error {err:e}");
    }
    let err = rel_err(&out.logits_host().unwrap(), &want.logits_flat());
    assert!(err < 1e-4, "logits: relative error {err:e}");
}

#[test]
fn quantised_gguf_llama_matches_reference() {
    check(TinyLlama::default());
}

/// Regression: a `qwen2` GGUF was read with llama's adjacent RoPE pairs, while llama.cpp (and
/// its converter, which leaves Qwen2's Q/K rows as Hugging Face has them) pairs dimensions half
/// the head apart: the model computed other numbers without a word.
#[test]
fn a_qwen2_gguf_rotates_half_split_pairs() {
    let spec = TinyLlama {
        arch: "qwen2",
        qkv_bias: true,
        seed: 5,
        ..TinyLlama::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qwen2.gguf");
    spec.write(&path).unwrap();
    let loaded = monoscope_formats::load_model(&path).unwrap();
    assert_eq!(
        loaded.config.rope_layout,
        monoscope_formats::RopeLayout::HalfSplit
    );
    check(spec);
}

#[test]
fn quantised_gguf_qwen2_style_untied_matches_reference() {
    check(TinyLlama {
        qkv_bias: true,
        tied: false,
        matrix_type: GgmlType::Q8_0,
        embed_type: GgmlType::Q4_1,
        n_kv_heads: 1,
        seed: 4,
        ..TinyLlama::default()
    });
}
