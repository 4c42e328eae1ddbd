//! `manifest.json`: what the store holds and where. Written last, so its presence means the
//! store is complete.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::spec::{Dtype, ModelIdentity, StoreSpec};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const FORMAT_NAME: &str = "monoscope-activation-store";
pub const FORMAT_VERSION: u32 = 1;

/// The parsed `manifest.json` of a finished store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `monoscope-activation-store`.
    pub format: String,
    pub format_version: u32,
    pub model: ModelIdentity,
    /// Sorted; the order of the hook columns in every shard.
    pub hooks: Vec<String>,
    pub d_model: usize,
    pub dtype: Dtype,
    pub context_length: usize,
    /// Total rows (= tokens) over all shards.
    pub rows: u64,
    pub shards: Vec<ShardEntry>,
    /// Free-form capture settings, copied from [`StoreSpec::metadata`].
    #[serde(default)]
    pub metadata: serde_json::Value,
}

/// One shard as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    /// File name inside the store directory (no directories).
    pub file: String,
    pub rows: u64,
    /// Size of the shard file.
    pub compressed_bytes: u64,
    /// Sum of the columns' decoded sizes (activations in the stored dtype, plus ids).
    pub uncompressed_bytes: u64,
    /// xxh3-64 of the shard header, 16 lowercase hex digits. The header holds the xxh3-64 of
    /// every compressed frame, so this one value pins every byte of the file.
    pub checksum: String,
}

impl ShardEntry {
    pub(crate) fn checksum_value(&self) -> Option<u64> {
        (self.checksum.len() == 16)
            .then(|| u64::from_str_radix(&self.checksum, 16).ok())
            .flatten()
    }
}

impl Manifest {
    pub(crate) fn from_spec(spec: &StoreSpec, shards: Vec<ShardEntry>) -> Manifest {
        Manifest {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            model: spec.model.clone(),
            hooks: spec.hooks.clone(),
            d_model: spec.d_model,
            dtype: spec.dtype,
            context_length: spec.context_length,
            rows: shards.iter().map(|s| s.rows).sum(),
            shards,
            metadata: spec.metadata.clone(),
        }
    }

    /// Reads and checks `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::ManifestMissing { path: dir.into() });
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::ManifestGarbled {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if let Some(reason) = manifest.problem() {
            return Err(StoreError::ManifestInvalid { path, reason });
        }
        Ok(manifest)
    }

    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let mut bytes = serde_json::to_vec_pretty(self).expect("manifest serialises");
        bytes.push(b'\n');
        monoscope_core::atomic::write(&path, &bytes).map_err(|e| StoreError::io(&path, e))
    }

    /// Why this manifest cannot describe a store, if it cannot.
    fn problem(&self) -> Option<String> {
        if self.format != FORMAT_NAME {
            return Some(format!(
                "format is `{}`, expected `{FORMAT_NAME}`",
                self.format
            ));
        }
        if self.format_version != FORMAT_VERSION {
            return Some(format!(
                "format_version {} is not supported (this build reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        if self.hooks.is_empty() || !self.hooks.windows(2).all(|w| w[0] < w[1]) {
            return Some("hooks must be non-empty, sorted and distinct".into());
        }
        if self.d_model == 0 {
            return Some("d_model is 0".into());
        }
        let sum: u64 = self.shards.iter().map(|s| s.rows).sum();
        if sum != self.rows {
            return Some(format!("rows is {} but the shards hold {sum}", self.rows));
        }
        let mut seen = HashSet::new();
        for shard in &self.shards {
            if shard.file.is_empty()
                || shard.file.contains(['/', '\\'])
                || shard.file.starts_with('.')
            {
                return Some(format!(
                    "shard file name `{}` is not a plain file name",
                    shard.file
                ));
            }
            if !seen.insert(&shard.file) {
                return Some(format!("shard file `{}` is listed twice", shard.file));
            }
            if shard.checksum_value().is_none() {
                return Some(format!(
                    "shard {}: checksum `{}` is not 16 hex digits",
                    shard.file, shard.checksum
                ));
            }
        }
        None
    }
}
