//! The reference micro-kernel in plain Rust: what the SIMD kernels must reproduce exactly
//! (integer arithmetic has no rounding to differ in).

use super::{LANES_PER_PAIR, Lanes, MR, NR, Pair};

/// `acc[r][f] = Σ_j a[r][j].0 · w[j][f][0] + a[r][j].1 · w[j][f][1]` for the [`MR`] rows of
/// pairs `a` and one packed group `w` (`[pairs][NR / 8]` lanes).
pub(super) fn tile(a: [&[Pair]; MR], w: &[Lanes]) -> [[i32; NR]; MR] {
    let mut acc = [[0i32; NR]; MR];
    for (acc_row, row) in acc.iter_mut().zip(a) {
        for (pair, wj) in row.iter().zip(w.chunks_exact(LANES_PER_PAIR)) {
            let (x0, x1) = (i32::from(pair.0[0]), i32::from(pair.0[1]));
            let weights = wj.iter().flat_map(|l| l.0.chunks_exact(2));
            for (acc, wf) in acc_row.iter_mut().zip(weights) {
                *acc += x0 * i32::from(wf[0]) + x1 * i32::from(wf[1]);
            }
        }
    }
    acc
}
