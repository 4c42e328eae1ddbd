//! Per-feature evidence from an SAE and an activation store, in three streaming passes.
//!
//! 1. Count, sum and maximum per feature; a bounded min-heap of the highest activations; a
//!    fine logarithmic histogram (fixed edges, so it needs no maximum in advance) from which
//!    the activation quantiles are read; the active features of a seeded random pool of rows.
//! 2. With the maxima and quantile bounds known: the linear histogram, and a seeded reservoir
//!    sample of rows per (feature, quantile).
//! 3. The windows of every selected row are filled with their tokens and the feature's
//!    activations (a window may straddle shards), then cut where the document or the capture
//!    window changes.
//!
//! Each pass encodes every row once, so time is linear in tokens; memory is bounded by the
//! number of features times the examples kept, never by the store's size.

mod contexts;
pub mod logits;
mod passes;

use monoscope_sae::{Sae, SparseCodes};
use monoscope_store::Store;

use crate::LabelError;
use crate::format::FeatureEvidence;

pub use logits::logit_effects;

/// How much evidence to keep per feature.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceOptions {
    pub hook: String,
    pub top_n: usize,
    /// Tokens on each side of a selected token.
    pub window: usize,
    pub quantiles: usize,
    pub quantile_examples: usize,
    pub random_examples: usize,
    pub histogram_bins: usize,
    pub seed: u64,
}

/// What the passes report as they go.
pub trait Observer {
    /// Cancellation: return `true` to stop.
    fn cancelled(&self) -> bool {
        false
    }
    /// `rows` more store rows processed in pass `pass` (1..=3).
    fn rows_done(&self, _pass: u8, _rows: u64) {}
}

/// An observer that never cancels and shows nothing.
#[derive(Debug, Default)]
pub struct Quiet;
impl Observer for Quiet {}

/// Runs the three passes; logit effects are left empty (see [`logit_effects`]).
pub fn collect_evidence(
    sae: &Sae,
    store: &Store,
    options: &EvidenceOptions,
    token_text: &dyn Fn(u32) -> String,
    observer: &dyn Observer,
) -> Result<Vec<FeatureEvidence>, LabelError> {
    if store.d_model() != sae.d_in {
        return Err(LabelError::Invalid(format!(
            "{}: d_model = {} but the SAE takes d_in = {}",
            store.dir().display(),
            store.d_model(),
            sae.d_in
        )));
    }
    store.hook_index(&options.hook)?;
    let mut first = passes::FirstPass::new(sae.d_sae, store.row_count(), options);
    for_each_block(
        sae,
        store,
        &options.hook,
        observer,
        1,
        |start, block, codes| {
            first.add(start, block, codes);
        },
    )?;
    let mut second = first.into_second(options);
    for_each_block(sae, store, &options.hook, observer, 2, |start, _, codes| {
        second.add(start, codes);
    })?;
    let (stats, mut pending) = second.finish(options);
    pending.sort_by_key(|c| c.lo);
    let mut filler = contexts::Filler::new(pending);
    for_each_block(
        sae,
        store,
        &options.hook,
        observer,
        3,
        |start, block, codes| {
            filler.add(start, block, codes);
        },
    )?;
    let mut evidence = filler.finish(stats, options, token_text);
    let rows = store.row_count().max(1) as f64;
    for e in &mut evidence {
        e.frequency = e.fires as f64 / rows;
    }
    Ok(evidence)
}

/// Store rows with their ids, as the passes see them.
#[derive(Debug)]
pub(crate) struct Block {
    pub token_ids: Vec<u32>,
    pub doc_ids: Vec<u32>,
    pub positions: Vec<u32>,
}

/// Reads the store shard by shard and encodes each shard's rows.
fn for_each_block(
    sae: &Sae,
    store: &Store,
    hook: &str,
    observer: &dyn Observer,
    pass: u8,
    mut visit: impl FnMut(u64, &Block, &SparseCodes),
) -> Result<(), LabelError> {
    for shard in 0..store.shard_count() {
        if observer.cancelled() {
            return Err(LabelError::Cancelled);
        }
        let range = store.shard_rows(shard);
        let mut batch = store.rows_of(range.clone(), &[hook])?;
        let activations = batch.hooks.remove(hook).unwrap_or_default();
        if let Some(bad) = activations.iter().position(|v| !v.is_finite()) {
            return Err(LabelError::Invalid(format!(
                "{}: shard {shard}, row {}: activation {} is not finite",
                store.dir().display(),
                range.start + (bad / sae.d_in) as u64,
                activations[bad]
            )));
        }
        let codes = sae.encode_sparse(&activations)?;
        let block = Block {
            token_ids: batch.token_ids,
            doc_ids: batch.doc_ids,
            positions: batch.positions,
        };
        visit(range.start, &block, &codes);
        observer.rows_done(pass, range.end - range.start);
    }
    Ok(())
}
