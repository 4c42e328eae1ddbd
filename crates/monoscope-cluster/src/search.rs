//! Choosing between the exact and the approximate neighbour search, and reporting what was
//! done: method, time, and for the approximate search its measured recall@k.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::approximate::{IvfParams, IvfReport, approximate_neighbours, recall_at_k};
use crate::directions::Directions;
use crate::error::ClusterError;
use crate::exact::{Neighbour, exact_neighbours};

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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchReport {
    /// `exact` or `approximate`.
    pub method: &'static str,
    pub k: usize,
    pub seconds: f64,
    /// Bound on working memory beyond the inputs and the answer: the exact search's similarity
    /// tile, or [`crate::approximate::approximate_scratch_bytes`] for the approximate search.
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
    let started = Instant::now();
    let exact = match options.method {
        SearchMethod::Exact => true,
        SearchMethod::Approximate => false,
        SearchMethod::Auto => keys.len() <= options.exact_max,
    };
    if exact {
        let lists = exact_neighbours(queries, keys, k, options.block, same_set, &mut |done| {
            on_progress(done)
        })?;
        let report = SearchReport {
            method: "exact",
            k,
            seconds: started.elapsed().as_secs_f64(),
            scratch_bytes: Some(crate::exact::exact_scratch_bytes(options.block)),
            recall: None,
            recall_queries: None,
            index: None,
        };
        return Ok((lists, report));
    }
    let (lists, index) = approximate_neighbours(
        queries,
        keys,
        k,
        same_set,
        &options.ivf,
        options.block,
        on_progress,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let (recall, used) = if options.recall_queries > 0 {
        let (r, n) = recall_at_k(
            queries,
            keys,
            &lists,
            k,
            same_set,
            options.recall_queries,
            options.block,
            options.ivf.seed,
        )?;
        (Some(r), Some(n))
    } else {
        (None, None)
    };
    let report = SearchReport {
        method: "approximate",
        k,
        seconds,
        scratch_bytes: Some(index.scratch_bytes),
        recall,
        recall_queries: used,
        index: Some(index),
    };
    Ok((lists, report))
}
