//! Reading the rows an analysis works on and encoding them with every SAE of the family.
//!
//! The rows are the last `max_tokens` of the store: the train stage holds its last shards out
//! of training, so when the store is larger than that the SAEs are judged on rows they never
//! saw. Rows are read one shard at a time (a shard is decoded whole whatever part of it is
//! asked for), so memory holds one shard's activations at a time.

use std::ops::Range;

use monoscope_sae::{Sae, SparseCodes};
use monoscope_store::Store;

use crate::error::AnalysisError;

/// The hook to read: the configured one, the SAE's, or the store's only one.
pub fn choose_hook(
    configured: Option<&str>,
    sae: &Sae,
    store: &Store,
) -> Result<String, AnalysisError> {
    if let Some(hook) = configured
        .map(str::to_string)
        .or_else(|| sae.metadata.hook_name.clone())
    {
        store.hook_index(&hook)?;
        return Ok(hook);
    }
    match store.manifest().hooks.as_slice() {
        [only] => Ok(only.clone()),
        hooks => Err(AnalysisError::Invalid(format!(
            "{}: the store has hooks {hooks:?} and the SAE names none: set `hook`",
            store.dir().display()
        ))),
    }
}

/// The last `max_tokens` rows of the store (all of them when it has fewer).
pub fn tail_rows(store: &Store, max_tokens: u64) -> Range<u64> {
    let rows = store.row_count();
    rows.saturating_sub(max_tokens)..rows
}

/// The ids of a run of consecutive rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowIds {
    pub token_ids: Vec<u32>,
    pub doc_ids: Vec<u32>,
    pub positions: Vec<u32>,
}

impl RowIds {
    pub fn len(&self) -> usize {
        self.token_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.token_ids.is_empty()
    }

    /// Whether row `row` continues row `row - 1` in the same document.
    pub fn continues(&self, row: usize) -> bool {
        row > 0
            && self.doc_ids[row] == self.doc_ids[row - 1]
            && self.positions[row] == self.positions[row - 1].wrapping_add(1)
    }
}

/// One shard's part of the rows, encoded by every SAE.
#[derive(Debug)]
pub struct Chunk {
    /// Index of the chunk's first row among the scanned rows (0 is `range.start`).
    pub first: usize,
    pub ids: RowIds,
    /// One per SAE, in the order given.
    pub codes: Vec<SparseCodes>,
}

/// The pieces of `range` that lie in one shard each.
fn shard_pieces(store: &Store, range: &Range<u64>) -> Vec<Range<u64>> {
    (0..store.shard_count())
        .map(|i| store.shard_rows(i))
        .map(|shard| shard.start.max(range.start)..shard.end.min(range.end))
        .filter(|piece| piece.start < piece.end)
        .collect()
}

/// The token ids, document ids and positions of `range` (no activations are decoded).
pub fn read_ids(store: &Store, range: &Range<u64>) -> Result<RowIds, AnalysisError> {
    let mut ids = RowIds::default();
    for piece in shard_pieces(store, range) {
        let rows = store.rows_of(piece, &[])?;
        ids.token_ids.extend(rows.token_ids);
        ids.doc_ids.extend(rows.doc_ids);
        ids.positions.extend(rows.positions);
    }
    Ok(ids)
}

/// Empties the codes of the rows that `drop` marks: they fire no feature.
fn drop_rows(codes: &SparseCodes, drop: &[bool]) -> SparseCodes {
    let mut out = SparseCodes {
        d_sae: codes.d_sae,
        row_ptr: Vec::with_capacity(codes.row_ptr.len()),
        indices: Vec::with_capacity(codes.indices.len()),
        values: Vec::with_capacity(codes.values.len()),
    };
    out.row_ptr.push(0);
    for (r, &dropped) in drop.iter().enumerate().take(codes.n_rows()) {
        if !dropped {
            let (idx, val) = codes.row(r);
            out.indices.extend_from_slice(idx);
            out.values.extend_from_slice(val);
        }
        out.row_ptr.push(out.indices.len());
    }
    out
}

/// Reads `range` of `hook` shard by shard, encodes each piece with every SAE of `saes`, and
/// hands it to `visit`; an error from `visit` (e.g. [`AnalysisError::Cancelled`]) stops the scan.
///
/// Rows whose norm is above `massive_norm` fire no feature. They are the attention sinks and
/// their like, hundreds of times the usual norm and left out of training: encoded, they light
/// up whatever features have a component along them, with activations that dwarf the rest, and
/// every feature's top tokens would be theirs.
pub fn scan(
    store: &Store,
    hook: &str,
    range: &Range<u64>,
    saes: &[&Sae],
    massive_norm: Option<f32>,
    visit: &mut dyn FnMut(Chunk) -> Result<(), AnalysisError>,
) -> Result<(), AnalysisError> {
    if let Some(sae) = saes.iter().find(|s| s.d_in != store.d_model()) {
        return Err(AnalysisError::Invalid(format!(
            "{}: the store's rows have width {}, but an SAE of the family takes d_in = {}: \
             connect the store the family was trained on",
            store.dir().display(),
            store.d_model(),
            sae.d_in
        )));
    }
    let mut first = 0;
    for piece in shard_pieces(store, range) {
        let mut rows = store.rows_of(piece, &[hook])?;
        let activations = rows.hooks.remove(hook).unwrap_or_default();
        let mut codes = saes
            .iter()
            .map(|sae| sae.encode_sparse(&activations))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(limit) = massive_norm {
            let d = store.d_model().max(1);
            let massive: Vec<bool> = activations
                .chunks(d)
                .map(|row| row.iter().map(|v| v * v).sum::<f32>().sqrt() > limit)
                .collect();
            if massive.iter().any(|&m| m) {
                codes = codes.iter().map(|c| drop_rows(c, &massive)).collect();
            }
        }
        drop(activations);
        let ids = RowIds {
            token_ids: rows.token_ids,
            doc_ids: rows.doc_ids,
            positions: rows.positions,
        };
        let len = ids.len();
        visit(Chunk { first, ids, codes })?;
        first += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_rows_fire_nothing_and_the_others_keep_their_codes() {
        let codes = SparseCodes {
            d_sae: 4,
            row_ptr: vec![0, 2, 3, 5],
            indices: vec![0, 3, 1, 2, 3],
            values: vec![1.0, 2.0, 3.0, 4.0, 5.0],
        };
        let out = drop_rows(&codes, &[false, true, false]);
        assert_eq!(out.n_rows(), 3);
        assert_eq!(out.row(0), (&[0u32, 3][..], &[1.0f32, 2.0][..]));
        assert_eq!(out.row(1), (&[][..], &[][..]));
        assert_eq!(out.row(2), (&[2u32, 3][..], &[4.0f32, 5.0][..]));
    }
}
