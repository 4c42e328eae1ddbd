//! An open, finished store: its manifest, and random access to row ranges.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use monoscope_core::ActivationBatch;
use rayon::prelude::*;

use crate::error::{Result, StoreError};
use crate::manifest::Manifest;
use crate::recycle::Recycled;
use crate::shard::ShardReader;

/// A finished store, opened for reading. Cheap to clone and shareable across threads.
///
/// The batch readers of a store hand their buffers (decompressed shards, the shuffle buffer)
/// on to its next readers, so that reading epoch after epoch allocates nothing: up to what
/// its readers had in use at once stays allocated until the last clone of the store is
/// dropped.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    manifest: Manifest,
    /// `starts[i]` is the first row of shard `i`; `starts[shards]` is the row count.
    starts: Vec<u64>,
    recycled: Arc<Recycled>,
}

impl Store {
    /// Opens the store in `dir`: reads the manifest and checks that every shard file exists
    /// with the recorded size (contents are checked as they are read).
    pub fn open(dir: &Path) -> Result<Store> {
        let manifest = Manifest::read(dir)?;
        for entry in &manifest.shards {
            let path = dir.join(&entry.file);
            let size = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StoreError::ShardMissing {
                        shard: entry.file.clone(),
                        path,
                    });
                }
                Err(e) => return Err(StoreError::io(&path, e)),
            };
            if size < entry.compressed_bytes {
                return Err(StoreError::ShardTruncated {
                    shard: entry.file.clone(),
                    expected: entry.compressed_bytes,
                    found: size,
                });
            }
        }
        let mut starts = Vec::with_capacity(manifest.shards.len() + 1);
        let mut row = 0;
        starts.push(0);
        for entry in &manifest.shards {
            row += entry.rows;
            starts.push(row);
        }
        Ok(Store {
            inner: Arc::new(Inner {
                dir: dir.into(),
                manifest,
                starts,
                recycled: Arc::default(),
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// Rows (= tokens) in the store.
    pub fn row_count(&self) -> u64 {
        self.inner.manifest.rows
    }

    pub fn d_model(&self) -> usize {
        self.inner.manifest.d_model
    }

    pub fn shard_count(&self) -> usize {
        self.inner.manifest.shards.len()
    }

    /// Rows `[start, end)` of shard `i` in store order.
    pub fn shard_rows(&self, i: usize) -> Range<u64> {
        self.inner.starts[i]..self.inner.starts[i + 1]
    }

    /// The position of `hook` among the manifest's hooks, or an error listing the known ones.
    pub fn hook_index(&self, hook: &str) -> Result<usize> {
        let hooks = &self.inner.manifest.hooks;
        hooks
            .iter()
            .position(|h| h == hook)
            .ok_or_else(|| StoreError::UnknownHook {
                path: self.inner.dir.clone(),
                hook: hook.into(),
                known: hooks.join(", "),
            })
    }

    /// Buffers kept from this store's finished readers for the next.
    pub(crate) fn recycled(&self) -> &Arc<Recycled> {
        &self.inner.recycled
    }

    /// Opens shard `i`, checking its header against the manifest.
    pub(crate) fn open_shard(&self, i: usize) -> Result<ShardReader> {
        ShardReader::open(
            &self.inner.dir,
            &self.inner.manifest.shards[i],
            &self.inner.manifest,
        )
    }

    pub(crate) fn check_range(&self, range: &Range<u64>) -> Result<()> {
        let rows = self.row_count();
        if range.start > range.end || range.end > rows {
            return Err(StoreError::RowRange {
                path: self.inner.dir.clone(),
                start: range.start,
                end: range.end,
                rows,
            });
        }
        Ok(())
    }

    /// Rows `range` with token ids, doc ids, positions and every hook's activations (f32).
    pub fn rows(&self, range: Range<u64>) -> Result<ActivationBatch> {
        let hooks: Vec<&str> = self
            .inner
            .manifest
            .hooks
            .iter()
            .map(String::as_str)
            .collect();
        self.rows_of(range, &hooks)
    }

    /// Rows `range` with ids and the activations of `hooks` only (others are not decoded).
    pub fn rows_of(&self, range: Range<u64>, hooks: &[&str]) -> Result<ActivationBatch> {
        self.check_range(&range)?;
        let hook_ids: Vec<usize> = hooks
            .iter()
            .map(|h| self.hook_index(h))
            .collect::<Result<_>>()?;
        let d = self.d_model();
        let starts = &self.inner.starts;
        // The shards overlapping the range: from the one holding `start` to the one before
        // the first that starts at or after `end`.
        let first = starts
            .partition_point(|&s| s <= range.start)
            .saturating_sub(1);
        let last = starts
            .partition_point(|&s| s < range.end)
            .min(self.shard_count());
        let overlapping = if range.is_empty() { 0..0 } else { first..last };
        let parts: Vec<ActivationBatch> = overlapping
            .into_par_iter()
            .map(|i| {
                let shard = self.shard_rows(i);
                let lo = (range.start.max(shard.start) - shard.start) as usize;
                let hi = (range.end.min(shard.end) - shard.start) as usize;
                let mut reader = self.open_shard(i)?;
                let cut = |v: Vec<u32>| v[lo..hi].to_vec();
                let mut part = ActivationBatch {
                    d_model: d,
                    token_ids: cut(reader.ids(0)?),
                    doc_ids: cut(reader.ids(1)?),
                    positions: cut(reader.ids(2)?),
                    hooks: BTreeMap::new(),
                };
                for (&h, name) in hook_ids.iter().zip(hooks) {
                    let values = reader.activations(h)?;
                    part.hooks
                        .insert(name.to_string(), values[lo * d..hi * d].to_vec());
                }
                Ok(part)
            })
            .collect::<Result<_>>()?;
        let mut out = ActivationBatch {
            d_model: d,
            token_ids: Vec::new(),
            doc_ids: Vec::new(),
            positions: Vec::new(),
            hooks: hooks.iter().map(|h| (h.to_string(), Vec::new())).collect(),
        };
        for part in parts {
            out.token_ids.extend(part.token_ids);
            out.doc_ids.extend(part.doc_ids);
            out.positions.extend(part.positions);
            for (name, values) in part.hooks {
                out.hooks
                    .get_mut(&name)
                    .expect("hook requested")
                    .extend(values);
            }
        }
        Ok(out)
    }
}
