//! Spherical k-means, the coarse partition of the approximate search, and the step it shares
//! with that search: each direction's most similar centroids.
//!
//! Centroids are trained on a seeded sample of the live directions by Lloyd iterations: assign
//! every sample point to its most similar centroid, then move each centroid to the mean of its
//! points projected back onto the unit sphere. Initial centroids are random sample points
//! (k-means++ seeding would take `clusters` sequential passes over the sample). Each iteration
//! is one pass of the exact search's `gemm` tiles over sample × centroids, so its cost is
//! that of probing; the caller chooses how large a sample and how many passes are worth it.

use crate::directions::Directions;
use crate::error::ClusterError;
use crate::exact::exact_neighbours;
use crate::rng::SplitMix64;

/// Marks an unused slot of a probe table (a dead row, or fewer centroids than asked for).
pub(crate) const NO_CELL: u32 = u32::MAX;

/// `nprobe` most similar centroids of each of `rows` (indices into `dirs`), most similar
/// first, as a table of `rows.len() × nprobe` cell indices ([`NO_CELL`] where there is none).
///
/// Rows are taken `block` at a time so that the exact search's answer never exceeds
/// `block × nprobe` entries, whatever the number of rows. `on_block` may stop the work.
pub(crate) fn nearest_centroids(
    dirs: &Directions,
    rows: &[usize],
    centroids: &Directions,
    nprobe: usize,
    block: usize,
    on_block: &mut dyn FnMut() -> Result<(), ClusterError>,
) -> Result<Vec<u32>, ClusterError> {
    let mut table = vec![NO_CELL; rows.len() * nprobe];
    for (chunk, out) in rows
        .chunks(block)
        .zip(table.chunks_mut(block * nprobe.max(1)))
    {
        let part = dirs.subset(chunk);
        let near = exact_neighbours(&part, centroids, nprobe, block, false, &mut |_| Ok(()))?;
        for (list, slots) in near.iter().zip(out.chunks_mut(nprobe.max(1))) {
            for (n, slot) in list.iter().zip(slots) {
                *slot = n.feature;
            }
        }
        on_block()?;
    }
    Ok(table)
}

/// The settings of one k-means run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KMeansParams {
    pub clusters: usize,
    /// Points drawn from the live rows to train on (all of them when there are fewer).
    pub sample: usize,
    /// Upper bound on Lloyd iterations; training stops early once no point changes cell.
    pub iterations: usize,
    pub block: usize,
    pub seed: u64,
}

/// Unit centroids of `params.clusters` cells over the rows `live` of `dirs`
/// (`1 ≤ clusters ≤ live.len()`). Deterministic for a seed.
pub(crate) fn spherical_kmeans(
    dirs: &Directions,
    live: &[usize],
    params: KMeansParams,
    on_block: &mut dyn FnMut() -> Result<(), ClusterError>,
) -> Result<Directions, ClusterError> {
    let clusters = params.clusters;
    debug_assert!((1..=live.len()).contains(&clusters));
    let mut rng = SplitMix64::new(params.seed);
    let mut sample = live.to_vec();
    rng.shuffle(&mut sample);
    sample.truncate(params.sample.clamp(clusters, live.len()));
    // Distinct random points of the sample start as the centroids.
    let mut centroids = dirs.subset(&sample[..clusters]);
    // Memory order for the gathers; the draw above is already fixed.
    sample.sort_unstable();
    let mut assignment = vec![NO_CELL; sample.len()];
    for _ in 0..params.iterations {
        let nearest = nearest_centroids(dirs, &sample, &centroids, 1, params.block, on_block)?;
        // A point with no live centroid (all sums cancelled) falls back to cell 0.
        let nearest = nearest.iter().map(|&c| if c == NO_CELL { 0 } else { c });
        let mut changed = false;
        for (a, c) in assignment.iter_mut().zip(nearest) {
            changed |= *a != c;
            *a = c;
        }
        if !changed {
            break;
        }
        centroids = means(dirs, &sample, &mut assignment, clusters, &mut rng)?;
    }
    Ok(centroids)
}

