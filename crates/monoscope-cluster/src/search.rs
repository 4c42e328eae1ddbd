//! Choosing between the exact and the approximate neighbour search, and reporting what was
//! done: method, time, and for the approximate search its measured recall@k.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::approximate::{IvfParams, IvfReport, approximate_neighbours_of, recall_at_k};
use crate::directions::Directions;
use crate::error::ClusterError;
use crate::exact::{Neighbour, exact_neighbours_of};

/// How neighbours are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMethod {
    /// Exact when the key set has at most `exact_max` features, approximate beyond.
    Auto,
    /// Blocked matrix products: exact, time quadratic in the number of features.
    Exact,
    /// Inverted-file search (k-means cells, a few probed per query), with recall@k measured
    /// on a sample.
    Approximate,
}

/// The settings of a search.
#[derive(Debug, Clone, Copy)]
pub struct SearchOptions {
    pub method: SearchMethod,
    pub exact_max: usize,
    pub block: usize,
    pub ivf: IvfParams,
    /// Queries on which the approximate answer is checked against the exact one (0: none).
    pub recall_queries: usize,
}

/// What a search did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchReport {
    /// `exact` or `approximate`.
    pub method: String,
    pub k: usize,
    /// The search's time; for a search in parts, the sum of the parts' times.
    pub seconds: f64,
    /// Bound on working memory beyond the inputs and the answer: the exact search's similarity
    /// tile, or [`crate::approximate::approximate_scratch_bytes`] for the approximate search
    /// (for a search in parts: of each part).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scratch_bytes: Option<usize>,
    /// Approximate search: recall@k against the exact search, and on how many queries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall_queries: Option<usize>,
    /// Approximate search: its cells, probes, and build and search times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<IvfReport>,
    /// A search in parts (`parts = N`): how many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<usize>,
}

impl SearchReport {
    /// The report of a search in parts from its parts' reports (in part order): the parts'
    /// times added up (every part builds the same index, so the build time is counted once
    /// per part), the rest from part 0, which all parts share. No recall: that is measured
    /// on the joined lists ([`measure_recall`]).
    pub fn join(parts: &[SearchReport]) -> Result<SearchReport, ClusterError> {
        let Some(first) = parts.first() else {
            return Err(ClusterError::Invalid("a search in no parts".into()));
        };
        let mut joined = SearchReport {
            seconds: 0.0,
            recall: None,
            recall_queries: None,
            parts: Some(parts.len()),
            ..first.clone()
        };
        if let Some(index) = &mut joined.index {
            (index.build_seconds, index.search_seconds) = (0.0, 0.0);
        }
        for (i, part) in parts.iter().enumerate() {
            let same_index = match (&part.index, &first.index) {
                (Some(a), Some(b)) => {
                    (a.nlist, a.nprobe, a.largest_list, a.train_sample)
                        == (b.nlist, b.nprobe, b.largest_list, b.train_sample)
                }
                (a, b) => a.is_none() && b.is_none(),
            };
            if part.method != first.method || part.k != first.k || !same_index {
                return Err(ClusterError::Invalid(format!(
                    "part {i} searched otherwise than part 0 ({} search, k = {}, index {:?} \
                     against {} search, k = {}, index {:?})",
                    part.method, part.k, part.index, first.method, first.k, first.index
                )));
            }
            joined.seconds += part.seconds;
            joined.scratch_bytes = joined.scratch_bytes.max(part.scratch_bytes);
            if let (Some(sum), Some(index)) = (&mut joined.index, &part.index) {
                sum.build_seconds += index.build_seconds;
                sum.search_seconds += index.search_seconds;
            }
        }
        Ok(joined)
    }
}

/// The `k` nearest keys of every query; `on_progress` receives the queries done so far and may
/// stop the search with an error.
pub fn find_neighbours(
    queries: &Directions,
    keys: &Directions,
    k: usize,
    same_set: bool,
    options: &SearchOptions,
    on_progress: &(dyn Fn(usize) -> Result<(), ClusterError> + Sync),
) -> Result<(Vec<Vec<Neighbour>>, SearchReport), ClusterError> {
    let (lists, mut report) = find_neighbours_of(
        queries,
        0..queries.len(),
        keys,
        k,
        same_set,
        options,
        on_progress,
    )?;
    measure_recall(&mut report, queries, keys, &lists, same_set, options)?;
    Ok((lists, report))
}

/// The `k` nearest keys of the queries `rows` (one part of a search in parts), in order, as
/// [`find_neighbours`] finds them for every query: the exact search gives the same bits, the
/// approximate one builds the same index (see
/// [`crate::approximate::approximate_neighbours_of`]). No recall is measured.
pub fn find_neighbours_of(
    queries: &Directions,
    rows: std::ops::Range<usize>,
    keys: &Directions,
    k: usize,
    same_set: bool,
    options: &SearchOptions,
    on_progress: &(dyn Fn(usize) -> Result<(), ClusterError> + Sync),
) -> Result<(Vec<Vec<Neighbour>>, SearchReport), ClusterError> {
    let started = Instant::now();
    let exact = match options.method {
        SearchMethod::Exact => true,
        SearchMethod::Approximate => false,
        SearchMethod::Auto => keys.len() <= options.exact_max,
    };
    if exact {
        let lists = exact_neighbours_of(
            queries,
            rows,
            keys,
            k,
            options.block,
            same_set,
            &mut |done| on_progress(done),
        )?;
        let report = SearchReport {
            method: "exact".into(),
            k,
            seconds: started.elapsed().as_secs_f64(),
            scratch_bytes: Some(crate::exact::exact_scratch_bytes(options.block)),
            recall: None,
            recall_queries: None,
            index: None,
            parts: None,
        };
        return Ok((lists, report));
    }
    let (lists, index) = approximate_neighbours_of(
        queries,
        rows,
        keys,
        k,
        same_set,
        &options.ivf,
        options.block,
        on_progress,
    )?;
    let report = SearchReport {
        method: "approximate".into(),
        k,
        seconds: started.elapsed().as_secs_f64(),
        scratch_bytes: Some(index.scratch_bytes),
        recall: None,
        recall_queries: None,
        index: Some(index),
        parts: None,
    };
    Ok((lists, report))
}

/// For an approximate search (nothing for an exact one): recall@k of `lists`, every query's,
/// against the exact search on `options.recall_queries` queries sampled with the index's seed,
/// into `report`. A search in parts measures it on the joined lists, so its figure is the one
/// a search in one piece reports for the same lists.
pub fn measure_recall(
    report: &mut SearchReport,
    queries: &Directions,
    keys: &Directions,
    lists: &[Vec<Neighbour>],
    same_set: bool,
    options: &SearchOptions,
) -> Result<(), ClusterError> {
    if report.index.is_none() || options.recall_queries == 0 {
        return Ok(());
    }
    let (recall, used) = recall_at_k(
        queries,
        keys,
        lists,
        report.k,
        same_set,
        options.recall_queries,
        options.block,
        options.ivf.seed,
    )?;
    (report.recall, report.recall_queries) = (Some(recall), Some(used));
    Ok(())
}
