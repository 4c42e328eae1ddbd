//! Broken inputs give errors that name the file and the offending tensor, key or shard.

use monoscope_formats::gguf::MetadataValue as V;
use monoscope_formats::testing::TinyLlama;
use monoscope_formats::{FormatError, GgmlType, GgufWriter, load_model};

use std::path::Path;

fn tiny(dir: &Path, name: &str, edit: impl FnOnce(&mut GgufWriter)) -> std::path::PathBuf {
    let (mut w, _) = TinyLlama::default().build().unwrap();
    edit(&mut w);
    let p = dir.join(name);
    w.write(&p).unwrap();
    p
}

fn message(r: Result<impl std::fmt::Debug, FormatError>) -> String {
    r.expect_err("should fail").to_string()
}

#[test]
fn truncated_gguf_names_file_tensor_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny(dir.path(), "trunc.gguf", |_| {});
    let len = std::fs::metadata(&p).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len - 100).unwrap();
    let msg = message(load_model(&p));
    // The last tensor written is output_norm.weight: 64 f32 = 256 bytes, 100 of them cut off.
    assert!(msg.contains("trunc.gguf"), "{msg}");
    assert!(
        msg.contains("tensor `output_norm.weight` is truncated"),
        "{msg}"
    );
    assert!(
        msg.contains("needs 256 bytes") && msg.contains("holds only 156"),
        "{msg}"
    );
}

#[test]
fn header_cut_short_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny(dir.path(), "short.gguf", |_| {});
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(200).unwrap();
    let msg = message(load_model(&p));
    assert!(
        msg.contains("short.gguf: malformed GGUF: unexpected end of file"),
        "{msg}"
    );
}

#[test]
fn unknown_tensor_type_names_tensor_and_id() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny(dir.path(), "weird.gguf", |w| {
        w.add_raw_tensor("blk.0.mystery.weight", &[4, 32], 99, vec![0; 64]);
    });
    let msg = message(load_model(&p));
    assert!(msg.contains("weird.gguf"), "{msg}");
    assert!(
        msg.contains("tensor `blk.0.mystery.weight` has unknown or unsupported ggml type id 99"),
        "{msg}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // Claim three blocks where two were written.
    let p = tiny(dir.path(), "short-of-layers.gguf", |w| {
        w.add_metadata("llama.block_count", V::U32(3));
    });
    let msg = message(load_model(&p));
    assert!(
        msg.contains("short-of-layers.gguf: missing tensor `blk.2.attn_norm.weight`"),
        "{msg}"
    );
}

#[test]
fn shape_mismatch_names_tensor_and_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny(dir.path(), "ff.gguf", |w| {
        w.add_metadata("llama.feed_forward_length", V::U32(96));
    });
    let msg = message(load_model(&p));
    assert!(msg.contains("ff.gguf"), "{msg}");
    assert!(
        msg.contains("tensor `blk.0.ffn_gate.weight` has shape [128, 64], expected [96, 64]"),
        "{msg}"
    );
}

#[test]
fn missing_metadata_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", V::String("llama".into()));
    w.add_tensor("token_embd.weight", &[2, 32], GgmlType::F32, &[0.0; 64])
        .unwrap();
    let p = dir.path().join("nokeys.gguf");
    w.write(&p).unwrap();
    let msg = message(load_model(&p));
    assert!(
        msg.contains("nokeys.gguf: missing metadata key `llama.block_count`"),
        "{msg}"
    );
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny(dir.path(), "bert.gguf", |w| {
        w.add_metadata("general.architecture", V::String("bert".into()));
    });
    let msg = message(load_model(&p));
    assert!(
        msg.contains("bert.gguf: unsupported architecture `bert`"),
        "{msg}"
    );
}

#[test]
fn not_a_gguf_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.gguf");
    std::fs::write(&p, "just some text, not a model").unwrap();
    let msg = message(load_model(&p));
    assert!(msg.contains("notes.gguf: not a model"), "{msg}");
    let msg = message(monoscope_formats::GgufFile::open(&p));
    assert!(
        msg.contains("notes.gguf: not a model: file does not start with the GGUF magic"),
        "{msg}"
    );
    let msg = message(load_model(&dir.path().join("absent.gguf")));
    assert!(msg.contains("absent.gguf"), "{msg}");
}

