//! Small stores and SAEs built in the test, with known contents.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use monoscope_sae::{Architecture, Sae, SaeMetadata};
use monoscope_store::{ActivationBatch, Dtype, ModelIdentity, Store, StoreSpec, StoreWriter};

pub const HOOK: &str = "blocks.0.hook_resid_post";

/// One stored row: its token, document, position and activation vector.
#[derive(Debug, Clone)]
pub struct Row {
    pub token: u32,
    pub doc: u32,
    pub position: u32,
    pub x: Vec<f32>,
}

/// Writes `rows` as an f32 store with small shards (so windows straddle shard boundaries).
pub fn write_store(dir: &Path, rows: &[Row], rows_per_shard: usize, model: ModelIdentity) -> Store {
    let d = rows[0].x.len();
    let mut spec = StoreSpec::new(model, vec![HOOK.into()], d);
    spec.dtype = Dtype::F32;
    spec.rows_per_shard = rows_per_shard;
    spec.context_length = 64;
    let mut writer = StoreWriter::create(dir, spec).unwrap();
    let batch = ActivationBatch {
        d_model: d,
        token_ids: rows.iter().map(|r| r.token).collect(),
        doc_ids: rows.iter().map(|r| r.doc).collect(),
        positions: rows.iter().map(|r| r.position).collect(),
        hooks: BTreeMap::from([(
            HOOK.to_string(),
            rows.iter().flat_map(|r| r.x.clone()).collect(),
        )]),
    };
    writer.write_batch(&batch).unwrap();
    writer.finish().unwrap();
    Store::open(dir).unwrap()
}

/// A ReLU SAE whose feature `i` is `relu(x[i] + bias[i])`: activations are read off the
/// input, so a test knows them without running an encoder.
pub fn identity_sae(d_in: usize, d_sae: usize, bias: Vec<f32>) -> Sae {
    assert!(d_sae <= d_in);
    let mut w_enc = vec![0.0; d_in * d_sae];
    let mut w_dec = vec![0.0; d_sae * d_in];
    for i in 0..d_sae {
        w_enc[i * d_sae + i] = 1.0;
        w_dec[i * d_in + i] = 1.0;
    }
    Sae {
        d_in,
        d_sae,
        architecture: Architecture::Relu,
        w_enc,
        b_enc: bias,
        w_dec,
        b_dec: vec![0.0; d_in],
        threshold: None,
        apply_b_dec_to_input: false,
        metadata: SaeMetadata {
            hook_name: Some(HOOK.into()),
            ..SaeMetadata::default()
        },
        extra_cfg: serde_json::Map::new(),
    }
}

/// A deterministic generator for test data.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_f32(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32) / (1u64 << 24) as f32
    }
    /// Roughly normal, mean 0, standard deviation 1.
    pub fn normal(&mut self) -> f32 {
        (0..12).map(|_| self.next_f32()).sum::<f32>() - 6.0
    }
}

/// Documents of the given lengths, positions from 1 (position 0 is the unstored BOS), with
/// activation vectors drawn from `x`.
pub fn documents(lengths: &[u32], d: usize, mut x: impl FnMut(u64) -> Vec<f32>) -> Vec<Row> {
    let mut rows = Vec::new();
    for (doc, &len) in lengths.iter().enumerate() {
        for position in 1..=len {
            let r = rows.len() as u64;
            let v = x(r);
            assert_eq!(v.len(), d);
            rows.push(Row {
                token: 3 + (r % 50) as u32,
                doc: doc as u32,
                position,
                x: v,
            });
        }
    }
    rows
}

pub fn identity() -> ModelIdentity {
    ModelIdentity {
        name: "test".into(),
        sha256: "0".repeat(64),
    }
}
