//! Choosing the next token from logits: greedy, or sampled with temperature, top-k and top-p
//! from a seeded generator, so that a seed always gives the same text.

use crate::LmError;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The most likely token (lowest id on ties).
    Greedy,
    /// A random draw from the tempered, truncated distribution.
    Sample {
        /// Divides the logits; must be positive.
        temperature: f32,
        /// Keep only the `k` most likely tokens.
        top_k: Option<usize>,
        /// Keep the smallest set of most likely tokens whose probability reaches `p` (0 < p ≤ 1).
        top_p: Option<f32>,
        seed: u64,
    },
}

impl Sampling {
    pub(crate) fn validate(&self) -> Result<(), LmError> {
        if let Sampling::Sample {
            temperature,
            top_k,
            top_p,
            ..
        } = *self
        {
            if !(temperature > 0.0 && temperature.is_finite()) {
                return Err(LmError::Sampling {
                    name: "temperature",
                    value: temperature.into(),
                    reason: "must be a positive finite number (use Sampling::Greedy for 0)",
                });
            }
            if top_k == Some(0) {
                return Err(LmError::Sampling {
                    name: "top_k",
                    value: 0.0,
                    reason: "must be at least 1",
                });
            }
            if let Some(p) = top_p
                && !(p > 0.0 && p <= 1.0)
            {
                return Err(LmError::Sampling {
                    name: "top_p",
                    value: p.into(),
                    reason: "must be in (0, 1]",
                });
            }
        }
        Ok(())
    }
}

/// SplitMix64: tiny, fast and fully determined by its seed, which is all sampling needs.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub(crate) fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Picks a token from one row of logits.
pub(crate) fn pick(logits: &[f32], sampling: &Sampling, rng: &mut Rng) -> u32 {
    let Sampling::Sample {
        temperature,
        top_k,
        top_p,
        ..
    } = *sampling
    else {
        return argmax(logits);
    };
    // Candidates sorted by logit, most likely first (stable: ties keep the lower id first).
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    if let Some(k) = top_k {
        order.truncate(k.max(1));
    }
    let max = logits[order[0] as usize] as f64;
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i as usize] as f64 - max) / temperature as f64).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if let Some(p) = top_p {
        let mut cumulative = 0.0;
        let keep = probs
            .iter()
            .position(|&q| {
                cumulative += q;
                cumulative >= p as f64
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
        order.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut r = rng.next_f64() * total;
    for (&id, &q) in order.iter().zip(&probs) {
        if r < q {
            return id;
        }
        r -= q;
    }
    *order.last().expect("at least one candidate")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seed: u64) -> Sampling {
        Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed,
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn same_seed_same_draws_and_frequencies_follow_probabilities() {
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY];
        let draws = |seed| {
            let mut rng = Rng::new(seed);
            (0..4000)
                .map(|_| pick(&logits, &sample(seed), &mut rng))
                .collect::<Vec<_>>()
        };
        let (a, b) = (draws(7), draws(7));
        assert_eq!(a, b);
        assert_ne!(a, draws(8));
        let ones = a.iter().filter(|&&t| t == 1).count() as f64 / a.len() as f64;
        assert!((ones - 0.75).abs() < 0.03, "p(1) = {ones}");
        assert!(!a.contains(&2));
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        let logits = [0.5f32, 2.0, 1.0];
        let mut rng = Rng::new(1);
        for s in [
            Sampling::Sample {
                temperature: 5.0,
                top_k: Some(1),
                top_p: None,
                seed: 1,
            },
            Sampling::Sample {
                temperature: 1.0,
                top_k: None,
                top_p: Some(0.01),
                seed: 1,
            },
        ] {
            for _ in 0..50 {
                assert_eq!(pick(&logits, &s, &mut rng), 1);
            }
        }
    }

    #[test]
    fn bad_parameters_are_rejected() {
        let s = |temperature, top_k, top_p| Sampling::Sample {
            temperature,
            top_k,
            top_p,
            seed: 0,
        };
        assert!(s(0.0, None, None).validate().is_err());
        assert!(s(1.0, Some(0), None).validate().is_err());
        assert!(s(1.0, None, Some(1.5)).validate().is_err());
        assert!(s(0.7, Some(40), Some(0.9)).validate().is_ok());
    }
}
