//! What a store holds, fixed when it is created.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How activations are stored on disk. Readers always hand out `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// Exact.
    F32,
    /// IEEE half: 11 significant bits, relative error ≤ 2⁻¹¹, range ±65504 (larger values
    /// become ±inf, so prefer bf16 for models with massive activations).
    F16,
    /// bfloat16: f32's range with 8 significant bits, relative error ≤ 2⁻⁸.
    Bf16,
}

impl Dtype {
    /// Bytes per element on disk.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }

    /// Rounds `values` in place to what storing them in this dtype and reading them back gives
    /// (what a stream must carry to equal the store written beside it).
    pub fn round(self, values: &mut [f32]) {
        match self {
            Dtype::F32 => {}
            Dtype::F16 => values
                .iter_mut()
                .for_each(|v| *v = half::f16::from_f32(*v).to_f32()),
            Dtype::Bf16 => values
                .iter_mut()
                .for_each(|v| *v = half::bf16::from_f32(*v).to_f32()),
        }
    }

    /// The byte code used in shard headers.
    pub(crate) fn code(self) -> u8 {
        match self {
            Dtype::F32 => 0,
            Dtype::F16 => 1,
            Dtype::Bf16 => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Dtype> {
        match code {
            0 => Some(Dtype::F32),
            1 => Some(Dtype::F16),
            2 => Some(Dtype::Bf16),
            _ => None,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        })
    }
}

/// Which model produced the activations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    pub name: String,
    /// sha256 of the weights file (hex), so that activations are never mixed across models.
    pub sha256: String,
}

/// Everything fixed at creation. [`crate::StoreWriter::resume`] requires the same spec, field
/// for field, since a store written half with one setting and half with another would be wrong
/// without looking wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreSpec {
    pub model: ModelIdentity,
    /// Hook names (TransformerLens style); stored sorted, the order of `ActivationBatch::hooks`.
    pub hooks: Vec<String>,
    pub d_model: usize,
    pub dtype: Dtype,
    /// Tokens per window of the capture (informational; rows are tokens).
    pub context_length: usize,
    /// Rows per shard; the last shard may be shorter.
    pub rows_per_shard: usize,
    /// zstd level (1..=22; 1–3 is fast and already gains most of the ratio on float data).
    pub zstd_level: i32,
    /// Free-form capture settings (corpus, seed, prompt template, `shard i/N`, ...).
    #[serde(default)]
    pub metadata: serde_json::Value,
}

impl StoreSpec {
    /// A spec with the defaults for everything but identity and shape: f16, 8192 rows per
    /// shard, zstd level 3.
    pub fn new(model: ModelIdentity, hooks: Vec<String>, d_model: usize) -> Self {
        StoreSpec {
            model,
            hooks,
            d_model,
            dtype: Dtype::F16,
            context_length: 0,
            rows_per_shard: 8192,
            zstd_level: 3,
            metadata: serde_json::Value::Null,
        }
    }

    /// The hooks sorted and deduplicated, as they are stored.
    pub(crate) fn normalised(mut self) -> Self {
        self.hooks.sort();
        self.hooks.dedup();
        self
    }

    /// Why this spec cannot make a store, if it cannot.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.hooks.is_empty() {
            return Some("a store needs at least one hook".into());
        }
        if self.hooks.iter().any(|h| h.is_empty() || h.len() > 1024) {
            return Some("hook names must be 1..=1024 bytes long".into());
        }
        if self.d_model == 0 || self.d_model > u32::MAX as usize {
            return Some(format!("d_model {} is not a usable width", self.d_model));
        }
        if self.rows_per_shard == 0 {
            return Some("rows_per_shard must be at least 1".into());
        }
        let range = zstd::compression_level_range();
        if !range.contains(&self.zstd_level) {
            return Some(format!(
                "zstd level {} is outside {}..={}",
                self.zstd_level,
                range.start(),
                range.end()
            ));
        }
        None
    }
}
