//! Fuzzing the model loaders with hostile versions of valid files: a tiny GGUF written by
//! `TinyLlama`, and a tiny Hugging Face directory (`config.json`, `model.safetensors`,
//! `tokenizer.json`). Each case mutates the file where it matters (integer fields of the GGUF
//! header set to extreme values, the safetensors header's shapes, offsets and dtypes, the
//! config's sizes), or anywhere (flipped, overwritten, spliced, inserted, removed bytes,
//! truncation), and loads it. Property: no panic and no abort; an error names the file; and
//! no single allocation exceeds `ALLOCATION_BOUND`.
//!
//! Cases per target: `MONOSCOPE_FUZZ_CASES`, by default
//! `monoscope_formats::testing::fuzz::DEFAULT_CASES`.

use std::path::Path;

use half::bf16;
use monoscope_formats::testing::TinyLlama;
use monoscope_formats::testing::fuzz::{
    self, ALLOCATION_BOUND, ByteEdit, CountingAllocator, EXTREMES, Field, JsonEdit, gguf_fields,
    largest_allocation, safetensors_header, serial, with_safetensors_header,
};
use monoscope_formats::{GgufFile, load_model};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use safetensors::{Dtype, tensor::TensorView};
use serde_json::{Value, json};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn runner() -> TestRunner {
    fuzz::runner(256)
}

fn extreme() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => proptest::sample::select(EXTREMES.to_vec()),
        2 => 0u64..1024,
        1 => any::<u64>(),
    ]
}

/// A byte edit anywhere in a file of `len` bytes, or (weighted up) an extreme value written
/// over one of `fields`.
fn byte_edit(fields: Vec<Field>, len: usize) -> impl Strategy<Value = ByteEdit> {
    let field = proptest::sample::select(fields);
    let at = 0..len.max(1);
    prop_oneof![
        6 => (field, extreme()).prop_map(|(f, value)| ByteEdit::Int {
            at: f.at,
            width: f.width,
            value,
        }),
        1 => (at.clone(), any::<u8>()).prop_map(|(at, value)| ByteEdit::Byte { at, value }),
        1 => (at.clone(), any::<u8>()).prop_map(|(at, bit)| ByteEdit::Flip { at, bit }),
        1 => at.clone().prop_map(|len| ByteEdit::Truncate { len }),
        1 => (at.clone(), at.clone(), 1usize..64)
            .prop_map(|(from, to, len)| ByteEdit::Splice { from, to, len }),
        1 => (at.clone(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| ByteEdit::Insert { at, bytes }),
        1 => (at, 1usize..64).prop_map(|(at, len)| ByteEdit::Remove { at, len }),
    ]
}

/// JSON values that a size, a name or a list may be replaced with.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        12 => extreme().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => prop_oneof![Just(-1.0), Just(0.5), Just(1e300), Just(-0.0)].prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => prop_oneof![
            Just("llama"), Just("gpt2"), Just("gpt_neox"), Just("gemma2"), Just("qwen2"),
            Just("F16"), Just("BF16"), Just("I64"), Just("F8_E4M3"), Just(""), Just("İ\u{212A}"),
        ]
        .prop_map(Value::from),
    ];
    let nested = leaf.clone().prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,12}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![4 => leaf, 1 => nested]
}

/// Keys the loaders read, for edits that add one to an object.
const CONFIG_KEYS: &[&str] = &[
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "layer_types",
    "sliding_window",
    "use_sliding_window",
    "max_window_layers",
    "sliding_window_pattern",
    "rope_scaling",
    "partial_rotary_factor",
    "n_inner",
    "n_embd",
    "n_head",
    "n_layer",
    "n_positions",
    "shape",
    "dtype",
    "data_offsets",
];

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    let key = proptest::sample::select(CONFIG_KEYS).prop_map(str::to_string);
    prop_oneof![
        4 => (any::<usize>(), json_value()).prop_map(|(pick, value)| JsonEdit::Set { pick, value }),
        1 => any::<usize>().prop_map(|pick| JsonEdit::Remove { pick }),
        1 => (any::<usize>(), key, json_value())
            .prop_map(|(pick, key, value)| JsonEdit::Add { pick, key, value }),
    ]
}

/// Checks one load: the error, if any, names `named`, and the largest allocation is in bound.
fn check_outcome(
    outcome: Result<(), String>,
    largest: usize,
    named: &str,
) -> Result<(), TestCaseError> {
    if let Err(message) = outcome {
        prop_assert!(
            message.contains(named),
            "error does not name {named}: {message}"
        );
    }
    prop_assert!(
        largest <= ALLOCATION_BOUND,
        "an allocation of {largest} bytes (bound {ALLOCATION_BOUND})"
    );
    Ok(())
}

#[test]
fn gguf_files() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let valid = {
        let (w, _) = TinyLlama::default().build().unwrap();
        w.to_bytes().unwrap()
    };
    let fields = gguf_fields(&valid);
    assert!(
        fields.len() > 50,
        "the walker found {} fields",
        fields.len()
    );
    let path = dir.path().join("hostile.gguf");
    let named = path.display().to_string();
    let edits = proptest::collection::vec(byte_edit(fields, valid.len()), 1..4);
    runner()
        .run(&edits, |edits| {
            let mut bytes = valid.clone();
            for e in &edits {
                e.apply(&mut bytes);
            }
            std::fs::write(&path, &bytes).unwrap();
            let (outcome, largest) = largest_allocation(|| load_gguf_everything(&path));
            check_outcome(outcome, largest, &named)
        })
        .unwrap();
}

