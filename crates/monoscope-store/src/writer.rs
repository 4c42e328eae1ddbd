//! Writing a store: rows are buffered into full shards, each shard and the progress file are
//! written atomically, the manifest last. An interrupted writer can be resumed and the result
//! is byte-identical to an uninterrupted run (shards are deterministic functions of their rows
//! and the spec; nothing time- or thread-dependent is recorded).

use std::ops::Range;
use std::path::{Path, PathBuf};

use monoscope_core::ActivationBatch;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::manifest::{MANIFEST_FILE, Manifest, ShardEntry};
use crate::shard::{self, ShardReader, ShardRows};
use crate::spec::StoreSpec;

pub const PROGRESS_FILE: &str = "progress.json";

/// What an unfinished store has completed, rewritten atomically after every shard.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Progress {
    spec: StoreSpec,
    shards: Vec<ShardEntry>,
}

/// Writes `ActivationBatch`es into a new store (see the crate docs for the format).
#[derive(Debug)]
pub struct StoreWriter {
    dir: PathBuf,
    spec: StoreSpec,
    shards: Vec<ShardEntry>,
    token_ids: Vec<u32>,
    doc_ids: Vec<u32>,
    positions: Vec<u32>,
    /// Per hook (sorted), the buffered `[rows, d_model]` activations.
    hooks: Vec<Vec<f32>>,
}

impl StoreWriter {
    /// Starts a store in `dir`, which must be absent or empty.
    pub fn create(dir: &Path, spec: StoreSpec) -> Result<StoreWriter> {
        let spec = checked(dir, spec)?;
        prepare_empty_dir(dir)?;
        let writer = StoreWriter::empty(dir, spec, Vec::new());
        // Written before any shard, so that a run killed during its first shard resumes too.
        writer.write_progress()?;
        Ok(writer)
    }

