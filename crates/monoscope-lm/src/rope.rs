//! The rotary frequencies of a checkpoint: `theta^(-2i/dim)` for each rotated pair, stretched
//! by its [`RopeScaling`] as Hugging Face transformers and llama.cpp define each kind.

use std::f64::consts::PI;

use monoscope_formats::RopeScaling;

/// The angles' rates and the factor on cos/sin for one forward pass.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RopeFrequencies {
    /// One per rotated pair: `dim / 2` of them.
    pub inverse: Vec<f64>,
    /// Multiplies cos and sin (YaRN's attention scaling; 1 otherwise).
    pub attention_factor: f64,
}

impl RopeFrequencies {
    /// The frequencies for `dim` rotated dimensions when the longest position of the pass is
    /// `longest_position` (only dynamic scaling depends on it, and it only ever grows the base
    /// past the original context, as transformers' dynamic update does for each call).
    pub fn new(
        dim: usize,
        theta: f64,
        scaling: Option<&RopeScaling>,
        longest_position: usize,
    ) -> Self {
        let plain = |base: f64| -> Vec<f64> {
            (0..dim / 2)
                .map(|i| 1.0 / base.powf((2 * i) as f64 / dim as f64))
                .collect()
        };
        let mut attention_factor = 1.0;
        let inverse = match scaling {
            None => plain(theta),
            Some(RopeScaling::Linear { factor }) => {
                plain(theta).into_iter().map(|f| f / factor).collect()
            }
            Some(RopeScaling::Dynamic {
                factor,
                original_max_positions,
            }) => {
                let seq_len = (longest_position + 1).max(*original_max_positions) as f64;
                let original = *original_max_positions as f64;
                let base = theta
                    * ((factor * seq_len / original) - (factor - 1.0))
                        .powf(dim as f64 / (dim as f64 - 2.0));
                plain(base)
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_positions,
            }) => {
                let original = *original_max_positions as f64;
                let low_wavelen = original / low_freq_factor;
                let high_wavelen = original / high_freq_factor;
                plain(theta)
                    .into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (original / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
            Some(RopeScaling::Yarn {
                factor,
                original_max_positions,
                beta_fast,
                beta_slow,
                attention_factor: scale,
                truncate,
            }) => {
                attention_factor = *scale;
                let original = *original_max_positions as f64;
                let correction_dim = |rotations: f64| {
                    dim as f64 * (original / (rotations * 2.0 * PI)).ln() / (2.0 * theta.ln())
                };
                let (mut low, mut high) = (correction_dim(*beta_fast), correction_dim(*beta_slow));
                if *truncate {
                    (low, high) = (low.floor(), high.ceil());
                }
                let (low, mut high) = (low.max(0.0), high.min(dim as f64 - 1.0));
                if low == high {
                    high += 0.001;
                }
                plain(theta)
                    .into_iter()
                    .enumerate()
                    .map(|(i, f)| {
                        let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation = 1.0 - ramp;
                        (f / factor) * (1.0 - extrapolation) + f * extrapolation
                    })
                    .collect()
            }
            Some(RopeScaling::FrequencyDivisors { divisors }) => plain(theta)
                .into_iter()
                .zip(divisors)
                .map(|(f, d)| f / d)
                .collect(),
            Some(RopeScaling::LongRope {
                short_factors,
                long_factors,
                original_max_positions,
                attention_factor: scale,
            }) => {
                attention_factor = *scale;
                let factors = if longest_position + 1 > *original_max_positions {
                    long_factors
                } else {
                    short_factors
                };
                plain(theta)
                    .into_iter()
                    .zip(factors)
                    .map(|(f, d)| f / d)
                    .collect()
            }
        };
        Self {
            inverse,
            attention_factor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_frequencies_follow_the_base() {
        let f = RopeFrequencies::new(8, 10_000.0, None, 0);
        assert_eq!(f.inverse.len(), 4);
        assert_eq!(f.inverse[0], 1.0);
        assert!((f.inverse[2] - 10_000f64.powf(-0.5)).abs() < 1e-12);
        assert_eq!(f.attention_factor, 1.0);
    }

    #[test]
    fn llama3_keeps_high_and_divides_low_frequencies() {
        let scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_positions: 64,
        };
        let plain = RopeFrequencies::new(16, 500_000.0, None, 0).inverse;
        let scaled = RopeFrequencies::new(16, 500_000.0, Some(&scaling), 0).inverse;
        // Pair 0 (wavelength 2π < 64/4): unchanged; the last pair (wavelength ≫ 64): divided.
        assert_eq!(scaled[0], plain[0]);
        assert!((scaled[7] - plain[7] / 8.0).abs() < 1e-15);
        // Between the bounds the blend lies between the two.
        let mid = (0..8).find(|&i| {
            let w = 2.0 * PI / plain[i];
            (16.0..=64.0).contains(&w)
        });
        let i = mid.expect("a pair between the wavelength bounds");
        assert!(scaled[i] < plain[i] && scaled[i] > plain[i] / 8.0);
    }

    #[test]
    fn dynamic_scaling_acts_only_past_the_original_context() {
        let scaling = RopeScaling::Dynamic {
            factor: 2.0,
            original_max_positions: 16,
        };
        let plain = RopeFrequencies::new(8, 10_000.0, None, 0);
        assert_eq!(RopeFrequencies::new(8, 10_000.0, Some(&scaling), 15), plain);
        let long = RopeFrequencies::new(8, 10_000.0, Some(&scaling), 23);
        assert!(long.inverse[1] < plain.inverse[1]);
    }
}
