//! Approximate neighbours for dictionaries too large for the exact search: an inverted file
//! over the unit directions (IVF-flat), and recall@k against the exact search on a sample of
//! queries, so every approximate answer comes with its measured quality.
//!
//! Build: spherical k-means (the private `kmeans` module) splits the live keys into `nlist`
//! cells (default `4·√n`), trained on up to `train_per_list` keys per cell (by default every
//! key up to 262,144 of them), and every key joins the cell of its most similar centroid.
//! Search: every query notes its `nprobe` most similar centroids; then, cell by cell, the
//! queries that probe a cell are scored against its members in `gemm` tiles and folded into
//! their top-k lists. Both the centroid steps and the scan are the exact search's tiles, so
//! the whole costs about `n·nlist·d` products per k-means iteration and for the probes, plus
//! `n·nprobe·(n/nlist)·d` for the scan, against `n²·d` for exact: at `nlist = 4·√n` the scan
//! is `nprobe / nlist` of the exact search. Cells are scanned in parallel, one
//! single-threaded `gemm` per worker, because the tiles are small (a cell holds ~`√n / 4`
//! keys) and a parallel `gemm` per small tile would spend its time synchronising.
//!
//! For a dictionary against itself every scored pair is offered to both of its features, so
//! a pair is found when either one probes the other's cell. This costs no extra product and
//! is what makes a few dozen probes enough (planted 65,536 × 576: recall@10 0.975 one-sided,
//! 0.993 both ways, same scan).
//!
//! Memory beyond the directions and the answer (`n × k` neighbours) is bounded by
//! [`approximate_scratch_bytes`]: the probe table and its inverse (each cell's queries),
//! `n × nprobe × 4` bytes each, both held only while inverting; the cell lists, `n × 4`; the
//! centroids and their sums, `2 × nlist × d × 4`; one block of rows and its probes while
//! probing; and per worker thread one tile of at most `block²` similarities and two gathered
//! blocks of rows, `(block² + 2·block·d) × 4`. The k-means sample is held as indices, not
//! rows. For 262,144 × 576 with the defaults on 2 threads that is 177 MiB.
//!
//! Results are deterministic for a seed: the cells and their order depend only on the seed,
//! each tile is computed single-threaded, and the top-k lists keep the best `k` under one
//! total order (cosine, then the lower feature index), whatever order the cells finish in.

use std::cmp::Reverse;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use gemm::Parallelism;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::directions::Directions;
use crate::error::ClusterError;
use crate::exact::{Neighbour, exact_neighbours, similarities};
use crate::kmeans::{KMeansParams, NO_CELL, nearest_centroids, spherical_kmeans};
use crate::rng::SplitMix64;

/// Parameters of the inverted-file index.
#[derive(Debug, Clone, Copy)]
pub struct IvfParams {
    /// Cells of the partition; `None`: `4·√n` of the `n` live keys. Clamped to `n`.
    pub nlist: Option<usize>,
    /// Cells scanned per query (more: better recall, proportionally slower scan).
    pub nprobe: usize,
    /// K-means training points per cell (the sample is at most the whole dictionary).
    pub train_per_list: usize,
    /// Upper bound on k-means iterations.
    pub train_iterations: usize,
    pub seed: u64,
}

/// Measured on planted 262,144 × 576 (BENCHMARKS.md): with every key trained on, recall@10
/// 0.975 at 32 probes and 0.982 at 48, against 0.893 at 48 with a quarter of the keys; the
/// quickstart SAE's decoder (4,608 features, less structure) gets 0.85 at 48. Raise `nprobe`
/// for more: the scan's time grows in proportion.
pub const DEFAULT_NPROBE: usize = 48;
/// At the default `4·√n` cells this trains on every key up to 262,144 of them: k-means on a
/// sample splits tight groups across cells (recall@10 0.893 on a quarter, 0.955 on half).
pub const DEFAULT_TRAIN_PER_LIST: usize = 128;
/// Recall@10 on planted 262,144: 0.970 after 4 iterations, 0.982 after 6.
pub const DEFAULT_TRAIN_ITERATIONS: usize = 6;

impl IvfParams {
    /// The defaults, with `nprobe` and the seed given.
    pub fn new(nprobe: usize, seed: u64) -> Self {
        IvfParams {
            nlist: None,
            nprobe,
            train_per_list: DEFAULT_TRAIN_PER_LIST,
            train_iterations: DEFAULT_TRAIN_ITERATIONS,
            seed,
        }
    }