    /// Reopens a store whose writer was interrupted before `finish`. `spec` must equal the
    /// original one. The caller then skips [`StoreWriter::rows_stored`] rows of its
    /// (deterministic) input and writes the rest.
    pub fn resume(dir: &Path, spec: StoreSpec) -> Result<StoreWriter> {
        let spec = checked(dir, spec)?;
        let path = dir.join(PROGRESS_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let state = if dir.join(MANIFEST_FILE).exists() {
                    "already finished"
                } else {
                    "not an activation store"
                };
                return Err(StoreError::NothingToResume {
                    path: dir.into(),
                    state,
                });
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let progress: Progress =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::ManifestGarbled {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        compare_specs(&path, &progress.spec, &spec)?;
        // Every completed shard must still be intact: resuming on top of a damaged one would
        // produce a store that fails later, far from the cause.
        let manifest = Manifest::from_spec(&spec, progress.shards.clone());
        if let Some(reason) = manifest.problem() {
            return Err(StoreError::ManifestInvalid { path, reason });
        }
        for entry in &progress.shards {
            ShardReader::open(dir, entry, &manifest)?;
        }
        remove_leftovers(dir, &progress.shards)?;
        Ok(StoreWriter::empty(dir, spec, progress.shards))
    }

    fn empty(dir: &Path, spec: StoreSpec, shards: Vec<ShardEntry>) -> StoreWriter {
        StoreWriter {
            dir: dir.into(),
            hooks: vec![Vec::new(); spec.hooks.len()],
            spec,
            shards,
            token_ids: Vec::new(),
            doc_ids: Vec::new(),
            positions: Vec::new(),
        }
    }

    /// Rows safely on disk in completed shards (buffered rows are not counted).
    pub fn rows_stored(&self) -> u64 {
        self.shards.iter().map(|s| s.rows).sum()
    }

    /// Rows given to the writer, stored or buffered.
    pub fn rows_written(&self) -> u64 {
        self.rows_stored() + self.token_ids.len() as u64
    }

    pub fn spec(&self) -> &StoreSpec {
        &self.spec
    }

    /// Appends a batch; writes every shard it completes.
    pub fn write_batch(&mut self, batch: &ActivationBatch) -> Result<()> {
        self.check(batch)?;
        self.token_ids.extend_from_slice(&batch.token_ids);
        self.doc_ids.extend_from_slice(&batch.doc_ids);
        self.positions.extend_from_slice(&batch.positions);
        for (buffer, matrix) in self.hooks.iter_mut().zip(batch.hooks.values()) {
            buffer.extend_from_slice(matrix);
        }
        while self.token_ids.len() >= self.spec.rows_per_shard {
            self.flush(self.spec.rows_per_shard)?;
        }
        Ok(())
    }

    /// Writes the last (possibly short) shard and then the manifest; returns the manifest.
    pub fn finish(mut self) -> Result<Manifest> {
        if !self.token_ids.is_empty() {
            self.flush(self.token_ids.len())?;
        }
        let manifest = Manifest::from_spec(&self.spec, std::mem::take(&mut self.shards));
        manifest.write(&self.dir)?;
        let progress = self.dir.join(PROGRESS_FILE);
        std::fs::remove_file(&progress).map_err(|e| StoreError::io(&progress, e))?;
        Ok(manifest)
    }

    fn check(&self, batch: &ActivationBatch) -> Result<()> {
        let spec = &self.spec;
        if batch.d_model != spec.d_model {
            return Err(StoreError::batch("d_model", spec.d_model, batch.d_model));
        }
        if !batch.hooks.keys().eq(spec.hooks.iter()) {
            let names: Vec<&str> = batch.hooks.keys().map(String::as_str).collect();
            return Err(StoreError::batch(
                "hooks",
                spec.hooks.join(", "),
                names.join(", "),
            ));
        }
        let rows = batch.rows();
        for (what, len) in [
            ("doc_ids", batch.doc_ids.len()),
            ("positions", batch.positions.len()),
        ] {
            if len != rows {
                return Err(StoreError::batch(&format!("length of {what}"), rows, len));
            }
        }
        for (hook, matrix) in &batch.hooks {
            if matrix.len() != rows * spec.d_model {
                return Err(StoreError::batch(
                    &format!("values of hook `{hook}` (rows × d_model)"),
                    format!("{rows} × {} = {}", spec.d_model, rows * spec.d_model),
                    matrix.len(),
                ));
            }
        }
        Ok(())
    }

    /// Writes the first `rows` buffered rows as the next shard, then records it as done.
    fn flush(&mut self, rows: usize) -> Result<()> {
        let d = self.spec.d_model;
        let name = shard::shard_file_name(self.shards.len());
        let entry = shard::write(
            &self.dir,
            &name,
            &self.spec,
            &ShardRows {
                token_ids: &self.token_ids[..rows],
                doc_ids: &self.doc_ids[..rows],
                positions: &self.positions[..rows],
                hooks: self.hooks.iter().map(|h| &h[..rows * d]).collect(),
            },
        )?;
        self.token_ids.drain(..rows);
        self.doc_ids.drain(..rows);
        self.positions.drain(..rows);
        for h in &mut self.hooks {
            h.drain(..rows * d);
        }
        self.shards.push(entry);
        self.write_progress()
    }

    fn write_progress(&self) -> Result<()> {
        let path = self.dir.join(PROGRESS_FILE);
        let progress = Progress {
            spec: self.spec.clone(),
            shards: self.shards.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&progress).expect("progress serialises");
        monoscope_core::atomic::write(&path, &bytes).map_err(|e| StoreError::io(&path, e))
    }
}

/// Rows `range` of `batch` as a batch of their own: what a resumed capture uses to skip the
/// rows already stored when they end inside a batch.
pub fn slice_batch(batch: &ActivationBatch, range: Range<usize>) -> ActivationBatch {
    let d = batch.d_model;
    ActivationBatch {
        d_model: d,
        token_ids: batch.token_ids[range.clone()].to_vec(),
        doc_ids: batch.doc_ids[range.clone()].to_vec(),
        positions: batch.positions[range.clone()].to_vec(),
        hooks: batch
            .hooks
            .iter()
            .map(|(k, v)| (k.clone(), v[range.start * d..range.end * d].to_vec()))
            .collect(),
    }
}

/// Creates `dir` if absent; fails if it holds anything.
pub(crate) fn prepare_empty_dir(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            Some(_) => Err(StoreError::NotEmpty { path: dir.into() }),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))
        }
        Err(e) => Err(StoreError::io(dir, e)),
    }
}

fn checked(dir: &Path, spec: StoreSpec) -> Result<StoreSpec> {
    let spec = spec.normalised();
    match spec.problem() {
        Some(reason) => Err(StoreError::InvalidSpec {
            path: dir.into(),
            reason,
        }),
        None => Ok(spec),
    }
}

fn compare_specs(path: &Path, stored: &StoreSpec, given: &StoreSpec) -> Result<()> {
    let fields = |spec: &StoreSpec| match serde_json::to_value(spec) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => unreachable!("a spec serialises to a JSON object"),
    };
    let (stored, given) = (fields(stored), fields(given));
    for (field, was) in &stored {
        let now = &given[field];
        if was != now {
            return Err(StoreError::SpecMismatch {
                path: path.into(),
                field: field.clone(),
                stored: was.to_string(),
                given: now.to_string(),
            });
        }
    }
    Ok(())
}

/// Removes what an interrupted writer may have left besides its completed shards: temporary
/// siblings of our files and shards written after the last progress update (they will be
/// written again, identically).
fn remove_leftovers(dir: &Path, done: &[ShardEntry]) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_temp = name.starts_with(".shard-") || name.starts_with(".progress.json.tmp-");
        let is_undone_shard = name.starts_with("shard-")
            && name.ends_with(".mss")
            && !done.iter().any(|s| s.file == name);
        if is_temp || is_undone_shard {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        }
    }
    Ok(())
}