#[test]
fn hf_dir_missing_shard_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("config.json"),
        r#"{"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 10}"#,
    )
    .unwrap();
    let index = r#"{"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "model.norm.weight": "model-00002-of-00002.safetensors"}}"#;
    std::fs::write(d.join("model.safetensors.index.json"), index).unwrap();
    let empty: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
    safetensors::serialize_to_file(empty, None, &d.join("model-00001-of-00002.safetensors"))
        .unwrap();
    let msg = message(load_model(d));
    assert!(msg.contains("model.safetensors.index.json: shard `model-00002-of-00002.safetensors` listed in the index is missing"), "{msg}");
}

#[test]
fn hf_dir_missing_tensor_and_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("config.json"),
        r#"{"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 10}"#,
    )
    .unwrap();
    let empty: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
    safetensors::serialize_to_file(empty, None, &d.join("model.safetensors")).unwrap();
    let msg = message(load_model(d));
    assert!(
        msg.contains("missing tensor `embed_tokens.weight`"),
        "{msg}"
    );

    std::fs::write(
        d.join("config.json"),
        r#"{"model_type": "llama", "hidden_size": "eight"}"#,
    )
    .unwrap();
    let msg = message(load_model(d));
    assert!(
        msg.contains("config.json: bad value for `hidden_size`"),
        "{msg}"
    );
}

/// A directory whose `config.json` is a small Llama with `extra` keys merged in. The config is
/// read before any weight, so no safetensors are needed to see it refused.
fn llama_config_dir(dir: &Path, extra: serde_json::Value) -> std::path::PathBuf {
    let mut config = serde_json::json!({
        "model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 96,
        "max_position_embeddings": 64,
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir.to_path_buf()
}

#[test]
fn settings_that_change_the_arithmetic_are_refused_by_name() {
    let cases = [
        (
            serde_json::json!({"rope_scaling": {"type": "mrope", "factor": 4.0}}),
            "`rope_scaling.type` = \"mrope\" is not supported",
        ),
        (
            serde_json::json!({"rope_scaling": {"type": "longrope", "factor": 4.0}}),
            "missing metadata key `rope_scaling.original_max_position_embeddings`",
        ),
        (
            serde_json::json!({"rope_parameters": {"rope_type": "su", "rope_theta": 1e4,
                "original_max_position_embeddings": 16}}),
            "missing metadata key `rope_parameters.short_factor`",
        ),
        (
            serde_json::json!({"original_max_position_embeddings": 16, "rope_scaling": {
                "type": "longrope", "short_factor": [1, 1, 1], "long_factor": [1, 1, 1, 1]}}),
            "`rope_scaling.short_factor`: 3 factors for 4 rotated pairs",
        ),
        (
            serde_json::json!({"original_max_position_embeddings": 16, "rope_scaling": {
                "type": "longrope", "short_factor": [1, 1, 1, 1], "long_factor": [1, 0, 1, 1]}}),
            "`rope_scaling.long_factor`: 0 is not a positive number",
        ),
        (
            serde_json::json!({"model_type": "qwen2", "use_sliding_window": true,
                "sliding_window": 4}),
            "missing metadata key `max_window_layers`",
        ),
        (
            serde_json::json!({"is_causal": false}),
            "`is_causal` = false is not supported",
        ),
        (
            serde_json::json!({"model_type": "gemma3_text", "use_bidirectional_attention": true}),
            "`use_bidirectional_attention` = true is not supported",
        ),
        (
            serde_json::json!({"model_type": "phi3", "original_max_position_embeddings": 16,
                "rope_scaling": {"type": "yarn", "factor": 4.0}}),
            "`rope_scaling.type` = \"yarn\" is not supported",
        ),
        (
            serde_json::json!({"hidden_act": "gelu"}),
            "`hidden_act` = \"gelu\" is not supported",
        ),
        (
            serde_json::json!({"partial_rotary_factor": 0.5}),
            "`partial_rotary_factor` = 0.5 is not supported",
        ),
        (
            serde_json::json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0}}),
            "missing metadata key `rope_scaling.original_max_position_embeddings`",
        ),
        (
            serde_json::json!({"rope_scaling": {"rope_type": "linear", "factor": -2.0}}),
            "`rope_scaling.factor`: -2 must be a positive number",
        ),
    ];
    for (extra, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let msg = message(load_model(&llama_config_dir(dir.path(), extra.clone())));
        assert!(msg.contains(want), "{extra}: {msg}");
        assert!(msg.contains("config.json"), "{msg}");
    }
}

