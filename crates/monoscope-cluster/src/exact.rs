//! Exact top-k neighbours by cosine similarity: blocked matrix products with a streaming top-k.
//!
//! The similarity matrix is never held whole. Query rows and key rows are taken `block` at a
//! time; each `block × block` tile of dot products (one `gemm` call, parallel over the tile) is
//! folded into the per-query top-k lists and then reused for the next tile. Working memory is
//! therefore `block² × 4` bytes for the tile plus the answer itself (`queries × k` entries),
//! whatever the dictionary size: 16 MiB at the default block of 2048.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::directions::Directions;
use crate::error::ClusterError;

pub use monoscope_artifacts::cluster::Neighbour;

/// Bytes of scratch the exact search needs beyond its inputs and its answer.
pub fn exact_scratch_bytes(block: usize) -> usize {
    block * block * std::mem::size_of::<f32>()
}

/// The `k` keys most similar to each query, most similar first; ties keep the lower index.
///
/// `same_set`: queries and keys are the same dictionary, so a feature is not its own
/// neighbour. Dead rows (zero norm) are never neighbours and have no neighbours.
/// `on_block` is called after every query block with the number of queries done; returning an
/// error (e.g. [`ClusterError::Cancelled`]) stops the search.
pub fn exact_neighbours(
    queries: &Directions,
    keys: &Directions,
    k: usize,
    block: usize,
    same_set: bool,
    on_block: &mut dyn FnMut(usize) -> Result<(), ClusterError>,
) -> Result<Vec<Vec<Neighbour>>, ClusterError> {
    exact_neighbours_of(
        queries,
        0..queries.len(),
        keys,
        k,
        block,
        same_set,
        on_block,
    )
}

/// As [`exact_neighbours`], for the queries `rows` only (one part of a search in parts): their
/// lists, in order, each bit for bit the one the search of every query gives.
///
/// For that the similarity tiles are those of the search of every query: query blocks start
/// at multiples of `block` from query 0, and a block that `rows` cuts is computed whole (its
/// other rows are not kept), because `gemm`'s rounding depends on the shape of the product.
/// A range thus costs at most two blocks of rows more than its own length. `on_block`
/// receives the queries of `rows` done so far.
pub fn exact_neighbours_of(
    queries: &Directions,
    rows: std::ops::Range<usize>,
    keys: &Directions,
    k: usize,
    block: usize,
    same_set: bool,
    on_block: &mut dyn FnMut(usize) -> Result<(), ClusterError>,
) -> Result<Vec<Vec<Neighbour>>, ClusterError> {
    queries.check_search(&rows, keys)?;
    if block == 0 {
        return Err(ClusterError::Invalid(
            "block = 0: expected at least 1".into(),
        ));
    }
    let dim = queries.dim();
    let mut lists: Vec<Vec<Neighbour>> = rows.clone().map(|_| Vec::with_capacity(k + 1)).collect();
    if k == 0 || keys.is_empty() || rows.is_empty() {
        return Ok(lists);
    }
    let mut tile = vec![0.0f32; block.min(queries.len()) * block.min(keys.len())];
    let first_block = rows.start / block * block;
    for q_start in (first_block..rows.end).step_by(block) {
        let q_end = (q_start + block).min(queries.len());
        // The rows of this block that are kept.
        let (lo, hi) = (q_start.max(rows.start), q_end.min(rows.end));
        for k_start in (0..keys.len()).step_by(block) {
            let k_end = (k_start + block).min(keys.len());
            let width = k_end - k_start;
            let tile = &mut tile[..(q_end - q_start) * width];
            similarities(
                tile,
                &queries.as_slice()[q_start * dim..q_end * dim],
                &keys.as_slice()[k_start * dim..k_end * dim],
                dim,
                all_threads(),
            );
            let alive = &keys.alive_mask()[k_start..k_end];
            tile[(lo - q_start) * width..(hi - q_start) * width]
                .par_chunks(width)
                .zip(lists[lo - rows.start..hi - rows.start].par_iter_mut())
                .enumerate()
                .for_each(|(r, (sims, list))| {
                    let own = (same_set && (k_start..k_end).contains(&(lo + r)))
                        .then(|| lo + r - k_start);
                    fold_into_top_k(list, k, sims, alive, own, k_start);
                });
        }
        on_block(hi - rows.start)?;
    }
    for (i, list) in rows.clone().zip(lists.iter_mut()) {
        if !queries.is_alive(i) {
            list.clear();
        }
    }
    Ok(lists)
}

