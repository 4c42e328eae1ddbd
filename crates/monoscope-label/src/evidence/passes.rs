//! The state of the first two passes and the choice of the rows whose windows are kept.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use monoscope_sae::SparseCodes;

use super::{Block, EvidenceOptions};

/// Fine histogram of `log2(activation)`: `LOG_BINS_PER_OCTAVE` bins per octave from
/// `2^-LOG_LOW_OCTAVE`. Fixed edges let pass 1 count before any maximum is known; quantile
/// bounds read from it are within one bin (about 9%) of the exact ones.
const LOG_BINS_PER_OCTAVE: f32 = 8.0;
const LOG_LOW_OCTAVE: f32 = 20.0;
const LOG_BINS: usize = 320;

fn log_bin(v: f32) -> usize {
    let b = (v.log2() + LOG_LOW_OCTAVE) * LOG_BINS_PER_OCTAVE;
    (b.max(0.0) as usize).min(LOG_BINS - 1)
}

fn log_bin_upper_edge(bin: usize) -> f32 {
    ((bin + 1) as f32 / LOG_BINS_PER_OCTAVE - LOG_LOW_OCTAVE).exp2()
}

/// A heap key ordering by activation, then preferring the earlier row. Activations are
/// positive, so their bit patterns order like their values.
type TopKey = Reverse<(u32, Reverse<u64>)>;

/// Rows from which the random non-firing contexts are drawn: a seeded uniform sample of the
/// store, with the features active on each.
fn random_pool(rows: u64, options: &EvidenceOptions) -> HashMap<u64, Vec<u32>> {
    let size = (8 * options.random_examples).max(256) as u64;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0x5241_4e44);
    if rows <= size {
        return (0..rows).map(|r| (r, Vec::new())).collect();
    }
    let mut chosen = HashMap::new();
    while (chosen.len() as u64) < size {
        chosen.insert(rng.random_range(0..rows), Vec::new());
    }
    chosen
}

/// Pass 1: counts, sums, maxima, top rows, the log histogram and the random pool.
#[derive(Debug)]
pub(crate) struct FirstPass {
    d_sae: usize,
    rows: u64,
    fires: Vec<u64>,
    sums: Vec<f64>,
    maxes: Vec<f32>,
    heaps: Vec<BinaryHeap<TopKey>>,
    heap_cap: usize,
    log_hist: Vec<u32>,
    pool: HashMap<u64, Vec<u32>>,
}

impl FirstPass {
    pub fn new(d_sae: usize, rows: u64, options: &EvidenceOptions) -> Self {
        FirstPass {
            d_sae,
            rows,
            fires: vec![0; d_sae],
            sums: vec![0.0; d_sae],
            maxes: vec![0.0; d_sae],
            heaps: vec![BinaryHeap::new(); d_sae],
            // Neighbouring tokens often share a high activation; keep spares so that
            // `top_n` windows remain after overlapping ones are dropped.
            heap_cap: 4 * options.top_n.max(1),
            log_hist: vec![0; d_sae * LOG_BINS],
            pool: random_pool(rows, options),
        }
    }

    pub fn add(&mut self, start: u64, _block: &Block, codes: &SparseCodes) {
        for r in 0..codes.n_rows() {
            let row = start + r as u64;
            let (features, values) = codes.row(r);
            if let Some(active) = self.pool.get_mut(&row) {
                active.extend_from_slice(features);
            }
            for (&f, &v) in features.iter().zip(values) {
                let f = f as usize;
                self.fires[f] += 1;
                self.sums[f] += v as f64;
                self.maxes[f] = self.maxes[f].max(v);
                self.log_hist[f * LOG_BINS + log_bin(v)] += 1;
                let heap = &mut self.heaps[f];
                let key = Reverse((v.to_bits(), Reverse(row)));
                if heap.len() < self.heap_cap {
                    heap.push(key);
                } else if heap.peek().is_some_and(|min| key < *min) {
                    heap.pop();
                    heap.push(key);
                }
            }
        }
    }

    /// Quantile bounds per feature: `q + 1` nondecreasing values from 0 to the maximum,
    /// splitting the firing tokens into groups of (nearly) equal size.
    fn quantile_bounds(&self, q: usize) -> Vec<f32> {
        let mut bounds = vec![0.0; self.d_sae * (q + 1)];
        for f in 0..self.d_sae {
            let b = &mut bounds[f * (q + 1)..(f + 1) * (q + 1)];
            let max = self.maxes[f];
            b[q] = max;
            let n = self.fires[f];
            if n == 0 {
                continue;
            }
            let hist = &self.log_hist[f * LOG_BINS..(f + 1) * LOG_BINS];
            let mut cumulative = 0u64;
            let mut bin = 0;
            for (j, bound) in b.iter_mut().enumerate().take(q).skip(1) {
                let target = (j as u64 * n).div_ceil(q as u64);
                while bin < LOG_BINS && cumulative + (hist[bin] as u64) < target {
                    cumulative += hist[bin] as u64;
                    bin += 1;
                }
                *bound = log_bin_upper_edge(bin.min(LOG_BINS - 1)).min(max);
            }
        }
        bounds
    }

    pub fn into_second(self, options: &EvidenceOptions) -> SecondPass {
        let q = options.quantiles;
        let bounds = self.quantile_bounds(q);
        SecondPass {
            hist: vec![0; self.d_sae * options.histogram_bins],
            reservoirs: vec![Vec::new(); self.d_sae * q],
            seen: vec![0; self.d_sae * q],
            reservoir_cap: 2 * options.quantile_examples,
            rng: ChaCha8Rng::seed_from_u64(options.seed ^ 0x5155_414e),
            bounds,
            first: self,
        }
    }
}