    /// Refuses settings that cannot work, naming the key and its value.
    pub fn check(&self) -> Result<(), ClusterError> {
        let bad = |key: &str, value: usize, expected: String| {
            Err(ClusterError::Invalid(format!(
                "{key} = {value}: expected {expected}"
            )))
        };
        if self.nprobe == 0 {
            return bad("nprobe", 0, "at least 1".into());
        }
        match self.nlist {
            Some(0) => return bad("nlist", 0, "at least 1".into()),
            Some(nlist) if self.nprobe > nlist => {
                return bad("nprobe", self.nprobe, format!("at most nlist = {nlist}"));
            }
            _ => {}
        }
        if self.train_per_list == 0 {
            return bad("train_per_list", 0, "at least 1".into());
        }
        Ok(())
    }

    /// The number of cells for `live` keys.
    pub fn cells_for(&self, live: usize) -> usize {
        let auto = (4.0 * (live as f64).sqrt()).round() as usize;
        self.nlist.unwrap_or(auto).clamp(1, live.max(1))
    }
}

/// What the approximate search did, besides its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IvfReport {
    pub nlist: usize,
    /// Cells scanned per query (`nprobe`, at most `nlist`).
    pub nprobe: usize,
    /// Keys in the largest cell: a lopsided partition makes the scan slower.
    pub largest_list: usize,
    /// Points the centroids were trained on.
    pub train_sample: usize,
    /// K-means and the keys' cells (and, for a dictionary against itself, its probes).
    pub build_seconds: f64,
    pub search_seconds: f64,
    /// The bound on working memory, [`approximate_scratch_bytes`].
    pub scratch_bytes: usize,
}

/// Upper bound on the approximate search's working memory in bytes, beyond its inputs and its
/// answer, for `n` keys (and queries) of width `dim` with `threads` workers.
pub fn approximate_scratch_bytes(
    n: usize,
    dim: usize,
    nlist: usize,
    nprobe: usize,
    block: usize,
    threads: usize,
) -> usize {
    let f = std::mem::size_of::<f32>();
    let probes = 2 * n * nprobe * 4;
    let cells = n * 4 + 2 * (nlist + 1) * std::mem::size_of::<usize>();
    let centroids = 2 * nlist * dim * f;
    let probing = block * dim * f + block * (nprobe + 1) * 8 + block * block.min(nlist) * f;
    let per_worker = (block * block + 2 * block * dim) * f;
    probes + cells + centroids + probing + threads.max(1) * per_worker
}

/// Ids grouped by cell: the ids of cell `c` are `ids[start[c]..start[c + 1]]`, ascending.
struct Cells {
    start: Vec<usize>,
    ids: Vec<u32>,
}

impl Cells {
    /// Inverts a `rows × width` table of cells (row `r` lists its cells; [`NO_CELL`] unused),
    /// using the first `take` columns. Row `r` stands for id `rows[r]`.
    fn invert(table: &[u32], width: usize, take: usize, rows: &[usize], cells: usize) -> Cells {
        let used = || {
            table
                .chunks(width)
                .zip(rows)
                .flat_map(move |(probes, &id)| probes[..take].iter().map(move |&c| (c, id)))
                .filter(|&(c, _)| c != NO_CELL)
        };
        let mut start = vec![0usize; cells + 1];
        for (c, _) in used() {
            start[c as usize + 1] += 1;
        }
        for c in 0..cells {
            start[c + 1] += start[c];
        }
        let mut fill = start.clone();
        let mut ids = vec![0u32; start[cells]];
        for (c, id) in used() {
            ids[fill[c as usize]] = id as u32;
            fill[c as usize] += 1;
        }
        Cells { start, ids }
    }

    fn of(&self, c: usize) -> &[u32] {
        &self.ids[self.start[c]..self.start[c + 1]]
    }

    fn count(&self) -> usize {
        self.start.len() - 1
    }
}

/// The (approximately) `k` nearest keys of every query, most similar first, and what was done.
///
/// `same_set`: queries and keys are the same dictionary (as in [`exact_neighbours`]); a feature
/// is then not its own neighbour, and the keys' probes are found once for both roles. Dead
/// rows are never neighbours and have no neighbours. `on_progress` receives the queries done
/// so far (0 until the scan starts) and may stop the search with an error.
#[allow(clippy::too_many_arguments)]
pub fn approximate_neighbours(
    queries: &Directions,
    keys: &Directions,
    k: usize,
    same_set: bool,
    params: &IvfParams,
    block: usize,
    on_progress: &(dyn Fn(usize) -> Result<(), ClusterError> + Sync),
) -> Result<(Vec<Vec<Neighbour>>, IvfReport), ClusterError> {
    approximate_neighbours_of(
        queries,
        0..queries.len(),
        keys,
        k,
        same_set,
        params,
        block,
        on_progress,
    )
}