#[test]
fn gguf_rope_scaling_other_than_linear_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny(dir.path(), "yarn.gguf", |w| {
        w.add_metadata("llama.rope.scaling.type", V::String("yarn".into()));
    });
    let msg = message(load_model(&p));
    assert!(
        msg.contains("`llama.rope.scaling.type` = \"yarn\" is not supported"),
        "{msg}"
    );
}

#[test]
fn gguf_llama3_frequency_factors_are_read() {
    let dir = tempfile::tempdir().unwrap();
    // TinyLlama: d_model 64, 4 heads → head_dim 16, 8 rotated pairs.
    let factors = [1.0f32, 1.0, 1.5, 2.0, 4.0, 8.0, 8.0, 8.0];
    let p = tiny(dir.path(), "llama3.gguf", |w| {
        w.add_tensor("rope_freqs.weight", &[8], GgmlType::F32, &factors)
            .unwrap();
    });
    let m = load_model(&p).unwrap();
    assert_eq!(
        m.config.rope_scaling,
        Some(monoscope_formats::RopeScaling::FrequencyDivisors {
            divisors: factors.iter().map(|&f| f64::from(f)).collect()
        })
    );
    let bad = tiny(dir.path(), "bad.gguf", |w| {
        w.add_tensor("rope_freqs.weight", &[8], GgmlType::F32, &[0.0; 8])
            .unwrap();
    });
    assert!(message(load_model(&bad)).contains("frequency factor 0 is not a positive number"));
}

/// A tiny Gemma 3 GGUF: TinyLlama's tensors plus the post-norms and q/k norms Gemma 3 has.
fn tiny_gemma3(dir: &Path, name: &str, edit: impl FnOnce(&mut GgufWriter)) -> std::path::PathBuf {
    let spec = TinyLlama {
        arch: "gemma3",
        ..TinyLlama::default()
    };
    let (mut w, _) = spec.build().unwrap();
    let head_dim = spec.d_model / spec.n_heads;
    for l in 0..spec.n_layers {
        for (norm, len) in [
            ("post_attention_norm", spec.d_model),
            ("post_ffw_norm", spec.d_model),
            ("attn_q_norm", head_dim),
            ("attn_k_norm", head_dim),
        ] {
            w.add_tensor(
                &format!("blk.{l}.{norm}.weight"),
                &[len],
                GgmlType::F32,
                &vec![1.0; len],
            )
            .unwrap();
        }
    }
    edit(&mut w);
    let p = dir.join(name);
    w.write(&p).unwrap();
    p
}

#[test]
fn gguf_sliding_window_pattern_as_period_or_flags() {
    let dir = tempfile::tempdir().unwrap();
    let window = |w: &mut GgufWriter| {
        w.add_metadata("gemma3.attention.sliding_window", V::U32(8));
    };
    let m = load_model(&tiny_gemma3(dir.path(), "default.gguf", window)).unwrap();
    assert_eq!(m.config.block.sliding_window, Some(8));
    // llama.cpp's default for Gemma 3: every sixth layer global; two layers both slide.
    assert_eq!(m.config.block.sliding_layers, vec![true, true]);
    assert_eq!(m.config.block.local_rope_theta, Some(10_000.0));
    // The same model with `sliding_window_pattern` set to `pattern`.
    let with_pattern = |name: &str, pattern: V| {
        load_model(&tiny_gemma3(dir.path(), name, |w| {
            window(w);
            w.add_metadata("gemma3.attention.sliding_window_pattern", pattern);
        }))
    };
    let layers = |r: Result<monoscope_formats::LoadedModel, FormatError>| {
        r.unwrap().config.block.sliding_layers
    };
    assert_eq!(
        layers(with_pattern("period.gguf", V::U32(2))),
        vec![true, false]
    );
    let flags = V::Array(vec![V::Bool(false), V::Bool(true)]);
    assert_eq!(layers(with_pattern("flags.gguf", flags)), vec![false, true]);
    let msg = message(with_pattern("bad.gguf", V::Array(vec![V::Bool(false)])));
    assert!(
        msg.contains("gemma3.attention.sliding_window_pattern"),
        "{msg}"
    );
    assert!(msg.contains("expected 2 booleans"), "{msg}");
}