/// Pass 2: the linear histogram and a reservoir of rows per (feature, quantile).
#[derive(Debug)]
pub(crate) struct SecondPass {
    first: FirstPass,
    bounds: Vec<f32>,
    hist: Vec<u64>,
    reservoirs: Vec<Vec<u64>>,
    seen: Vec<u64>,
    reservoir_cap: usize,
    rng: ChaCha8Rng,
}

/// Which list of a feature's evidence a pending context belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Top,
    Quantile(usize),
    Random,
}

/// A selected row whose window pass 3 fills.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub feature: u32,
    pub slot: Slot,
    pub focus_row: u64,
    /// Window rows `[lo, hi)`.
    pub lo: u64,
    pub hi: u64,
    pub token_ids: Vec<u32>,
    pub doc_ids: Vec<u32>,
    pub positions: Vec<u32>,
    pub activations: Vec<f32>,
}

/// The numbers of one feature, without its contexts.
#[derive(Debug, Clone)]
pub(crate) struct FeatureStats {
    pub fires: u64,
    pub sum: f64,
    pub max: f32,
    pub hist: Vec<u64>,
    /// `quantiles + 1` bounds.
    pub bounds: Vec<f32>,
}

impl SecondPass {
    pub fn add(&mut self, start: u64, codes: &SparseCodes) {
        let bins = self.hist.len() / self.first.d_sae;
        let q = self.reservoirs.len() / self.first.d_sae;
        for r in 0..codes.n_rows() {
            let row = start + r as u64;
            let (features, values) = codes.row(r);
            for (&f, &v) in features.iter().zip(values) {
                let f = f as usize;
                let max = self.first.maxes[f];
                let bin = ((v / max * bins as f32) as usize).min(bins - 1);
                self.hist[f * bins + bin] += 1;
                let inner = &self.bounds[f * (q + 1) + 1..f * (q + 1) + q];
                let bucket = f * q + inner.partition_point(|&b| b <= v);
                self.seen[bucket] += 1;
                let reservoir = &mut self.reservoirs[bucket];
                if reservoir.len() < self.reservoir_cap {
                    reservoir.push(row);
                } else {
                    let j = self.rng.random_range(0..self.seen[bucket]);
                    if (j as usize) < self.reservoir_cap {
                        reservoir[j as usize] = row;
                    }
                }
            }
        }
    }

    /// Per-feature numbers, and the rows whose windows to fill.
    pub fn finish(self, options: &EvidenceOptions) -> (Vec<FeatureStats>, Vec<Pending>) {
        let SecondPass {
            first,
            bounds,
            hist,
            reservoirs,
            ..
        } = self;
        let (d_sae, q, bins) = (first.d_sae, options.quantiles, options.histogram_bins);
        let window = options.window as u64;
        let mut pending = Vec::new();
        let mut stats = Vec::with_capacity(d_sae);
        let mut pool: Vec<(&u64, &Vec<u32>)> = first.pool.iter().collect();
        pool.sort_by_key(|(row, _)| **row);
        for f in 0..d_sae {
            stats.push(FeatureStats {
                fires: first.fires[f],
                sum: first.sums[f],
                max: first.maxes[f],
                hist: hist[f * bins..(f + 1) * bins].to_vec(),
                bounds: bounds[f * (q + 1)..(f + 1) * (q + 1)].to_vec(),
            });
            if first.fires[f] == 0 {
                continue;
            }
            let mut push = |slot, row: u64| {
                pending.push(Pending {
                    feature: f as u32,
                    slot,
                    focus_row: row,
                    lo: row.saturating_sub(window),
                    hi: (row + window + 1).min(first.rows),
                    token_ids: Vec::new(),
                    doc_ids: Vec::new(),
                    positions: Vec::new(),
                    activations: Vec::new(),
                })
            };
            let mut chosen: Vec<u64> = Vec::new();
            let overlaps =
                |chosen: &[u64], row: u64| chosen.iter().any(|&c| c.abs_diff(row) <= window);
            let mut top = first.heaps[f].clone().into_sorted_vec();
            // into_sorted_vec is ascending in the Reverse key: highest activation first.
            top.truncate(first.heap_cap);
            for Reverse((_, Reverse(row))) in top {
                if chosen.len() == options.top_n {
                    break;
                }
                if !overlaps(&chosen, row) {
                    chosen.push(row);
                    push(Slot::Top, row);
                }
            }
            for j in 0..q {
                let mut rows = reservoirs[f * q + j].clone();
                rows.sort_unstable();
                let mut taken = 0;
                for row in rows {
                    if taken == options.quantile_examples {
                        break;
                    }
                    if !overlaps(&chosen, row) {
                        chosen.push(row);
                        push(Slot::Quantile(j), row);
                        taken += 1;
                    }
                }
            }
            let mut candidates: Vec<u64> = pool
                .iter()
                .filter(|(_, active)| !active.contains(&(f as u32)))
                .map(|(row, _)| **row)
                .collect();
            let mut rng = ChaCha8Rng::seed_from_u64(
                options.seed ^ (f as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            candidates.shuffle(&mut rng);
            // Twice as many as needed: pass 3 drops windows where the feature fires elsewhere.
            for row in candidates.into_iter().take(2 * options.random_examples) {
                push(Slot::Random, row);
            }
        }
        (stats, pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_bins_cover_the_value_they_hold() {
        for v in [1e-4f32, 0.01, 0.5, 1.0, 3.7, 250.0] {
            let b = log_bin(v);
            assert!(log_bin_upper_edge(b) >= v, "{v}");
            assert!(b == 0 || log_bin_upper_edge(b - 1) <= v * 1.0001, "{v}");
        }
    }
}
