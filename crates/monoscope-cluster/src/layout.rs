//! A 2-D map of the features in the manner of UMAP (McInnes, Healy and Melville 2018),
//! written here because no maintained, light pure-Rust UMAP fits (see the crate docs).
//!
//! 1. Fuzzy neighbourhoods: on the k-nearest-neighbour lists with distance `1 − cosine`, each
//!    point gets `ρ` (distance to its nearest neighbour) and `σ` (binary search so that
//!    `Σ exp(−(d − ρ)/σ) = log₂ k`); edge weight `exp(−(d − ρ)/σ)`, made symmetric by the
//!    fuzzy union `a + b − ab`.
//! 2. Layout: seeded random start, then stochastic gradient descent on the cross-entropy
//!    between those weights and `1 / (1 + a·dist^{2b})` in the plane: each edge is sampled in
//!    proportion to its weight and pulls its ends together; each sample also pushes the point
//!    away from a few random points (negative sampling). `a, b` are fitted to `min_dist`.
//! 3. Quality: neighbourhood preservation, the mean fraction of each point's 10 nearest
//!    features (by cosine) that are among its 10 nearest points on the map.
//!
//! Differences from umap-learn: random rather than spectral initialisation, and a sequential
//! (single-thread, reproducible) optimiser.

use rayon::prelude::*;

use crate::exact::Neighbour;
use crate::rng::SplitMix64;

/// Parameters of the layout.
#[derive(Debug, Clone, Copy)]
pub struct LayoutParams {
    /// Passes of the optimiser over the edges.
    pub epochs: usize,
    /// How tightly neighbours may pack on the map (umap-learn's `min_dist`).
    pub min_dist: f32,
    /// Repelling samples per attracting one.
    pub negative_samples: usize,
    pub seed: u64,
}

/// Map coordinates, normalised to `[0, 1]` on both axes (aspect ratio kept).
#[derive(Debug, Clone)]
pub struct Layout {
    pub x: Vec<f32>,
    pub y: Vec<f32>,
}

/// Lays out `n` points joined by the fuzzy `edges` of [`fuzzy_edges`] (points without edges,
/// such as dead features, drift under repulsion alone and end at the edge of the map).
pub fn layout(n: usize, edges: &[(u32, u32, f32)], params: LayoutParams) -> Layout {
    let mut isolated = vec![true; n];
    for &(i, j, _) in edges {
        isolated[i as usize] = false;
        isolated[j as usize] = false;
    }
    let (a, b) = fit_curve(params.min_dist);
    let mut rng = SplitMix64::new(params.seed);
    let mut pos: Vec<[f32; 2]> = (0..n)
        .map(|_| [rng.uniform() * 20.0 - 10.0, rng.uniform() * 20.0 - 10.0])
        .collect();
    if n < 2 {
        return normalise(&pos);
    }
    let max_w = edges.iter().map(|e| e.2).fold(0.0f32, f32::max);
    let every: Vec<f32> = edges.iter().map(|e| max_w / e.2).collect();
    let mut next_due = every.clone();
    for epoch in 0..params.epochs {
        let alpha = 1.0 - epoch as f32 / params.epochs as f32;
        let now = (epoch + 1) as f32;
        for (e, &(i, j, _)) in edges.iter().enumerate() {
            if next_due[e] > now {
                continue;
            }
            next_due[e] += every[e];
            let (i, j) = (i as usize, j as usize);
            let d = [pos[i][0] - pos[j][0], pos[i][1] - pos[j][1]];
            let dist_sq = d[0] * d[0] + d[1] * d[1];
            if dist_sq > 0.0 {
                let coeff = -2.0 * a * b * dist_sq.powf(b - 1.0) / (1.0 + a * dist_sq.powf(b));
                for axis in 0..2 {
                    let g = (coeff * d[axis]).clamp(-4.0, 4.0) * alpha;
                    pos[i][axis] += g;
                    pos[j][axis] -= g;
                }
            }
            for _ in 0..params.negative_samples {
                let other = rng.below(n);
                if other == i {
                    continue;
                }
                repel(&mut pos, i, other, a, b, alpha);
            }
        }
        // Points without edges get their share of repulsion too, or they would never move.
        for (i, &alone) in isolated.iter().enumerate() {
            if alone {
                let other = rng.below(n);
                if other != i {
                    repel(&mut pos, i, other, a, b, alpha);
                }
            }
        }
    }
    normalise(&pos)
}

fn repel(pos: &mut [[f32; 2]], i: usize, other: usize, a: f32, b: f32, alpha: f32) {
    let d = [pos[i][0] - pos[other][0], pos[i][1] - pos[other][1]];
    let dist_sq = d[0] * d[0] + d[1] * d[1];
    let coeff = 2.0 * b / ((0.001 + dist_sq) * (1.0 + a * dist_sq.powf(b)));
    for axis in 0..2 {
        let g = if coeff > 0.0 {
            (coeff * d[axis]).clamp(-4.0, 4.0)
        } else {
            4.0
        };
        pos[i][axis] += g * alpha;
    }
}