/// Everything a user can read from a GGUF: the model, and every tensor widened to f32.
fn load_gguf_everything(path: &Path) -> Result<(), String> {
    let model = load_model(path).map(drop);
    let file = GgufFile::open(path).map_err(|e| e.to_string())?;
    for t in file.tensors() {
        file.tensor_f32(&t.name).map_err(|e| e.to_string())?;
        file.tensor_host(&t.name).map_err(|e| e.to_string())?;
    }
    model.map_err(|e| e.to_string())
}

/// The valid Hugging Face directory's files: a one-layer Llama with f32 and bf16 tensors.
struct HfDir {
    config: Value,
    weights: Vec<u8>,
    tokenizer: Vec<u8>,
}

fn hf_dir() -> HfDir {
    let (d, h, kv, hd, ff) = (16usize, 2usize, 1usize, 8usize, 32usize);
    // The tokenizer of the tiny GGUF, saved as tokenizer.json: its vocabulary sizes the model.
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("tok.gguf");
    TinyLlama::default().write(&gguf).unwrap();
    let tokenizer_path = tmp.path().join("tokenizer.json");
    load_model(&gguf)
        .unwrap()
        .tokenizer
        .inner()
        .save(&tokenizer_path, false)
        .unwrap();
    let vocab = 269;
    let shapes: Vec<(String, Vec<usize>)> = [
        ("model.embed_tokens.weight", vec![vocab, d]),
        ("model.layers.0.input_layernorm.weight", vec![d]),
        ("model.layers.0.post_attention_layernorm.weight", vec![d]),
        ("model.layers.0.self_attn.q_proj.weight", vec![h * hd, d]),
        ("model.layers.0.self_attn.k_proj.weight", vec![kv * hd, d]),
        ("model.layers.0.self_attn.v_proj.weight", vec![kv * hd, d]),
        ("model.layers.0.self_attn.o_proj.weight", vec![d, h * hd]),
        ("model.layers.0.mlp.gate_proj.weight", vec![ff, d]),
        ("model.layers.0.mlp.up_proj.weight", vec![ff, d]),
        ("model.layers.0.mlp.down_proj.weight", vec![d, ff]),
        ("model.norm.weight", vec![d]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    let data: Vec<(Dtype, Vec<u8>)> = shapes
        .iter()
        .enumerate()
        .map(|(i, (_, shape))| {
            let n: usize = shape.iter().product();
            let values = (0..n).map(|j| ((i * 31 + j) % 17) as f32 / 17.0 - 0.5);
            if i % 2 == 0 {
                (Dtype::F32, values.flat_map(f32::to_le_bytes).collect())
            } else {
                let halves = values.flat_map(|v| bf16::from_f32(v).to_le_bytes());
                (Dtype::BF16, halves.collect())
            }
        })
        .collect();
    let views: Vec<_> = shapes
        .iter()
        .zip(&data)
        .map(|((name, shape), (dtype, bytes))| {
            (
                name.clone(),
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    let weights = safetensors::serialize(views, None).unwrap();
    let config = json!({
        "model_type": "llama", "hidden_size": d, "num_hidden_layers": 1,
        "num_attention_heads": h, "num_key_value_heads": kv, "intermediate_size": ff,
        "vocab_size": vocab, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2,
    });
    HfDir {
        config,
        weights,
        tokenizer: std::fs::read(tokenizer_path).unwrap(),
    }
}

#[test]
fn hf_safetensors_dirs() {
    let _serial = serial();
    let valid = hf_dir();
    let dir = tempfile::tempdir().unwrap();
    let case_dir = dir.path().join("model");
    std::fs::create_dir(&case_dir).unwrap();
    std::fs::write(case_dir.join("tokenizer.json"), &valid.tokenizer).unwrap();
    // The unmutated directory loads: the mutations start from a working model.
    std::fs::write(case_dir.join("config.json"), valid.config.to_string()).unwrap();
    std::fs::write(case_dir.join("model.safetensors"), &valid.weights).unwrap();
    load_model(&case_dir).unwrap();

    let (header, data_start) = safetensors_header(&valid.weights).unwrap();
    // The header's length field: the one integer outside its JSON.
    let fields = vec![Field { at: 0, width: 8 }];
    let named = case_dir.display().to_string();
    let edits = (
        proptest::collection::vec(json_edit(), 0..3),
        proptest::collection::vec(json_edit(), 0..3),
        // Rarely: most byte edits of a safetensors file break its JSON header, which the edits
        // of the header itself get past.
        prop_oneof![
            6 => Just(Vec::new()),
            1 => proptest::collection::vec(byte_edit(fields, valid.weights.len()), 1..3),
        ],
    );
    runner()
        .run(&edits, |(config_edits, header_edits, byte_edits)| {
            let mut config = valid.config.clone();
            for e in &config_edits {
                e.apply(&mut config);
            }
            let mut header = header.clone();
            for e in &header_edits {
                e.apply(&mut header);
            }
            let mut weights = if header_edits.is_empty() {
                valid.weights.clone()
            } else {
                with_safetensors_header(&valid.weights, &header)
            };
            for e in &byte_edits {
                e.apply(&mut weights);
            }
            std::fs::write(case_dir.join("config.json"), config.to_string()).unwrap();
            std::fs::write(case_dir.join("model.safetensors"), &weights).unwrap();
            let (outcome, largest) =
                largest_allocation(|| load_model(&case_dir).map(drop).map_err(|e| e.to_string()));
            prop_assert!(data_start > 8);
            check_outcome(outcome, largest, &named)
        })
        .unwrap();
}