/// As [`approximate_neighbours`], for the queries `rows` only (one part of a search in
/// parts): their lists, in order.
///
/// The index depends on the keys and the seed alone, so every part builds the one of the
/// search of every query, and scores for each of its queries exactly the pairs that search
/// scores for it (for a dictionary against itself: the pairs of every cell it probes, and
/// those of every query probing its own cell). The pairs are gathered into other tiles than
/// in that search, though, and `gemm`'s rounding depends on a tile's shape: a cosine may
/// differ in its last bit, so two neighbours within that of each other may swap. A part scans
/// about `2/N` of the whole scan for `N` parts of a dictionary against itself (its queries'
/// cells, and its features as members of other queries' cells), `1/N` otherwise.
/// `on_progress` receives the queries of `rows` done so far.
#[allow(clippy::too_many_arguments)]
pub fn approximate_neighbours_of(
    queries: &Directions,
    rows: std::ops::Range<usize>,
    keys: &Directions,
    k: usize,
    same_set: bool,
    params: &IvfParams,
    block: usize,
    on_progress: &(dyn Fn(usize) -> Result<(), ClusterError> + Sync),
) -> Result<(Vec<Vec<Neighbour>>, IvfReport), ClusterError> {
    params.check()?;
    queries.check_search(&rows, keys)?;
    if same_set && queries.len() != keys.len() {
        return Err(ClusterError::Invalid(format!(
            "a dictionary searched against itself: {} queries but {} keys",
            queries.len(),
            keys.len()
        )));
    }
    if block == 0 {
        return Err(ClusterError::Invalid(
            "block = 0: expected at least 1".into(),
        ));
    }
    let started = Instant::now();
    let live: Vec<usize> = (0..keys.len()).filter(|&i| keys.is_alive(i)).collect();
    let nlist = params.cells_for(live.len());
    let nprobe = params.nprobe.min(nlist);
    // Never fewer points than cells, never more than there are.
    let train_sample = (params.train_per_list * nlist).max(nlist).min(live.len());
    let mut report = IvfReport {
        nlist,
        nprobe,
        largest_list: 0,
        train_sample,
        build_seconds: 0.0,
        search_seconds: 0.0,
        scratch_bytes: approximate_scratch_bytes(
            queries.len().max(keys.len()),
            keys.dim(),
            nlist,
            nprobe,
            block,
            rayon::current_num_threads(),
        ),
    };
    if live.is_empty() || k == 0 || rows.is_empty() {
        return Ok((vec![Vec::new(); rows.len()], report));
    }
    let mut check = || on_progress(0);
    let centroids = spherical_kmeans(
        keys,
        &live,
        KMeansParams {
            clusters: nlist,
            sample: train_sample,
            iterations: params.train_iterations,
            block,
            seed: params.seed,
        },
        &mut check,
    )?;
    let key_probes = if same_set { nprobe } else { 1 };
    let table = nearest_centroids(keys, &live, &centroids, key_probes, block, &mut check)?;
    let members = Cells::invert(&table, key_probes, 1, &live, nlist);
    let askers = if same_set {
        let askers = Cells::invert(&table, nprobe, nprobe, &live, nlist);
        drop(table);
        report.build_seconds = started.elapsed().as_secs_f64();
        askers
    } else {
        drop(table);
        report.build_seconds = started.elapsed().as_secs_f64();
        let asking: Vec<usize> = rows.clone().filter(|&i| queries.is_alive(i)).collect();
        let table = nearest_centroids(queries, &asking, &centroids, nprobe, block, &mut check)?;
        Cells::invert(&table, nprobe, nprobe, &asking, nlist)
    };
    drop(centroids);
    report.largest_list = (0..nlist).map(|c| members.of(c).len()).max().unwrap_or(0);
    let lists = scan(
        queries,
        rows,
        keys,
        &members,
        &askers,
        k,
        same_set,
        block,
        on_progress,
    )?;
    report.search_seconds = started.elapsed().as_secs_f64() - report.build_seconds;
    Ok((lists, report))
}

