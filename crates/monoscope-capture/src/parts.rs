//! `parts = N` for the capture: each part captures its share of the whole capture's context
//! windows into its own store; the merge writes their rows, in part order, into one store with
//! the capture's shard size, so that the result is the store a capture in one piece writes.

use monoscope_core::{StageContext, StageError, Work, port_names};
use monoscope_store::{Store, StoreSpec};

use crate::error::CaptureError;
use crate::stage::{CaptureConfig, announce_store, open_store};

/// The key a part's store adds to the capture settings in its manifest: `"i/N"`.
pub(crate) const PART_KEY: &str = "part";

/// Rows copied per read.
const ROWS: u64 = 4096;

/// Joins the parts' stores into `<stage_dir>/store`, resuming an interrupted merge.
pub(crate) fn merge(
    config: &CaptureConfig,
    parts: &[Vec<(String, monoscope_core::Artifact)>],
    ctx: &mut StageContext<'_>,
) -> Result<(), StageError> {
    let artifacts = Work::part_artifacts(parts, port_names::STORE)?;
    let stores: Vec<Store> = artifacts
        .iter()
        .map(|a| Store::open(&a.path))
        .collect::<Result<_, _>>()
        .map_err(CaptureError::from)?;
    let first = stores[0].manifest().clone();
    for (store, artifact) in stores.iter().zip(&artifacts).skip(1) {
        let m = store.manifest();
        let same = m.model == first.model
            && m.hooks == first.hooks
            && m.d_model == first.d_model
            && m.dtype == first.dtype
            && m.context_length == first.context_length;
        if !same {
            return Err(CaptureError::Invalid(format!(
                "{}: this part's store differs from part 0's ({}) in model, hooks, width, dtype \
                 or context length",
                artifact.path.display(),
                artifacts[0].path.display()
            ))
            .into());
        }
    }
    let mut spec = StoreSpec::new(first.model.clone(), first.hooks.clone(), first.d_model);
    spec.dtype = first.dtype;
    spec.context_length = first.context_length;
    spec.rows_per_shard = config.rows_per_shard;
    spec.zstd_level = config.zstd_level;
    spec.metadata = first.metadata.clone();
    if let Some(settings) = spec.metadata.as_object_mut() {
        settings.remove(PART_KEY);
    }

    let dir = ctx.stage_dir.join(monoscope_artifacts::capture::STORE_DIR);
    let mut writer = open_store(spec, &dir)?;
    let already = writer.rows_stored();
    let total: u64 = stores.iter().map(Store::row_count).sum();
    ctx.progress.set_length(total);
    ctx.progress.set_position(already);
    ctx.progress
        .set_message(format!("joining {} parts", stores.len()));
    let hooks: Vec<&str> = first.hooks.iter().map(String::as_str).collect();
    // Rows before this part, over all parts.
    let mut offset = 0u64;
    for store in &stores {
        let rows = store.row_count();
        let mut start = already.saturating_sub(offset).min(rows);
        while start < rows {
            ctx.cancel.check()?;
            let end = (start + ROWS).min(rows);
            let batch = store
                .rows_of(start..end, &hooks)
                .map_err(CaptureError::from)?;
            writer.write_batch(&batch).map_err(CaptureError::from)?;
            ctx.progress.inc(end - start);
            start = end;
        }
        offset += rows;
    }
    let manifest = writer.finish().map_err(CaptureError::from)?;
    announce_store(ctx, &dir, &manifest, &first.model.name)
}
