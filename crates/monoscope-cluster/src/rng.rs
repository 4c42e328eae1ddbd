//! A small seeded random generator (SplitMix64): the layout's initial positions and negative
//! samples, the node order of the clustering, and the random dictionaries of tests and benches.
//! Fast and reproducible across platforms, which is all these uses need.

/// SplitMix64 (Steele, Lea and Flood 2014).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `0..n` (`n > 0`); the modulo bias is below 2⁻³² for any `n` used here.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Standard normal (Box–Muller).
    pub fn gaussian(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// A dictionary with planted structure: `groups` random unit centres, each with `per_group`
/// members at angle noise `spread` around it (member = centre + spread · gaussian/√dim, then
/// normalised). Returns the rows (`[groups·per_group, dim]`) and each row's group. Members are
/// interleaved (row r belongs to group r % groups) so that no index order hints at the groups.
pub fn planted_dictionary(
    groups: usize,
    per_group: usize,
    dim: usize,
    spread: f32,
    seed: u64,
) -> (Vec<f32>, Vec<u32>) {
    let mut rng = SplitMix64::new(seed);
    let centres: Vec<f32> = (0..groups * dim).map(|_| rng.gaussian()).collect();
    let scale = spread / (dim as f32).sqrt();
    let mut rows = Vec::with_capacity(groups * per_group * dim);
    let mut truth = Vec::with_capacity(groups * per_group);
    for r in 0..groups * per_group {
        let g = r % groups;
        let centre = &centres[g * dim..(g + 1) * dim];
        let centre_norm = centre.iter().map(|v| v * v).sum::<f32>().sqrt();
        rows.extend(
            centre
                .iter()
                .map(|c| c / centre_norm + scale * rng.gaussian()),
        );
        truth.push(g as u32);
    }
    (rows, truth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_values_in_range() {
        let (mut a, mut b) = (SplitMix64::new(3), SplitMix64::new(3));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let u = a.uniform();
            assert!((0.0..1.0).contains(&u));
            assert!(a.below(7) < 7);
            b.uniform();
            b.below(7);
        }
        let mean: f32 = (0..20_000).map(|_| a.gaussian()).sum::<f32>() / 20_000.0;
        assert!(mean.abs() < 0.05, "gaussian mean {mean}");
    }
}
