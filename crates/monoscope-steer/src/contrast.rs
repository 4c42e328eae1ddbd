//! Contrastive feature search (`monoscope features --contrast POS NEG`): the features that fire
//! more on one set of texts than on another, the way *Scaling Monosemanticity* looked for
//! features of deception, bias or unsafe code.
//!
//! Each text gives one number per feature: its peak activation over the text (BOS and the
//! first token after it skipped, as [`crate::Steerer::top_features`] does), divided by the
//! feature's maximum in training when that is known so that features of different scales
//! compare. For each feature the difference of the two sets' mean peaks comes with its
//! standard error (Welch's: each set's sample variance over its size); features are ranked by
//! the lower end of the difference's 95% interval, so that a feature seen on one text only
//! ranks below one seen on all of them.

use std::collections::BTreeMap;

pub use monoscope_artifacts::steer::ContrastHit;

/// The normal quantile of a two-sided 95% interval.
const Z_95: f64 = 1.96;

/// Per-text peaks: for each text, feature → its peak on that text (features that do not fire
/// are absent).
pub type TextPeaks = Vec<BTreeMap<u32, f32>>;

/// Ranks the features that fire on any text by how much more they fire on `positive` than on
/// `negative`: those `scale` gives a divisor of their peaks (the training maximum) first, then
/// the others, each by the highest lower bound.
pub fn contrast(
    positive: &TextPeaks,
    negative: &TextPeaks,
    scale: impl Fn(u32) -> Option<f32>,
) -> Vec<ContrastHit> {
    let features: std::collections::BTreeSet<u32> = positive
        .iter()
        .chain(negative)
        .flat_map(|peaks| peaks.keys().copied())
        .collect();
    let mut hits: Vec<ContrastHit> = features
        .into_iter()
        .map(|feature| {
            let divisor = scale(feature).filter(|m| *m > 0.0);
            let values = |texts: &TextPeaks| -> Vec<f64> {
                texts
                    .iter()
                    .map(|peaks| {
                        let peak = peaks.get(&feature).copied().unwrap_or(0.0);
                        f64::from(divisor.map_or(peak, |m| peak / m))
                    })
                    .collect()
            };
            let (p, n) = (values(positive), values(negative));
            let (p_mean, p_var) = mean_and_variance(&p);
            let (n_mean, n_var) = mean_and_variance(&n);
            let standard_error = (p_var / p.len() as f64 + n_var / n.len() as f64).sqrt();
            let difference = p_mean - n_mean;
            let firing = |v: &[f64]| v.iter().filter(|x| **x > 0.0).count() as f64 / v.len() as f64;
            ContrastHit {
                feature,
                positive_mean: p_mean,
                negative_mean: n_mean,
                difference,
                standard_error,
                lower_bound: difference - Z_95 * standard_error,
                positive_firing: firing(&p),
                negative_firing: firing(&n),
                scaled: divisor.is_some(),
                label: None,
            }
        })
        .collect();
    // Peaks in multiples of a maximum and raw peaks are not on one scale: as in
    // `Steerer::top_features`, the features with a known maximum come first.
    hits.sort_by(|a, b| {
        b.scaled
            .cmp(&a.scaled)
            .then(b.lower_bound.total_cmp(&a.lower_bound))
            .then(a.feature.cmp(&b.feature))
    });
    hits
}

/// Mean and unbiased sample variance (0 for fewer than two values).
fn mean_and_variance(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, variance)
}

/// The texts of a contrast file: one per non-empty line.
pub fn read_texts(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so the test needs no RNG crate.
    struct Lcg(u64);
    impl Lcg {
        fn unit(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 40) as f32 / (1u64 << 24) as f32
        }
    }

    /// Texts on which 50 background features fire at random, with feature 7 planted on most
    /// positive texts, feature 8 on every text of both sets, and feature 9 on a single
    /// positive text at a high value.
    fn texts(rng: &mut Lcg, n: usize, planted: bool) -> TextPeaks {
        (0..n)
            .map(|i| {
                let mut peaks = BTreeMap::new();
                for f in 10..60 {
                    if rng.unit() < 0.3 {
                        peaks.insert(f, rng.unit() * 2.0);
                    }
                }
                peaks.insert(8, 1.0 + rng.unit());
                if planted && i % 5 != 0 {
                    peaks.insert(7, 0.8 + 0.4 * rng.unit());
                }
                if planted && i == 3 {
                    peaks.insert(9, 60.0);
                }
                peaks
            })
            .collect()
    }

    #[test]
    fn a_planted_feature_ranks_first_above_shared_and_one_off_features() {
        let mut rng = Lcg(5);
        let positive = texts(&mut rng, 40, true);
        let negative = texts(&mut rng, 40, false);
        let hits = contrast(&positive, &negative, |_| None);
        assert_eq!(hits[0].feature, 7, "{:?}", &hits[..3]);
        let planted = &hits[0];
        assert!((planted.positive_firing - 0.8).abs() < 1e-9);
        assert_eq!(planted.negative_firing, 0.0);
        assert!(planted.lower_bound > 0.5 && planted.standard_error > 0.0);
        // One text's high peak has a large standard error: it ranks below the planted one.
        let one_off = hits.iter().find(|h| h.feature == 9).unwrap();
        assert!(one_off.difference > planted.difference);
        assert!(one_off.lower_bound < planted.lower_bound);
        // Firing everywhere is no contrast.
        let shared = hits.iter().find(|h| h.feature == 8).unwrap();
        assert!(shared.lower_bound < 0.0, "{shared:?}");
    }

    #[test]
    fn peaks_are_divided_by_the_training_maximum_when_known_and_those_rank_first() {
        let positive = vec![BTreeMap::from([(1, 4.0), (2, 3.0)]); 3];
        let negative = vec![BTreeMap::from([(2, 1.0)]); 3];
        let hits = contrast(&positive, &negative, |f| (f == 1).then_some(8.0));
        assert_eq!(hits.iter().map(|h| h.feature).collect::<Vec<_>>(), [1, 2]);
        assert!(hits[0].scaled && (hits[0].positive_mean - 0.5).abs() < 1e-12);
        // Its raw difference is larger, but raw peaks are not on the scaled features' scale.
        assert!(!hits[1].scaled && (hits[1].difference - 2.0).abs() < 1e-12);
    }

    #[test]
    fn contrast_files_hold_one_text_per_non_empty_line() {
        assert_eq!(read_texts("a b\n\n  c \n"), ["a b", "c"]);
    }
}
