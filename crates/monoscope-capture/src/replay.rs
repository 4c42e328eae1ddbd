//! Replaying a finished store onto the stream. The executor reruns a complete capture when a
//! consumer of its stream runs again (a stream cannot be replayed by the executor); when the
//! store on disk was made by this very configuration, its rows are read back and sent instead
//! of being computed again, and the store is left untouched.

use std::path::Path;
use std::sync::Arc;

use monoscope_core::{Message, StageContext, StageError, port_names};
use monoscope_store::{MANIFEST_FILE, Store, StoreSpec};

use crate::error::CaptureError;

/// Rows per replayed batch.
const ROWS: u64 = 4096;

/// The finished store at `dir`, if it holds exactly what `spec` would capture (`rows` rows).
pub(crate) fn finished_store(dir: &Path, spec: &StoreSpec, rows: u64) -> Option<Store> {
    if !dir.join(MANIFEST_FILE).exists() {
        return None;
    }
    let store = Store::open(dir).ok()?;
    let m = store.manifest();
    let mut hooks = spec.hooks.clone();
    hooks.sort();
    let same = m.model == spec.model
        && m.hooks == hooks
        && m.d_model == spec.d_model
        && m.dtype == spec.dtype
        && m.context_length == spec.context_length
        && m.metadata == spec.metadata
        && m.rows == rows;
    same.then_some(store)
}

/// Sends every row of `store`, in order, on the `activations` port.
pub(crate) fn send_rows(store: &Store, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
    let hooks: Vec<&str> = store.manifest().hooks.iter().map(String::as_str).collect();
    let total = store.row_count();
    ctx.progress.set_length(total);
    ctx.progress
        .set_message(format!("replaying {}", store.dir().display()));
    let mut start = 0;
    while start < total {
        ctx.cancel.check()?;
        let end = (start + ROWS).min(total);
        let batch = store
            .rows_of(start..end, &hooks)
            .map_err(CaptureError::from)?;
        ctx.send(
            port_names::ACTIVATIONS,
            Message::Activations(Arc::new(batch)),
        )?;
        ctx.progress.inc(end - start);
        start = end;
    }
    Ok(())
}
