//! Fuzzing the SAE loader with hostile versions of valid SAELens directories written by
//! `save_saelens` (ReLU, TopK and JumpReLU). Each case edits `cfg.json` (sizes, `k`, the
//! architecture, the metadata: replaced, removed or added values), the JSON header of
//! `sae_weights.safetensors` (shapes, offsets, dtypes), or, rarely, any of its bytes, and then
//! loads the directory and reads its `cfg.json` alone. Property: no panic and no abort; an
//! error names the directory's file; and no single allocation exceeds `ALLOCATION_BOUND`.
//!
//! Cases: `MONOSCOPE_FUZZ_CASES`, by default
//! `monoscope_formats::testing::fuzz::DEFAULT_CASES`.

use monoscope_formats::testing::fuzz::{
    self, ALLOCATION_BOUND, ByteEdit, CountingAllocator, EXTREMES, Field, JsonEdit,
    largest_allocation, safetensors_header, serial, with_safetensors_header,
};
use monoscope_sae::{Architecture, Sae, SaeError, load_sae, read_sae_info, save_saelens};
use proptest::prelude::*;
use serde_json::Value;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn extreme() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => proptest::sample::select(EXTREMES.to_vec()),
        2 => 0u64..32,
        1 => any::<u64>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => extreme().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => prop_oneof![Just(-1.0), Just(0.5), Just(1e300)].prop_map(Value::from),
        2 => prop_oneof![
            Just("standard"), Just("topk"), Just("jumprelu"), Just("batchtopk"), Just("none"),
            Just("expected_average_only_in"), Just("F16"), Just("BF16"), Just("F64"),
            Just("I32"), Just("U8"), Just(""), Just("İ\u{212A}"),
        ]
        .prop_map(Value::from),
        1 => prop_oneof![
            Just(Value::Null), Just(Value::Bool(true)), Just(Value::Bool(false)),
            Just(Value::Array(vec![])), Just(Value::Object(Default::default())),
        ],
    ]
}

/// Keys the loader reads, for edits that add one.
const KEYS: &[&str] = &[
    "architecture",
    "d_in",
    "d_sae",
    "k",
    "normalize_activations",
    "rescale_acts_by_decoder_norm",
    "apply_b_dec_to_input",
    "metadata",
    "hook_name",
    "context_size",
    "threshold",
    "log_threshold",
    "shape",
    "dtype",
    "data_offsets",
];

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    let key = proptest::sample::select(KEYS).prop_map(str::to_string);
    prop_oneof![
        4 => (any::<usize>(), json_value()).prop_map(|(pick, value)| JsonEdit::Set { pick, value }),
        1 => any::<usize>().prop_map(|pick| JsonEdit::Remove { pick }),
        2 => (any::<usize>(), key, json_value())
            .prop_map(|(pick, key, value)| JsonEdit::Add { pick, key, value }),
    ]
}

fn byte_edit(len: usize) -> impl Strategy<Value = ByteEdit> {
    let length_field = Field { at: 0, width: 8 };
    prop_oneof![
        2 => extreme().prop_map(move |value| ByteEdit::Int {
            at: length_field.at,
            width: length_field.width,
            value,
        }),
        1 => (0..len, any::<u8>()).prop_map(|(at, bit)| ByteEdit::Flip { at, bit }),
        1 => (0..len).prop_map(|len| ByteEdit::Truncate { len }),
        1 => (0..len, 1usize..32).prop_map(|(at, len)| ByteEdit::Remove { at, len }),
    ]
}

fn small_sae(architecture: Architecture) -> Sae {
    let (d_in, d_sae) = (6, 10);
    let v = |n: usize, k: usize| {
        (0..n)
            .map(|i| ((i * 7 + k) % 11) as f32 / 11.0 - 0.4)
            .collect()
    };
    Sae {
        d_in,
        d_sae,
        architecture,
        w_enc: v(d_in * d_sae, 1),
        b_enc: v(d_sae, 2),
        w_dec: v(d_sae * d_in, 3),
        b_dec: v(d_in, 4),
        threshold: (architecture == Architecture::JumpRelu).then(|| vec![0.1; d_sae]),
        apply_b_dec_to_input: true,
        metadata: Default::default(),
        extra_cfg: Default::default(),
    }
}

#[test]
fn saelens_dirs() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    // Each valid directory as (cfg.json, sae_weights.safetensors).
    let valid: Vec<(Value, Vec<u8>)> = [
        Architecture::Relu,
        Architecture::TopK { k: 3 },
        Architecture::JumpRelu,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, arch)| {
        let dir = tmp.path().join(format!("valid{i}"));
        save_saelens(&small_sae(arch), &dir).unwrap();
        let cfg = serde_json::from_slice(&std::fs::read(dir.join("cfg.json")).unwrap()).unwrap();
        let weights = std::fs::read(dir.join("sae_weights.safetensors")).unwrap();
        (cfg, weights)
    })
    .collect();
    let weights_len = valid.iter().map(|(_, w)| w.len()).max().unwrap();
    let dir = tmp.path().join("case");
    std::fs::create_dir(&dir).unwrap();
    let named = dir.display().to_string();
    let strategy = (
        0..valid.len(),
        proptest::collection::vec(json_edit(), 0..4),
        proptest::collection::vec(json_edit(), 0..3),
        prop_oneof![
            6 => Just(Vec::new()),
            1 => proptest::collection::vec(byte_edit(weights_len), 1..3),
        ],
    );
    let mut runner = fuzz::runner(256);
    runner
        .run(&strategy, |(base, cfg_edits, header_edits, byte_edits)| {
            let (cfg, weights) = &valid[base];
            let mut cfg = cfg.clone();
            for e in &cfg_edits {
                e.apply(&mut cfg);
            }
            let mut weights = if header_edits.is_empty() {
                weights.clone()
            } else {
                let (mut header, _) = safetensors_header(weights).unwrap();
                for e in &header_edits {
                    e.apply(&mut header);
                }
                with_safetensors_header(weights, &header)
            };
            for e in &byte_edits {
                e.apply(&mut weights);
            }
            std::fs::write(dir.join("cfg.json"), cfg.to_string()).unwrap();
            std::fs::write(dir.join("sae_weights.safetensors"), &weights).unwrap();
            let (errors, largest) = largest_allocation(|| {
                let message = |e: SaeError| e.to_string();
                [
                    load_sae(&dir).map(drop).map_err(message),
                    read_sae_info(&dir).map(drop).map_err(message),
                ]
            });
            for message in errors.into_iter().filter_map(Result::err) {
                prop_assert!(
                    message.contains(&named),
                    "error does not name the directory: {message}"
                );
            }
            prop_assert!(
                largest <= ALLOCATION_BOUND,
                "an allocation of {largest} bytes (bound {ALLOCATION_BOUND})"
            );
            Ok(())
        })
        .unwrap();
}
