//! `monoscope store info` and `monoscope store verify`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

use crate::error::{Result, StoreError};
use crate::manifest::Manifest;
use crate::shard::ShardReader;
use crate::spec::{Dtype, ModelIdentity};

/// A summary of a store, from its manifest alone.
#[derive(Debug, Clone)]
pub struct StoreInfo {
    pub dir: PathBuf,
    pub model: ModelIdentity,
    pub hooks: Vec<String>,
    pub d_model: usize,
    pub dtype: Dtype,
    pub context_length: usize,
    pub rows: u64,
    pub shards: usize,
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
    pub metadata: serde_json::Value,
}

/// Reads the manifest of the store in `dir` and summarises it.
pub fn info(dir: &Path) -> Result<StoreInfo> {
    let m = Manifest::read(dir)?;
    Ok(StoreInfo {
        dir: dir.into(),
        compressed_bytes: m.shards.iter().map(|s| s.compressed_bytes).sum(),
        uncompressed_bytes: m.shards.iter().map(|s| s.uncompressed_bytes).sum(),
        shards: m.shards.len(),
        model: m.model,
        hooks: m.hooks,
        d_model: m.d_model,
        dtype: m.dtype,
        context_length: m.context_length,
        rows: m.rows,
        metadata: m.metadata,
    })
}

impl StoreInfo {
    /// Decoded size over size on disk.
    pub fn compression_ratio(&self) -> f64 {
        self.uncompressed_bytes as f64 / self.compressed_bytes.max(1) as f64
    }
}

impl fmt::Display for StoreInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "store           {}", self.dir.display())?;
        writeln!(
            f,
            "model           {} (sha256 {})",
            self.model.name, self.model.sha256
        )?;
        writeln!(f, "hooks           {}", self.hooks.join(", "))?;
        writeln!(f, "d_model         {}", self.d_model)?;
        writeln!(f, "dtype           {}", self.dtype)?;
        writeln!(f, "context length  {}", self.context_length)?;
        writeln!(f, "rows (tokens)   {} in {} shards", self.rows, self.shards)?;
        writeln!(
            f,
            "size            {} on disk, {} decoded (compression {:.2}x)",
            bytes(self.compressed_bytes),
            bytes(self.uncompressed_bytes),
            self.compression_ratio()
        )?;
        if !self.metadata.is_null() {
            write!(f, "metadata        {}", self.metadata)?;
        }
        Ok(())
    }
}

/// What [`verify`] checked.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub dir: PathBuf,
    pub shards: usize,
    pub rows: u64,
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
    pub seconds: f64,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: all {} shards ({} rows, {} on disk) checksummed and decoded in {:.1} s",
            self.dir.display(),
            self.shards,
            self.rows,
            bytes(self.compressed_bytes),
            self.seconds
        )
    }
}

/// Checks every byte of every shard: header against the manifest, every frame's checksum, and
/// every column decoded to its expected size. All shards are checked (in parallel); the error
/// lists every one that failed.
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    let start = Instant::now();
    let m = Manifest::read(dir)?;
    let failures: Vec<String> = m
        .shards
        .par_iter()
        .filter_map(|entry| {
            let checked = ShardReader::open(dir, entry, &m).and_then(|mut r| r.check_all());
            checked.err().map(|e| e.to_string())
        })
        .collect();
    if !failures.is_empty() {
        return Err(StoreError::VerifyFailed {
            path: dir.into(),
            failed: failures.len(),
            shards: m.shards.len(),
            details: failures,
        });
    }
    Ok(VerifyReport {
        dir: dir.into(),
        shards: m.shards.len(),
        rows: m.rows,
        compressed_bytes: m.shards.iter().map(|s| s.compressed_bytes).sum(),
        uncompressed_bytes: m.shards.iter().map(|s| s.uncompressed_bytes).sum(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