/// Per-worker buffers of the scan, reused from cell to cell.
#[derive(Default)]
struct Scratch {
    keys: Vec<f32>,
    queries: Vec<f32>,
    tile: Vec<f32>,
    /// Per member of the tile: its best askers in the tile (same-set search only).
    columns: Vec<Vec<Neighbour>>,
}

/// Scores every cell's askers against its members and keeps the best `k` of each query of
/// `rows`.
///
/// For a dictionary against itself the relation is symmetric, so every scored pair is offered
/// to both sides: a member also gets the askers that its own probes missed. A pair is then
/// found when either side probes the other's cell, which raises recall at no extra product.
/// For `rows` short of every query, a cell's askers in `rows` are scored against all its
/// members, and (against itself) its other askers against its members in `rows`: the pairs
/// with a side in `rows`; every query of `rows` is offered what the search of every query
/// offers it.
#[allow(clippy::too_many_arguments)]
fn scan(
    queries: &Directions,
    rows: std::ops::Range<usize>,
    keys: &Directions,
    members: &Cells,
    askers: &Cells,
    k: usize,
    same_set: bool,
    block: usize,
    on_progress: &(dyn Fn(usize) -> Result<(), ClusterError> + Sync),
) -> Result<Vec<Vec<Neighbour>>, ClusterError> {
    let dim = keys.dim();
    let mine = |ids: &[u32]| {
        let lo = ids.partition_point(|&i| (i as usize) < rows.start);
        let hi = ids.partition_point(|&i| (i as usize) < rows.end);
        lo..hi
    };
    // Cell c's (askers, members) products: all of them for every query, else those above.
    let pairs = |c: usize| -> [(&[u32], &[u32]); 3] {
        let (a, m) = (askers.of(c), members.of(c));
        let (inside, member_inside) = (mine(a), mine(m));
        let m_in = if same_set { &m[member_inside] } else { &[][..] };
        [
            (&a[inside.clone()], m),
            (&a[..inside.start], m_in),
            (&a[inside.end..], m_in),
        ]
    };
    let work = |c: usize| -> u64 {
        pairs(c)
            .iter()
            .map(|(a, m)| a.len() as u64 * m.len() as u64)
            .sum()
    };
    let total: u64 = (0..members.count()).map(work).sum();
    let mut order: Vec<usize> = (0..members.count()).filter(|&c| work(c) > 0).collect();
    // Biggest cells first, so that no worker is left alone with a big one at the end.
    order.sort_by_key(|&c| (Reverse(work(c)), c));
    // A list is touched by a few dozen cells only, so the locks are rarely contended.
    let lists: Vec<Mutex<Vec<Neighbour>>> = rows
        .clone()
        .map(|_| Mutex::new(Vec::with_capacity(k + 1)))
        .collect();
    // The list of feature `i`, if it is one of `rows`.
    let lock = |i: u32| {
        let i = i as usize;
        rows.contains(&i).then(|| {
            lists[i - rows.start]
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        })
    };
    let done = AtomicU64::new(0);
    order
        .par_iter()
        .try_for_each_init(Scratch::default, |scratch, &c| {
            for (cell_askers, cell_members) in pairs(c) {
                if cell_askers.is_empty() {
                    continue;
                }
                for key_chunk in cell_members.chunks(block) {
                    gather(&mut scratch.keys, keys, key_chunk);
                    for query_chunk in cell_askers.chunks(block) {
                        scan_tile(
                            scratch,
                            queries,
                            key_chunk,
                            query_chunk,
                            dim,
                            k,
                            same_set,
                            &lock,
                        );
                    }
                }
            }
            let so_far = done.fetch_add(work(c), Ordering::Relaxed) + work(c);
            on_progress((rows.len() as u128 * u128::from(so_far) / u128::from(total)) as usize)
        })?;
    Ok(lists
        .into_iter()
        .map(|l| l.into_inner().unwrap_or_else(PoisonError::into_inner))
        .collect())
}