/// Each cell's mean direction, normalised. An empty cell takes a random point of the largest
/// cell, so that no centroid is wasted on a region with no data.
fn means(
    dirs: &Directions,
    sample: &[usize],
    assignment: &mut [u32],
    clusters: usize,
    rng: &mut SplitMix64,
) -> Result<Directions, ClusterError> {
    let dim = dirs.dim();
    let mut counts = vec![0usize; clusters];
    for &c in assignment.iter() {
        counts[c as usize] += 1;
    }
    for empty in 0..clusters {
        if counts[empty] > 0 {
            continue;
        }
        let largest = (0..clusters).max_by_key(|&c| (counts[c], usize::MAX - c));
        let largest = largest.expect("at least one cell") as u32;
        let members: Vec<usize> = (0..sample.len())
            .filter(|&i| assignment[i] == largest)
            .collect();
        let moved = members[rng.below(members.len())];
        assignment[moved] = empty as u32;
        counts[largest as usize] -= 1;
        counts[empty] = 1;
    }
    let mut sums = vec![0.0f32; clusters * dim];
    for (&row, &c) in sample.iter().zip(assignment.iter()) {
        let sum = &mut sums[c as usize * dim..(c as usize + 1) * dim];
        for (s, v) in sum.iter_mut().zip(dirs.row(row)) {
            *s += v;
        }
    }
    Directions::from_rows(&sums, dim, "k-means centroids")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::planted_dictionary;

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn planted(groups: usize, per: usize, dim: usize, seed: u64) -> (Directions, Vec<u32>) {
        let (rows, truth) = planted_dictionary(groups, per, dim, 0.3, seed);
        (Directions::from_rows(&rows, dim, "planted").unwrap(), truth)
    }

    #[test]
    fn tight_groups_are_not_split_and_training_improves_the_fit() {
        let (d, truth) = planted(12, 30, 32, 4);
        let live: Vec<usize> = (0..d.len()).collect();
        let fit = |iterations: usize| {
            let params = KMeansParams {
                clusters: 4,
                sample: 360,
                iterations,
                block: 64,
                seed: 9,
            };
            let centroids = spherical_kmeans(&d, &live, params, &mut || Ok(())).unwrap();
            let cells = nearest_centroids(&d, &live, &centroids, 1, 50, &mut || Ok(())).unwrap();
            let cosine: f32 = (0..d.len())
                .map(|i| dot(d.row(i), centroids.row(cells[i] as usize)))
                .sum();
            (cells, cosine / d.len() as f32)
        };
        let (_, untrained) = fit(0);
        let (cells, trained) = fit(20);
        assert!(trained > untrained + 0.05, "{untrained} -> {trained}");
        // Fewer cells than groups: each cell's centroid is a mean of whole groups, and a
        // group this tight is nearer to its own mean's centroid than to any other.
        for i in 0..d.len() {
            for j in 0..d.len() {
                if truth[i] == truth[j] {
                    assert_eq!(cells[i], cells[j], "rows {i}, {j} of group {}", truth[i]);
                }
            }
        }
    }

    #[test]
    fn no_cell_is_left_empty_and_probes_are_ordered() {
        // More cells than groups: the extra cells must still take points.
        let (d, _) = planted(3, 40, 16, 2);
        let live: Vec<usize> = (0..d.len()).collect();
        let params = KMeansParams {
            clusters: 10,
            sample: 1000,
            iterations: 5,
            block: 32,
            seed: 1,
        };
        let centroids = spherical_kmeans(&d, &live, params, &mut || Ok(())).unwrap();
        assert_eq!(centroids.dead_count(), 0);
        let table = nearest_centroids(&d, &live, &centroids, 4, 7, &mut || Ok(())).unwrap();
        for (i, probes) in table.chunks(4).enumerate() {
            let cos: Vec<f32> = probes
                .iter()
                .map(|&c| dot(d.row(i), centroids.row(c as usize)))
                .collect();
            assert!(cos.windows(2).all(|w| w[0] >= w[1]), "row {i}: {cos:?}");
        }
    }
}