#[test]
fn gguf_phi3_longrope_factors_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny(dir.path(), "longrope.gguf", |w| {
        w.add_tensor("rope_factors_long.weight", &[8], GgmlType::F32, &[1.0; 8])
            .unwrap();
    });
    let msg = message(load_model(&p));
    assert!(msg.contains("rope_factors_long.weight"), "{msg}");
    assert!(msg.contains("longrope"), "{msg}");
}

#[test]
fn gguf_partial_rotary_is_refused_outside_gpt_neox() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny(dir.path(), "partial.gguf", |w| {
        w.add_metadata("llama.rope.dimension_count", V::U32(8));
    });
    let msg = message(load_model(&p));
    assert!(msg.contains("llama.rope.dimension_count"), "{msg}");
    assert!(msg.contains("partial rotary"), "{msg}");
}

// Sizes read from a file are checked before anything is computed or allocated from them:
// each test below is a crafted file that made the loader panic on an overflow, abort on an
// allocation it could not make, or accept sizes no bytes of the file back.

/// Regression: an f32 tensor of 2^62 values overflowed its byte count (a panic; wrapped in a
/// release build, it passed the length check and the values were then allocated).
#[test]
fn gguf_tensor_whose_byte_count_overflows_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny(dir.path(), "huge.gguf", |w| {
        w.add_raw_tensor("huge.weight", &[1 << 62], GgmlType::F32.id(), vec![0; 4]);
    });
    for msg in [
        message(load_model(&p)),
        message(monoscope_formats::GgufFile::open(&p)),
    ] {
        assert!(msg.contains("huge.gguf"), "{msg}");
        assert!(
            msg.contains("tensor `huge.weight` dims [4611686018427387904]")
                && msg.contains("overflow a byte count"),
            "{msg}"
        );
    }
}

/// Regression: an array length was checked at one byte an element, so an array of u64 could
/// claim eight times what the file holds and have it reserved.
#[test]
fn gguf_array_longer_than_the_file_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new();
    w.add_metadata("a", V::Array(vec![V::U64(1); 4]));
    let mut bytes = w.to_bytes().unwrap();
    // Magic, version, two counts, the key's length and name, its type, the element type.
    let len_at = 4 + 4 + 8 + 8 + 8 + 1 + 4 + 4;
    let claimed = (bytes.len() - len_at - 8) as u64 / 2;
    bytes[len_at..len_at + 8].copy_from_slice(&claimed.to_le_bytes());
    let p = dir.path().join("long.gguf");
    std::fs::write(&p, bytes).unwrap();
    let msg = message(monoscope_formats::GgufFile::open(&p));
    assert!(msg.contains("long.gguf: malformed GGUF"), "{msg}");
    assert!(
        msg.contains(&format!(
            "`a` {claimed} is impossible: {claimed} array elements of at least 8 bytes"
        )),
        "{msg}"
    );
}

/// Regression: a block count of 2^40 sized the per-layer attention table before any tensor
/// was looked at: an allocation of a terabyte, and the process aborted.
#[test]
fn gguf_block_count_beyond_the_tensors_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny_gemma3(dir.path(), "layers.gguf", |w| {
        w.add_metadata("gemma3.block_count", V::U64(1 << 40));
    });
    let msg = message(load_model(&p));
    assert!(
        msg.contains("layers.gguf: bad value for `gemma3.block_count`: 1099511627776 blocks, but the file holds only"),
        "{msg}"
    );
}