/// The symmetric fuzzy edge weights `(i, j, w)` with `i < j` (step 1 above): the graph that
/// is laid out, and also the one that is clustered.
pub fn fuzzy_edges(lists: &[Vec<Neighbour>]) -> Vec<(u32, u32, f32)> {
    let directed: Vec<Vec<(u32, f32)>> = lists
        .par_iter()
        .map(|list| {
            let dist: Vec<f32> = list.iter().map(|n| (1.0 - n.cosine).max(0.0)).collect();
            let Some(&rho) = dist.iter().min_by(|a, b| a.total_cmp(b)) else {
                return Vec::new();
            };
            let target = (list.len() as f32).log2().max(1.0);
            let sum_at = |sigma: f32| -> f32 {
                dist.iter()
                    .map(|&d| (-(d - rho).max(0.0) / sigma).exp())
                    .sum()
            };
            // Σ exp(−(d − ρ)/σ) rises with σ: bisect on a log scale.
            let (mut lo, mut hi) = (1e-6f32, 1e3f32);
            for _ in 0..64 {
                let mid = (lo * hi).sqrt();
                if sum_at(mid) > target {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            let sigma = (lo * hi).sqrt();
            list.iter()
                .zip(&dist)
                .map(|(n, &d)| (n.feature, (-(d - rho).max(0.0) / sigma).exp()))
                .collect()
        })
        .collect();
    let mut edges: Vec<(u32, u32, f32)> = directed
        .iter()
        .enumerate()
        .flat_map(|(i, list)| {
            list.iter()
                .filter(move |(j, _)| *j as usize != i)
                .map(move |&(j, w)| ((i as u32).min(j), (i as u32).max(j), w))
        })
        .collect();
    edges.sort_by_key(|e| (e.0, e.1));
    let mut merged: Vec<(u32, u32, f32)> = Vec::with_capacity(edges.len());
    for e in edges {
        match merged.last_mut() {
            Some(last) if (last.0, last.1) == (e.0, e.1) => {
                last.2 = last.2 + e.2 - last.2 * e.2;
            }
            _ => merged.push(e),
        }
    }
    merged.retain(|e| e.2 > 1e-6);
    merged
}

/// `a, b` so that `1 / (1 + a x^{2b})` best fits 1 for `x < min_dist` and
/// `exp(−(x − min_dist))` beyond (umap-learn's curve, spread 1), by a coarse-to-fine grid
/// search of the squared error on 300 points of `[0, 3]`.
fn fit_curve(min_dist: f32) -> (f32, f32) {
    let xs: Vec<f32> = (0..300).map(|i| i as f32 * 3.0 / 299.0).collect();
    let target: Vec<f32> = xs
        .iter()
        .map(|&x| {
            if x < min_dist {
                1.0
            } else {
                (-(x - min_dist)).exp()
            }
        })
        .collect();
    let error = |a: f32, b: f32| -> f32 {
        xs.iter()
            .zip(&target)
            .map(|(&x, &t)| (1.0 / (1.0 + a * x.powf(2.0 * b)) - t).powi(2))
            .sum()
    };
    let (mut a, mut b) = (1.0f32, 1.0f32);
    let (mut step_a, mut step_b) = (1.0f32, 0.5f32);
    for _ in 0..40 {
        let mut best = (error(a, b), a, b);
        for da in [-1.0, 0.0, 1.0] {
            for db in [-1.0, 0.0, 1.0] {
                let (ca, cb) = (a + da * step_a, b + db * step_b);
                if ca > 0.0 && cb > 0.0 {
                    let e = error(ca, cb);
                    if e < best.0 {
                        best = (e, ca, cb);
                    }
                }
            }
        }
        if (best.1, best.2) == (a, b) {
            step_a *= 0.5;
            step_b *= 0.5;
        }
        (a, b) = (best.1, best.2);
    }
    (a, b)
}

fn normalise(pos: &[[f32; 2]]) -> Layout {
    let (mut lo, mut hi) = ([f32::INFINITY; 2], [f32::NEG_INFINITY; 2]);
    for p in pos {
        for axis in 0..2 {
            lo[axis] = lo[axis].min(p[axis]);
            hi[axis] = hi[axis].max(p[axis]);
        }
    }
    let span = (hi[0] - lo[0]).max(hi[1] - lo[1]).max(f32::MIN_POSITIVE);
    // Centre the shorter axis so the map keeps its aspect ratio.
    let pad = [
        (span - (hi[0] - lo[0])) / 2.0,
        (span - (hi[1] - lo[1])) / 2.0,
    ];
    Layout {
        x: pos.iter().map(|p| (p[0] - lo[0] + pad[0]) / span).collect(),
        y: pos.iter().map(|p| (p[1] - lo[1] + pad[1]) / span).collect(),
    }
}

/// Mean fraction of each sampled live point's `k` nearest features (the first `k` entries of
/// its neighbour list) found among its `k` nearest points on the map. At most `samples`
/// points are checked (drawn with `seed`); each check is a scan of all points.
pub fn neighbourhood_preservation(
    lists: &[Vec<Neighbour>],
    layout: &Layout,
    k: usize,
    samples: usize,
    seed: u64,
) -> f64 {
    let live: Vec<bool> = lists.iter().map(|l| !l.is_empty()).collect();
    let mut picked: Vec<usize> = (0..lists.len()).filter(|&i| live[i]).collect();
    if picked.len() > samples {
        SplitMix64::new(seed).shuffle(&mut picked);
        picked.truncate(samples);
    }
    if picked.is_empty() {
        return 1.0;
    }
    let total: f64 = picked
        .par_iter()
        .map(|&i| {
            let truth: Vec<u32> = lists[i].iter().take(k).map(|n| n.feature).collect();
            let mut nearest: Vec<(f32, u32)> = (0..lists.len())
                .filter(|&j| j != i && live[j])
                .map(|j| {
                    let (dx, dy) = (layout.x[i] - layout.x[j], layout.y[i] - layout.y[j]);
                    (dx * dx + dy * dy, j as u32)
                })
                .collect();
            let kk = truth.len().min(nearest.len());
            if kk == 0 {
                return 1.0;
            }
            nearest.select_nth_unstable_by(kk - 1, |a, b| a.0.total_cmp(&b.0));
            let found = nearest[..kk]
                .iter()
                .filter(|(_, j)| truth.contains(j))
                .count();
            found as f64 / truth.len() as f64
        })
        .sum();
    total / picked.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directions::Directions;
    use crate::exact::exact_neighbours;
    use crate::rng::planted_dictionary;

    #[test]
    fn curve_fit_matches_umap_learn_for_the_default_min_dist() {
        // umap-learn's find_ab_params(1.0, 0.1) gives a ≈ 1.577, b ≈ 0.895.
        let (a, b) = fit_curve(0.1);
        assert!(
            (a - 1.577).abs() < 0.05 && (b - 0.895).abs() < 0.03,
            "{a} {b}"
        );
    }

    #[test]
    fn planted_groups_stay_together_on_the_map() {
        let (rows, truth) = planted_dictionary(20, 25, 32, 0.5, 4);
        let d = Directions::from_rows(&rows, 32, "planted").unwrap();
        let lists = exact_neighbours(&d, &d, 15, 128, true, &mut |_| Ok(())).unwrap();
        let params = LayoutParams {
            epochs: 200,
            min_dist: 0.1,
            negative_samples: 5,
            seed: 9,
        };
        let map = layout(lists.len(), &fuzzy_edges(&lists), params);
        assert!(map.x.iter().chain(&map.y).all(|v| (0.0..=1.0).contains(v)));
        // Each point's 10 nearest on the map are (almost all) of its own group...
        let mut same_group = 0;
        for i in 0..500 {
            let mut by_distance: Vec<(f32, usize)> = (0..500)
                .filter(|&j| j != i)
                .map(|j| {
                    (
                        (map.x[i] - map.x[j]).powi(2) + (map.y[i] - map.y[j]).powi(2),
                        j,
                    )
                })
                .collect();
            by_distance.sort_by(|a, b| a.0.total_cmp(&b.0));
            same_group += by_distance[..10]
                .iter()
                .filter(|(_, j)| truth[*j] == truth[i])
                .count();
        }
        let purity = same_group as f64 / 5000.0;
        assert!(purity > 0.95, "map neighbours in the same group: {purity}");
        // ...and within a group of 25 the 10 nearest directions are found more often than the
        // 10/24 of a random pick among the group, let alone the 2% of a random map.
        let kept = neighbourhood_preservation(&lists, &map, 10, 10_000, 0);
        assert!(kept > 10.0 / 24.0, "preservation {kept}");
        let random = Layout {
            x: (0..500)
                .map(|i| ((i * 7919) % 500) as f32 / 500.0)
                .collect(),
            y: (0..500)
                .map(|i| ((i * 104_729) % 499) as f32 / 499.0)
                .collect(),
        };
        let baseline = neighbourhood_preservation(&lists, &random, 10, 10_000, 0);
        assert!(baseline < 0.1, "baseline {baseline}");
    }

    #[test]
    fn dead_points_get_coordinates_too() {
        let mut lists = vec![Vec::new(); 3];
        lists[0].push(Neighbour {
            feature: 1,
            cosine: 0.9,
        });
        lists[1].push(Neighbour {
            feature: 0,
            cosine: 0.9,
        });
        let params = LayoutParams {
            epochs: 50,
            min_dist: 0.1,
            negative_samples: 2,
            seed: 0,
        };
        let map = layout(lists.len(), &fuzzy_edges(&lists), params);
        assert_eq!(map.x.len(), 3);
        assert!(map.x.iter().chain(&map.y).all(|v| v.is_finite()));
    }
}
