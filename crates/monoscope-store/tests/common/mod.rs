//! Deterministic test data: row `r` has token id `r`, so every read can be checked against the
//! row it claims to be.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use monoscope_core::ActivationBatch;
use monoscope_store::{Dtype, Manifest, ModelIdentity, StoreSpec, StoreWriter};

pub const HOOK: &str = "blocks.0.hook_resid_post";

pub fn spec(hooks: &[&str], d_model: usize, dtype: Dtype, rows_per_shard: usize) -> StoreSpec {
    StoreSpec {
        dtype,
        rows_per_shard,
        context_length: 16,
        zstd_level: 1,
        metadata: serde_json::json!({"corpus": "test"}),
        ..StoreSpec::new(
            ModelIdentity {
                name: "test-model".into(),
                sha256: "ab".repeat(32),
            },
            hooks.iter().map(|h| h.to_string()).collect(),
            d_model,
        )
    }
}

/// Activation `j` of row `row` at hook number `hook`: pseudo-random in (-8, 8).
pub fn value(row: u64, hook: usize, j: usize) -> f32 {
    let mut x = row
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((hook as u64) << 32)
        .wrapping_add((j as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    x ^= x >> 29;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 32;
    ((x % 1_000_000) as f32 / 1_000_000.0 - 0.5) * 16.0
}

/// Rows `start..start + rows` of the test input for `spec`.
pub fn batch(spec: &StoreSpec, start: u64, rows: usize) -> ActivationBatch {
    let d = spec.d_model;
    let range = start..start + rows as u64;
    let mut hooks: Vec<String> = spec.hooks.clone();
    hooks.sort();
    ActivationBatch {
        d_model: d,
        token_ids: range.clone().map(|r| r as u32).collect(),
        doc_ids: range.clone().map(|r| (r / 7) as u32).collect(),
        positions: range.clone().map(|r| (r % 7) as u32).collect(),
        hooks: hooks
            .iter()
            .enumerate()
            .map(|(h, name)| {
                let values = range
                    .clone()
                    .flat_map(|r| (0..d).map(move |j| value(r, h, j)));
                (name.clone(), values.collect())
            })
            .collect(),
    }
}

/// Writes rows `start..` in batches of the given sizes and finishes the store.
pub fn write_store(dir: &Path, spec: &StoreSpec, start: u64, batch_sizes: &[usize]) -> Manifest {
    let mut writer = StoreWriter::create(dir, spec.clone()).unwrap();
    let mut row = start;
    for &n in batch_sizes {
        writer.write_batch(&batch(spec, row, n)).unwrap();
        row += n as u64;
    }
    writer.finish().unwrap()
}

/// Every file of `dir` by name.
pub fn dir_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// The largest error `dtype` may introduce on `x`.
pub fn tolerance(dtype: Dtype, x: f32) -> f32 {
    match dtype {
        Dtype::F32 => 0.0,
        Dtype::F16 => x.abs() / 2048.0 + 1e-7,
        Dtype::Bf16 => x.abs() / 256.0 + 1e-30,
    }
}
