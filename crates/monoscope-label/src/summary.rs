//! The run summary's statistics.

use crate::format::{Distribution, Histogram, LabelRecord, ScoreSummary, Scores};

/// Bins of the score histograms on `[0, 1]`.
const SCORE_BINS: usize = 10;

/// Mean, quartiles and histogram of `values` (`None` when empty).
pub fn distribution(values: &[f64]) -> Option<Distribution> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let quantile = |p: f64| {
        let x = p * (v.len() - 1) as f64;
        let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (x - lo as f64)
    };
    let mut counts = vec![0u64; SCORE_BINS];
    for &x in &v {
        counts[((x * SCORE_BINS as f64) as usize).min(SCORE_BINS - 1)] += 1;
    }
    Some(Distribution {
        count: v.len(),
        mean: v.iter().sum::<f64>() / v.len() as f64,
        median: quantile(0.5),
        q1: quantile(0.25),
        q3: quantile(0.75),
        histogram: Histogram {
            edges: (0..=SCORE_BINS)
                .map(|i| i as f32 / SCORE_BINS as f32)
                .collect(),
            counts,
        },
    })
}

/// Distributions of the scores picked by `pick` from each record.
pub fn score_summary<'a>(scores: impl Iterator<Item = &'a Scores> + Clone) -> ScoreSummary {
    let collect =
        |f: fn(&Scores) -> Option<f64>| -> Vec<f64> { scores.clone().filter_map(f).collect() };
    ScoreSummary {
        detection: distribution(&collect(|s| s.detection)),
        fuzzing: distribution(&collect(|s| s.fuzzing)),
    }
}

/// The explainer's and the baseline's score summaries.
pub fn summarise(records: &[LabelRecord]) -> (ScoreSummary, Option<ScoreSummary>) {
    let main = score_summary(records.iter().map(|r| &r.scores));
    let has_baseline = records.iter().any(|r| r.baseline.is_some());
    let baseline = has_baseline.then(|| {
        score_summary(
            records
                .iter()
                .filter_map(|r| r.baseline.as_ref().map(|b| &b.scores)),
        )
    });
    (main, baseline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_interpolate() {
        let d = distribution(&[0.0, 0.5, 1.0, 0.25, 0.75]).unwrap();
        assert_eq!((d.count, d.median, d.q1, d.q3), (5, 0.5, 0.25, 0.75));
        assert_eq!(d.mean, 0.5);
        assert_eq!(d.histogram.counts.iter().sum::<u64>(), 5);
        assert_eq!(d.histogram.counts[9], 1);
        assert!(distribution(&[]).is_none());
    }
}
