//! `manifest.json`: what the store holds and where. Written last, so its presence means the
//! store is complete.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::shard::{ID_COLUMNS, ZSTD_MAX_EXPANSION};
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
            // Saturating: the shards may come from a progress file, which `problem` then
            // refuses when they overflow.
            rows: shards
                .iter()
                .fold(0u64, |sum, s| sum.saturating_add(s.rows)),
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
    ///
    /// Besides consistency, every size is checked against the bytes that must back it: rows of
    /// a shard decode from its file, and zstd cannot expand a file more than
    /// [`ZSTD_MAX_EXPANSION`] times, so a row count or width no file could hold is refused
    /// here, before any reader sizes a buffer or a loop by it.
    pub(crate) fn problem(&self) -> Option<String> {
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
        let Some(row_bytes) = self.row_bytes() else {
            return Some(format!(
                "d_model {} × {} hooks overflows the size of a row",
                self.d_model,
                self.hooks.len()
            ));
        };
        let total = |field: fn(&ShardEntry) -> u64| {
            self.shards
                .iter()
                .try_fold(0u64, |sum, s| sum.checked_add(field(s)))
        };
        for (name, sum) in [
            ("rows", total(|s| s.rows)),
            ("compressed_bytes", total(|s| s.compressed_bytes)),
            ("uncompressed_bytes", total(|s| s.uncompressed_bytes)),
        ] {
            if sum.is_none() {
                return Some(format!("the shards' {name} add up past 2^64"));
            }
        }
        let sum = total(|s| s.rows).unwrap_or_default();
        if sum != self.rows {
            return Some(format!("rows is {} but the shards hold {sum}", self.rows));
        }
        let mut seen = HashSet::new();
        for shard in &self.shards {
            let can_decode = shard.compressed_bytes.saturating_mul(ZSTD_MAX_EXPANSION);
            if shard
                .rows
                .checked_mul(row_bytes)
                .is_none_or(|need| need > can_decode)
            {
                return Some(format!(
                    "shard {}: rows {} of {row_bytes} bytes each cannot decode from its \
                     compressed_bytes {} (zstd expands at most {ZSTD_MAX_EXPANSION}×)",
                    shard.file, shard.rows, shard.compressed_bytes
                ));
            }
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

    /// Decoded bytes per row: the id columns and every hook's values; `None` on overflow.
    fn row_bytes(&self) -> Option<u64> {
        let hook_bytes = (self.hooks.len() as u64)
            .checked_mul(self.d_model as u64)?
            .checked_mul(self.dtype.size() as u64)?;
        hook_bytes.checked_add(4 * ID_COLUMNS.len() as u64)
    }
}
