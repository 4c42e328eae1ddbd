//! Joining part stores into one, and running a capture on a cluster.
//!
//! # Running a capture on a cluster
//!
//! A capture over a large corpus splits into `N` independent jobs. Job `i` captures the
//! documents that `shard_of(doc, N) == i` selects (`monoscope capture --shard i/N`) into its own
//! *part store* on shared storage; when all have finished, `monoscope store merge` joins the
//! parts into one store. No job talks to another, so any scheduler that can run an array of
//! jobs will do, and a failed job is simply re-run: it resumes its part store
//! ([`crate::StoreWriter::resume`]) from its last completed shard.
//!
//! Slurm job array (`sbatch capture.sh`):
//!
//! ```text
//! #!/bin/bash
//! #SBATCH --array=0-63
//! #SBATCH --gpus=1 --time=04:00:00
//! monoscope capture --shard ${SLURM_ARRAY_TASK_ID}/64 --out /shared/acts/part-${SLURM_ARRAY_TASK_ID}
//! ```
//!
//! then, after the array (`sbatch --dependency=afterok:<array job id> merge.sh`):
//!
//! ```text
//! monoscope store merge /shared/acts/part-{0..63} --out /shared/acts/all
//! ```
//!
//! Kubernetes indexed Job: `completionMode: Indexed`, `completions: 64`, `parallelism` as many
//! as there are GPUs, each pod running
//! `monoscope capture --shard $(JOB_COMPLETION_INDEX)/64 --out /shared/acts/part-$(JOB_COMPLETION_INDEX)`
//! with the shared volume mounted; a second Job runs the merge once the first has completed.
//!
//! Merging never re-encodes data: each part's shard files are hard-linked (copied where the
//! parts live on another file system) into the output under new names `shard-000000.mss`, ...
//! in part order, and the manifests are concatenated, so merging is fast and the parts stay
//! valid (delete them once the merged store verifies). Rows keep their order: part 0's rows,
//! then part 1's, and so on; when the capture assigns documents to parts in contiguous ranges,
//! the merged store holds the same rows in the same order as a single-job capture.

use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};
use crate::manifest::{Manifest, ShardEntry};
use crate::shard::{self, ShardReader};

/// Joins the finished stores `parts` (same model, hooks, dtype, d_model and context length)
/// into a new store at `out`, which must be absent or empty. Returns the merged manifest.
pub fn merge<P: AsRef<Path>>(parts: &[P], out: &Path) -> Result<Manifest> {
    let parts: Vec<PathBuf> = parts.iter().map(|p| p.as_ref().to_path_buf()).collect();
    let Some(first_dir) = parts.first() else {
        return Err(StoreError::InvalidSpec {
            path: out.into(),
            reason: "merge needs at least one part store".into(),
        });
    };
    let manifests: Vec<Manifest> = parts
        .iter()
        .map(|p| Manifest::read(p))
        .collect::<Result<_>>()?;
    let first = &manifests[0];
    for (dir, m) in parts.iter().zip(&manifests).skip(1) {
        let mismatch = |what: &str, expected: String, found: String| StoreError::MergeMismatch {
            first: first_dir.clone(),
            part: dir.clone(),
            what: what.into(),
            expected,
            found,
        };
        if m.model != first.model {
            return Err(mismatch(
                "model",
                format!("{:?}", first.model),
                format!("{:?}", m.model),
            ));
        }
        if m.hooks != first.hooks {
            return Err(mismatch(
                "hooks",
                first.hooks.join(", "),
                m.hooks.join(", "),
            ));
        }
        if m.d_model != first.d_model {
            return Err(mismatch(
                "d_model",
                first.d_model.to_string(),
                m.d_model.to_string(),
            ));
        }
        if m.dtype != first.dtype {
            return Err(mismatch(
                "dtype",
                first.dtype.to_string(),
                m.dtype.to_string(),
            ));
        }
        if m.context_length != first.context_length {
            let (a, b) = (first.context_length, m.context_length);
            return Err(mismatch("context_length", a.to_string(), b.to_string()));
        }
    }
    // Every part's shards must be present and match their manifest before anything is linked.
    for (dir, m) in parts.iter().zip(&manifests) {
        for entry in &m.shards {
            ShardReader::open(dir, entry, m)?;
        }
    }
    crate::writer::prepare_empty_dir(out)?;

    let mut shards = Vec::new();
    for (dir, m) in parts.iter().zip(&manifests) {
        for entry in &m.shards {
            let file = shard::shard_file_name(shards.len());
            link_or_copy(&dir.join(&entry.file), &out.join(&file))?;
            shards.push(ShardEntry {
                file,
                ..entry.clone()
            });
        }
    }
    let metadata = if manifests.iter().all(|m| m.metadata == first.metadata) {
        first.metadata.clone()
    } else {
        serde_json::json!({ "parts": manifests.iter().map(|m| &m.metadata).collect::<Vec<_>>() })
    };
    let merged = Manifest {
        rows: shards.iter().map(|s| s.rows).sum(),
        shards,
        metadata,
        ..first.clone()
    };
    merged.write(out)?;
    Ok(merged)
}

/// Hard-links `from` to `to`; copies (atomically) where a link is impossible, e.g. across
/// file systems.
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    let tmp = monoscope_core::atomic::temp_path(to);
    std::fs::copy(from, &tmp)
        .and_then(|_| std::fs::rename(&tmp, to))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            StoreError::io(to, e)
        })
}
