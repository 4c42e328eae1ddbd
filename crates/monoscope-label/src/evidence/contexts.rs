//! Pass 3: fills the selected windows with tokens and activations, then turns them into
//! [`Context`]s cut to one document and one capture window.

use std::collections::HashMap;

use monoscope_sae::SparseCodes;

use super::passes::{FeatureStats, Pending, Slot};
use super::{Block, EvidenceOptions};
use crate::format::{Context, FeatureEvidence, Histogram, LogitEffects, QuantileSamples};

#[derive(Debug)]
pub(crate) struct Filler {
    /// Sorted by window start.
    pending: Vec<Pending>,
    next: usize,
    open: Vec<usize>,
}

impl Filler {
    pub fn new(pending: Vec<Pending>) -> Self {
        Filler {
            pending,
            next: 0,
            open: Vec::new(),
        }
    }

    /// Rows arrive in store order, so each window is filled left to right, across shards.
    pub fn add(&mut self, start: u64, block: &Block, codes: &SparseCodes) {
        let end = start + codes.n_rows() as u64;
        while self.next < self.pending.len() && self.pending[self.next].lo < end {
            self.open.push(self.next);
            self.next += 1;
        }
        for &i in &self.open {
            let p = &mut self.pending[i];
            for row in p.lo.max(start)..p.hi.min(end) {
                let local = (row - start) as usize;
                let (features, values) = codes.row(local);
                let value = features
                    .iter()
                    .position(|&f| f == p.feature)
                    .map_or(0.0, |k| values[k]);
                p.token_ids.push(block.token_ids[local]);
                p.doc_ids.push(block.doc_ids[local]);
                p.positions.push(block.positions[local]);
                p.activations.push(value);
            }
        }
        let pending = &self.pending;
        self.open.retain(|&i| pending[i].hi > end);
    }

    pub fn finish(
        self,
        stats: Vec<FeatureStats>,
        options: &EvidenceOptions,
        token_text: &dyn Fn(u32) -> String,
    ) -> Vec<FeatureEvidence> {
        let mut texts: HashMap<u32, String> = HashMap::new();
        let mut text = |id: u32| texts.entry(id).or_insert_with(|| token_text(id)).clone();
        let mut out: Vec<FeatureEvidence> = stats
            .iter()
            .enumerate()
            .map(|(f, s)| empty_evidence(f as u32, s, options))
            .collect();
        for p in self.pending {
            let evidence = &mut out[p.feature as usize];
            let Some(context) = cut(&p, &mut text) else {
                continue;
            };
            match p.slot {
                Slot::Top => evidence.top.push(context),
                Slot::Quantile(j) => evidence.quantiles[j].examples.push(context),
                Slot::Random => {
                    let silent = context.activations.iter().all(|&a| a == 0.0);
                    if silent && evidence.random.len() < options.random_examples {
                        evidence.random.push(context);
                    }
                }
            }
        }
        for evidence in &mut out {
            let focus_value = |c: &Context| c.activations[c.focus as usize];
            evidence.top.sort_by(|a, b| {
                focus_value(b)
                    .total_cmp(&focus_value(a))
                    .then(a.row.cmp(&b.row))
            });
            for q in &mut evidence.quantiles {
                q.examples.sort_by_key(|c| c.row);
            }
        }
        out
    }
}

fn empty_evidence(feature: u32, s: &FeatureStats, options: &EvidenceOptions) -> FeatureEvidence {
    let live = s.fires > 0;
    let bins = options.histogram_bins;
    FeatureEvidence {
        feature,
        fires: s.fires,
        frequency: 0.0,
        max_activation: s.max,
        mean_activation: if live {
            (s.sum / s.fires as f64) as f32
        } else {
            0.0
        },
        histogram: if live {
            Histogram {
                edges: (0..=bins).map(|i| s.max * i as f32 / bins as f32).collect(),
                counts: s.hist.clone(),
            }
        } else {
            Histogram::default()
        },
        top: Vec::new(),
        quantiles: if live {
            s.bounds
                .windows(2)
                .map(|w| QuantileSamples {
                    low: w[0],
                    high: w[1],
                    examples: Vec::new(),
                })
                .collect()
        } else {
            Vec::new()
        },
        random: Vec::new(),
        logits: LogitEffects::default(),
    }
}

/// The window cut to the run of consecutive positions of one document around the focus.
fn cut(p: &Pending, text: &mut impl FnMut(u32) -> String) -> Option<Context> {
    let n = p.token_ids.len();
    let focus = (p.focus_row.checked_sub(p.lo)?) as usize;
    if focus >= n {
        return None;
    }
    let joined =
        |i: usize| p.doc_ids[i] == p.doc_ids[i + 1] && p.positions[i] + 1 == p.positions[i + 1];
    let mut lo = focus;
    while lo > 0 && joined(lo - 1) {
        lo -= 1;
    }
    let mut hi = focus + 1;
    while hi < n && joined(hi - 1) {
        hi += 1;
    }
    Some(Context {
        row: p.focus_row,
        doc: p.doc_ids[focus],
        position: p.positions[focus],
        tokens: p.token_ids[lo..hi].iter().map(|&t| text(t)).collect(),
        activations: p.activations[lo..hi]
            .iter()
            .map(|&a| round_for_display(a))
            .collect(),
        focus: (focus - lo) as u32,
    })
}

/// Four significant digits: the evidence file is read by people and a browser, and the
/// shortest printing of a rounded f32 is a third the length of an unrounded one.
pub(crate) fn round_for_display(v: f32) -> f32 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f32.powi(3 - v.abs().log10().floor() as i32);
    let rounded = (v * scale).round() / scale;
    // A firing token must still read as firing.
    if rounded == 0.0 { v } else { rounded }
}
