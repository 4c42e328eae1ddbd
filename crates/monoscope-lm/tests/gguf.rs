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
    let loaded = monoscope_formats::load_model(&path).unwrap();
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