/// One `gemm` call spread over every rayon thread (the exact search's tiles are large).
pub(crate) fn all_threads() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        threads => Parallelism::Rayon(threads),
    }
}

/// `tile[r, c] = queries[r] · keys[c]`, both row-major with rows of width `dim`.
pub(crate) fn similarities(
    tile: &mut [f32],
    queries: &[f32],
    keys: &[f32],
    dim: usize,
    parallelism: Parallelism,
) {
    let (m, n) = (queries.len() / dim, keys.len() / dim);
    debug_assert_eq!(tile.len(), m * n);
    // SAFETY: `tile` has exactly m·n elements and is written with column stride 1 and row
    // stride n; `queries` is read as [m, dim] (column stride 1, row stride dim) and `keys` as
    // its transpose [dim, n] (column stride dim, row stride 1), all inside their slices; the
    // inputs are shared borrows that cannot alias the exclusively borrowed output.
    unsafe {
        gemm::gemm(
            m,
            n,
            dim,
            tile.as_mut_ptr(),
            1,
            n as isize,
            false,
            queries.as_ptr(),
            1,
            dim as isize,
            keys.as_ptr(),
            dim as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Merges one row of a tile into a descending top-k list.
fn fold_into_top_k(
    list: &mut Vec<Neighbour>,
    k: usize,
    sims: &[f32],
    alive: &[bool],
    own: Option<usize>,
    offset: usize,
) {
    for (c, &cosine) in sims.iter().enumerate() {
        let full = list.len() == k;
        // NaN compares false and is never taken.
        if (full && cosine <= list[k - 1].cosine) || !alive[c] || own == Some(c) || cosine.is_nan()
        {
            continue;
        }
        let at = list.partition_point(|n| n.cosine >= cosine);
        if full {
            list.pop();
        }
        list.insert(
            at,
            Neighbour {
                feature: (offset + c) as u32,
                cosine,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_rows(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        (0..rows * dim).map(|_| rng.gaussian()).collect()
    }

    fn brute_force(d: &Directions, k: usize) -> Vec<Vec<Neighbour>> {
        (0..d.len())
            .map(|i| {
                if !d.is_alive(i) {
                    return Vec::new();
                }
                let mut all: Vec<Neighbour> = (0..d.len())
                    .filter(|&j| j != i && d.is_alive(j))
                    .map(|j| Neighbour {
                        feature: j as u32,
                        cosine: d.row(i).iter().zip(d.row(j)).map(|(a, b)| a * b).sum(),
                    })
                    .collect();
                all.sort_by(|a, b| b.cosine.total_cmp(&a.cosine));
                all.truncate(k);
                all
            })
            .collect()
    }

    #[test]
    fn blocked_search_matches_brute_force_for_every_block_size() {
        let mut rows = random_rows(203, 24, 7);
        rows[5 * 24..6 * 24].fill(0.0); // a dead feature
        let d = Directions::from_rows(&rows, 24, "random").unwrap();
        let expected = brute_force(&d, 7);
        for block in [1, 5, 64, 203, 1000] {
            let got = exact_neighbours(&d, &d, 7, block, true, &mut |_| Ok(())).unwrap();
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                let g_ids: Vec<u32> = g.iter().map(|n| n.feature).collect();
                let e_ids: Vec<u32> = e.iter().map(|n| n.feature).collect();
                assert_eq!(g_ids, e_ids, "feature {i}, block {block}");
                for (a, b) in g.iter().zip(e) {
                    assert!((a.cosine - b.cosine).abs() < 1e-5);
                }
            }
            assert!(got[5].is_empty());
            assert!(got.iter().all(|l| l.iter().all(|n| n.feature != 5)));
        }
    }

    #[test]
    fn cross_search_finds_the_parent_of_each_split_feature() {
        // Children are small perturbations of parents: each child's nearest parent is its own.
        let parents = random_rows(40, 32, 1);
        let noise = random_rows(120, 32, 2);
        let children: Vec<f32> = (0..120 * 32)
            .map(|i| parents[(i / 32 / 3) * 32 + i % 32] + 0.05 * noise[i])
            .collect();
        let p = Directions::from_rows(&parents, 32, "parents").unwrap();
        let c = Directions::from_rows(&children, 32, "children").unwrap();
        let got = exact_neighbours(&c, &p, 1, 16, false, &mut |_| Ok(())).unwrap();
        for (child, list) in got.iter().enumerate() {
            assert_eq!(list[0].feature as usize, child / 3);
        }
    }

    #[test]
    fn mismatched_widths_and_cancellation_are_errors() {
        let a = Directions::from_rows(&random_rows(4, 8, 3), 8, "a").unwrap();
        let b = Directions::from_rows(&random_rows(4, 6, 3), 6, "b").unwrap();
        assert!(exact_neighbours(&a, &b, 2, 4, false, &mut |_| Ok(())).is_err());
        let stopped = exact_neighbours(&a, &a, 2, 2, true, &mut |_| Err(ClusterError::Cancelled));
        assert!(matches!(stopped, Err(ClusterError::Cancelled)));
    }

    #[test]
    fn ranges_of_queries_give_the_bits_of_the_whole_search() {
        let mut rows = random_rows(203, 24, 11);
        rows[40 * 24..41 * 24].fill(0.0); // a dead feature
        let d = Directions::from_rows(&rows, 24, "random").unwrap();
        for block in [7, 64, 1000] {
            let whole = exact_neighbours(&d, &d, 6, block, true, &mut |_| Ok(())).unwrap();
            for count in [1, 3, 5] {
                let mut joined = Vec::new();
                for index in 0..count {
                    let range = 203 * index / count..203 * (index + 1) / count;
                    let len = range.len();
                    let mut done = 0;
                    let part = exact_neighbours_of(&d, range, &d, 6, block, true, &mut |n| {
                        done = n;
                        Ok(())
                    })
                    .unwrap();
                    assert_eq!((part.len(), done), (len, len));
                    joined.extend(part);
                }
                let bits = |l: &[Vec<Neighbour>]| -> Vec<(u32, u32)> {
                    l.iter()
                        .flatten()
                        .map(|n| (n.feature, n.cosine.to_bits()))
                        .collect()
                };
                assert_eq!(bits(&joined), bits(&whole), "block {block}, {count} parts");
                assert_eq!(
                    joined.iter().map(Vec::len).collect::<Vec<_>>(),
                    whole.iter().map(Vec::len).collect::<Vec<_>>()
                );
            }
        }
        assert!(exact_neighbours_of(&d, 200..204, &d, 6, 8, true, &mut |_| Ok(())).is_err());
    }

    #[test]
    fn the_bits_do_not_depend_on_the_number_of_threads() {
        // Parts may run with other thread counts than a run in one piece (e.g. Slurm jobs).
        let d = Directions::from_rows(&random_rows(300, 40, 12), 40, "random").unwrap();
        let with = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| exact_neighbours(&d, &d, 5, 128, true, &mut |_| Ok(())).unwrap())
        };
        let one = with(1);
        for threads in [2, 3] {
            assert!(one == with(threads), "{threads} threads");
        }
    }

    #[test]
    fn scratch_bound_is_the_tile() {
        assert_eq!(exact_scratch_bytes(2048), 16 << 20);
    }
}