/// Scores one chunk of a cell's askers against one chunk of its members (already gathered
/// into `scratch.keys`) and offers the pairs to the lists `lock` gives.
#[allow(clippy::too_many_arguments)]
fn scan_tile<'l>(
    scratch: &mut Scratch,
    queries: &Directions,
    key_chunk: &[u32],
    query_chunk: &[u32],
    dim: usize,
    k: usize,
    same_set: bool,
    lock: &(dyn Fn(u32) -> Option<std::sync::MutexGuard<'l, Vec<Neighbour>>> + Sync),
) {
    gather(&mut scratch.queries, queries, query_chunk);
    let width = key_chunk.len();
    scratch.tile.resize(query_chunk.len() * width, 0.0);
    let tile = &mut scratch.tile[..query_chunk.len() * width];
    let (q_rows, k_rows) = (&scratch.queries, &scratch.keys);
    similarities(tile, q_rows, k_rows, dim, Parallelism::None);
    for (sims, &q) in tile.chunks_exact(width).zip(query_chunk) {
        if let Some(mut list) = lock(q) {
            for (&cosine, &feature) in sims.iter().zip(key_chunk) {
                if !(same_set && feature == q) {
                    offer(&mut list, k, Neighbour { feature, cosine });
                }
            }
        }
    }
    if same_set {
        let columns = &mut scratch.columns;
        columns.resize_with(width.max(columns.len()), Vec::new);
        columns[..width].iter_mut().for_each(Vec::clear);
        for (sims, &q) in tile.chunks_exact(width).zip(query_chunk) {
            for ((&cosine, &m), best) in sims.iter().zip(key_chunk).zip(&mut *columns) {
                if m != q {
                    offer(best, k, Neighbour { feature: q, cosine });
                }
            }
        }
        for (best, &m) in columns.iter().zip(key_chunk) {
            if let Some(mut list) = lock(m) {
                best.iter().for_each(|&n| offer(&mut list, k, n));
            }
        }
    }
}

fn gather(out: &mut Vec<f32>, dirs: &Directions, ids: &[u32]) {
    out.clear();
    for &i in ids {
        out.extend_from_slice(dirs.row(i as usize));
    }
}

/// Whether `a` ranks before `b`: higher cosine, then the lower feature index. One total order,
/// so the kept `k` do not depend on the order in which cells are scanned.
#[inline]
fn before(a: &Neighbour, b: &Neighbour) -> bool {
    a.cosine > b.cosine || (a.cosine == b.cosine && a.feature < b.feature)
}

/// Offers a candidate to a top-k list. A feature offered twice (its pair scored in two cells)
/// keeps its larger cosine, so the list is the top k of each feature's best score whatever
/// the order of the offers.
#[inline]
fn offer(list: &mut Vec<Neighbour>, k: usize, candidate: Neighbour) {
    // NaN compares false everywhere and is never taken.
    if k == 0 || candidate.cosine.is_nan() || (list.len() == k && !before(&candidate, &list[k - 1]))
    {
        return;
    }
    if let Some(at) = list.iter().position(|n| n.feature == candidate.feature) {
        if candidate.cosine <= list[at].cosine {
            return;
        }
        list.remove(at);
    }
    let at = list.partition_point(|n| before(n, &candidate));
    if list.len() == k {
        list.pop();
    }
    list.insert(at, candidate);
}

/// Recall@k of `approximate` against the exact search, on `samples` queries drawn with `seed`
/// (all queries when `samples ≥` their number). Returns the mean fraction of each sampled
/// live query's exact top-k found in its approximate top-k, and the number of queries used.
#[allow(clippy::too_many_arguments)]
pub fn recall_at_k(
    queries: &Directions,
    keys: &Directions,
    approximate: &[Vec<Neighbour>],
    k: usize,
    same_set: bool,
    samples: usize,
    block: usize,
    seed: u64,
) -> Result<(f64, usize), ClusterError> {
    let mut picked: Vec<usize> = (0..queries.len())
        .filter(|&i| queries.is_alive(i))
        .collect();
    if picked.len() > samples {
        SplitMix64::new(seed).shuffle(&mut picked);
        picked.truncate(samples);
        picked.sort_unstable();
    }
    if picked.is_empty() {
        return Ok((1.0, 0));
    }
    let sample = queries.subset(&picked);
    // The sample is not the key set, so self-exclusion is done here by asking for one more.
    let extra = usize::from(same_set);
    let exact = exact_neighbours(&sample, keys, k + extra, block, false, &mut |_| Ok(()))?;
    let mut total = 0.0;
    for (list, &q) in exact.iter().zip(&picked) {
        let truth: Vec<u32> = list
            .iter()
            .map(|n| n.feature)
            .filter(|&f| !(same_set && f as usize == q))
            .take(k)
            .collect();
        if truth.is_empty() {
            total += 1.0;
            continue;
        }
        let found = approximate[q]
            .iter()
            .filter(|n| truth.contains(&n.feature))
            .count();
        total += found as f64 / truth.len() as f64;
    }
    Ok((total / picked.len() as f64, picked.len()))
}

#[cfg(test)]
#[path = "approximate_tests.rs"]
mod tests;