/// Regression: heads × head_dim overflowed (a panic) when the head width was huge.
#[test]
fn gguf_head_sizes_that_overflow_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny(dir.path(), "heads.gguf", |w| {
        w.add_metadata("llama.attention.key_length", V::U64(1 << 62));
        w.add_metadata("llama.rope.dimension_count", V::U64(1 << 62));
    });
    let msg = message(load_model(&p));
    assert!(
        msg.contains(
            "heads.gguf: bad value for `n_heads × head_dim`: 4 × 4611686018427387904 overflows"
        ),
        "{msg}"
    );
}

/// Regression: in `config.json`, a head width of 2^62 overflowed heads × head_dim (a panic).
#[test]
fn hf_head_sizes_that_overflow_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = llama_config_dir(dir.path(), serde_json::json!({"head_dim": 1u64 << 62}));
    let empty: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
    safetensors::serialize_to_file(empty, None, &d.join("model.safetensors")).unwrap();
    let msg = message(load_model(&d));
    assert!(
        msg.contains(
            "config.json: bad value for `n_heads × head_dim`: 4 × 4611686018427387904 overflows"
        ),
        "{msg}"
    );
}

/// Regression: GPT-2's default MLP width, four times `n_embd`, overflowed (a panic).
#[test]
fn hf_gpt2_width_that_overflows_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = llama_config_dir(
        dir.path(),
        serde_json::json!({"model_type": "gpt2", "n_embd": 1u64 << 62, "n_head": 1,
            "n_layer": 1, "n_positions": 8}),
    );
    let msg = message(load_model(&d));
    assert!(
        msg.contains("config.json: bad value for `n_embd`: 4 × 4611686018427387904 overflows"),
        "{msg}"
    );
}

/// Regression: a layer count of 2^50 sized Gemma 2's per-layer attention table (an
/// allocation of a petabyte: the process aborted).
#[test]
fn hf_layer_count_beyond_any_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = llama_config_dir(
        dir.path(),
        serde_json::json!({"model_type": "gemma2", "num_hidden_layers": 1u64 << 50}),
    );
    let msg = message(load_model(&d));
    assert!(
        msg.contains("config.json: bad value for `num_hidden_layers`: 1125899906842624 layers"),
        "{msg}"
    );
}

/// Regression: with `hidden_size` 0 every weight is empty, so a model of any MLP width loaded
/// from a file of a few bytes, and whatever ran it sized its buffers by that width.
#[test]
fn hf_zero_width_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = llama_config_dir(
        dir.path(),
        serde_json::json!({"hidden_size": 0, "num_attention_heads": 1,
            "intermediate_size": 1u64 << 40, "num_hidden_layers": 1, "vocab_size": 8}),
    );
    let huge = 1usize << 40;
    let shapes: [(&str, Vec<usize>); 11] = [
        ("model.embed_tokens.weight", vec![8, 0]),
        ("model.layers.0.input_layernorm.weight", vec![0]),
        ("model.layers.0.post_attention_layernorm.weight", vec![0]),
        ("model.layers.0.self_attn.q_proj.weight", vec![0, 0]),
        ("model.layers.0.self_attn.k_proj.weight", vec![0, 0]),
        ("model.layers.0.self_attn.v_proj.weight", vec![0, 0]),
        ("model.layers.0.self_attn.o_proj.weight", vec![0, 0]),
        ("model.layers.0.mlp.gate_proj.weight", vec![huge, 0]),
        ("model.layers.0.mlp.up_proj.weight", vec![huge, 0]),
        ("model.layers.0.mlp.down_proj.weight", vec![0, huge]),
        ("model.norm.weight", vec![0]),
    ];
    let views: Vec<_> = shapes
        .iter()
        .map(|(name, shape)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), &[]);
            (name.to_string(), view.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &d.join("model.safetensors")).unwrap();
    let msg = message(load_model(&d));
    assert!(
        msg.contains("config.json: bad value for `d_model`: 0 is not a usable size"),
        "{msg}"
    );
}
