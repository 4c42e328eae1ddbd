//! Approximate neighbours for dictionaries too large for the exact search: an HNSW graph
//! (the `instant-distance` crate, built in parallel with rayon) over the unit directions with
//! distance `1 − cosine`, queried once per feature; and recall@k against the exact search on a
//! sample of queries, so every approximate answer comes with its measured quality.

use instant_distance::{Builder, HnswMap, Search};
use rayon::prelude::*;

use crate::directions::{Directions, dot};
use crate::error::ClusterError;
use crate::exact::{Neighbour, exact_neighbours};
use crate::rng::SplitMix64;

/// Parameters of the HNSW index.
#[derive(Debug, Clone, Copy)]
pub struct HnswParams {
    /// Candidate list size while building (larger: better graph, slower build).
    pub ef_construction: usize,
    /// Candidate list size while searching; at least `k + 1`.
    pub ef_search: usize,
    pub seed: u64,
}

/// One unit direction, as the index sees it.
#[derive(Clone, Copy)]
struct Row<'a>(&'a [f32]);

impl instant_distance::Point for Row<'_> {
    fn distance(&self, other: &Self) -> f32 {
        // Rounding can take 1 − cos a hair below zero for near-identical rows; the graph
        // search assumes distances are not negative.
        (1.0 - dot(self.0, other.0)).max(0.0)
    }
}

/// An HNSW index over the live rows of a dictionary.
pub struct HnswIndex<'a> {
    map: HnswMap<Row<'a>, u32>,
    ef_search: usize,
}

impl std::fmt::Debug for HnswIndex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("points", &self.map.values.len())
            .field("ef_search", &self.ef_search)
            .finish()
    }
}

impl<'a> HnswIndex<'a> {
    /// Builds the index over every live row of `keys` (dead rows are left out).
    pub fn build(keys: &'a Directions, params: HnswParams) -> Self {
        let ids: Vec<u32> = (0..keys.len())
            .filter(|&i| keys.is_alive(i))
            .map(|i| i as u32)
            .collect();
        let points = ids.iter().map(|&i| Row(keys.row(i as usize))).collect();
        let map = Builder::default()
            .ef_construction(params.ef_construction)
            .ef_search(params.ef_search)
            .seed(params.seed)
            .build(points, ids);
        HnswIndex {
            map,
            ef_search: params.ef_search,
        }
    }

    /// The (approximately) `k` nearest keys of every query, most similar first. `same_set`
    /// drops each query's own index from its answer.
    pub fn search_all(
        &self,
        queries: &Directions,
        k: usize,
        same_set: bool,
        on_chunk: &(dyn Fn(usize) -> Result<(), ClusterError> + Sync),
    ) -> Result<Vec<Vec<Neighbour>>, ClusterError> {
        const CHUNK: usize = 4096;
        let mut lists = Vec::with_capacity(queries.len());
        for start in (0..queries.len()).step_by(CHUNK) {
            let end = (start + CHUNK).min(queries.len());
            let chunk: Vec<Vec<Neighbour>> = (start..end)
                .into_par_iter()
                .map_init(Search::default, |search, q| {
                    self.search_one(queries, q, k, same_set, search)
                })
                .collect();
            lists.extend(chunk);
            on_chunk(end)?;
        }
        Ok(lists)
    }

    fn search_one(
        &self,
        queries: &Directions,
        q: usize,
        k: usize,
        same_set: bool,
        search: &mut Search,
    ) -> Vec<Neighbour> {
        if !queries.is_alive(q) {
            return Vec::new();
        }
        let point = Row(queries.row(q));
        let mut found: Vec<Neighbour> = self
            .map
            .search(&point, search)
            .filter(|item| !(same_set && *item.value as usize == q))
            .map(|item| Neighbour {
                feature: *item.value,
                cosine: dot(point.0, item.point.0),
            })
            .collect();
        found.sort_by(|a, b| {
            b.cosine
                .total_cmp(&a.cosine)
                .then(a.feature.cmp(&b.feature))
        });
        found.truncate(k);
        found
    }

    pub fn ef_search(&self) -> usize {
        self.ef_search
    }
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
mod tests {
    use super::*;
    use crate::rng::planted_dictionary;

    #[test]
    fn hnsw_recall_is_high_on_a_structured_dictionary() {
        let (rows, _) = planted_dictionary(50, 20, 48, 0.6, 11);
        let d = Directions::from_rows(&rows, 48, "planted").unwrap();
        let params = HnswParams {
            ef_construction: 100,
            ef_search: 64,
            seed: 1,
        };
        let index = HnswIndex::build(&d, params);
        let approx = index.search_all(&d, 10, true, &|_| Ok(())).unwrap();
        assert!(approx.iter().all(|l| l.len() == 10));
        assert!(
            approx
                .iter()
                .enumerate()
                .all(|(i, l)| l.iter().all(|n| n.feature as usize != i))
        );
        let (recall, used) = recall_at_k(&d, &d, &approx, 10, true, 300, 64, 5).unwrap();
        assert_eq!(used, 300);
        assert!(recall > 0.9, "recall@10 {recall}");
    }

    #[test]
    fn recall_of_the_exact_answer_is_one_and_of_nonsense_is_low() {
        let (rows, _) = planted_dictionary(10, 10, 16, 0.5, 2);
        let d = Directions::from_rows(&rows, 16, "planted").unwrap();
        let exact = exact_neighbours(&d, &d, 5, 32, true, &mut |_| Ok(())).unwrap();
        let (recall, _) = recall_at_k(&d, &d, &exact, 5, true, 1000, 32, 0).unwrap();
        assert!((recall - 1.0).abs() < 1e-12);
        let wrong: Vec<Vec<Neighbour>> = (0..d.len())
            .map(|i| {
                (0..5)
                    .map(|j| Neighbour {
                        feature: ((i + 1 + j * 10) % d.len()) as u32,
                        cosine: 0.0,
                    })
                    .collect()
            })
            .collect();
        let (recall, _) = recall_at_k(&d, &d, &wrong, 5, true, 1000, 32, 0).unwrap();
        assert!(recall < 0.3, "recall {recall}");
    }
}
