//! Detection and fuzzing (delphi): how well a label predicts where the feature fires,
//! as balanced accuracy ((true-positive rate + true-negative rate) / 2; 0.5 is chance).
//!
//! - Detection: the judge sees contexts without marks, half sampled across the activation
//!   quantiles (none overlaps a top context the explainer saw), half random contexts where the
//!   feature never fires, shuffled; it says which ones the feature fires on.
//! - Fuzzing: the judge sees marked contexts: the activating ones with their real firing
//!   tokens marked, and non-firing ones with as many tokens marked at random; it says where
//!   the marks are right.
//!
//! Each judge decides in its own way: an HTTP model answers each question in words; the local
//! model is ranked by its `yes` − `no` logit margin and says `yes` to the upper half (see
//! [`crate::explainer::LocalExplainer`]); the statistical judge matches its keywords.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::LabelError;
use crate::explainer::{Explainer, Explanation};
use crate::format::{Context, FeatureEvidence, Scores};
use crate::prompt::{JudgeTask, Shown};

/// Scores `explanation` of `evidence` with `judge`, using up to `per_class` contexts of each
/// class. A score is `None` when either class is empty.
pub fn score(
    judge: &dyn Explainer,
    explanation: &Explanation,
    evidence: &FeatureEvidence,
    per_class: usize,
    seed: u64,
) -> Result<Scores, LabelError> {
    let positives = activating_samples(evidence, per_class);
    let n = positives.len().min(evidence.random.len()).min(per_class);
    if n == 0 {
        return Ok(Scores::default());
    }
    let negatives = &evidence.random[..n];
    let positives = &positives[..n];
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ u64::from(evidence.feature));

    let mut detection: Vec<(Shown, bool)> = positives
        .iter()
        .map(|c| (Shown::plain(c), true))
        .chain(negatives.iter().map(|c| (Shown::plain(c), false)))
        .collect();
    detection.shuffle(&mut rng);
    let mut fuzzing: Vec<(Shown, bool)> =
        positives.iter().map(|c| (Shown::firing(c), true)).collect();
    for (i, c) in negatives.iter().enumerate() {
        let marks = fuzzing[i].0.marked.iter().filter(|m| **m).count().max(1);
        fuzzing.push((random_marks(c, marks, &mut rng), false));
    }
    fuzzing.shuffle(&mut rng);

    Ok(Scores {
        detection: Some(run(judge, JudgeTask::Detection, explanation, &detection)?),
        fuzzing: Some(run(judge, JudgeTask::Fuzzing, explanation, &fuzzing)?),
    })
}

fn run(
    judge: &dyn Explainer,
    task: JudgeTask,
    explanation: &Explanation,
    items: &[(Shown, bool)],
) -> Result<f64, LabelError> {
    let shown: Vec<Shown> = items.iter().map(|(s, _)| s.clone()).collect();
    let said = judge.judge(task, explanation, &shown)?;
    let truth: Vec<bool> = items.iter().map(|(_, t)| *t).collect();
    Ok(balanced_accuracy(&truth, &said))
}

/// Contexts across the quantiles, round robin from the highest, at most `n`.
fn activating_samples(evidence: &FeatureEvidence, n: usize) -> Vec<&Context> {
    let mut out = Vec::new();
    let longest = evidence
        .quantiles
        .iter()
        .map(|q| q.examples.len())
        .max()
        .unwrap_or(0);
    for i in 0..longest {
        for q in evidence.quantiles.iter().rev() {
            if let Some(c) = q.examples.get(i) {
                out.push(c);
            }
        }
    }
    out.truncate(n);
    out
}

fn random_marks(context: &Context, marks: usize, rng: &mut ChaCha8Rng) -> Shown {
    let mut shown = Shown::plain(context);
    let len = shown.tokens.len();
    for _ in 0..marks.min(len) {
        let mut i = rng.random_range(0..len);
        while shown.marked[i] {
            i = (i + 1) % len;
        }
        shown.marked[i] = true;
    }
    shown
}

/// `(TPR + TNR) / 2`; a class with no member contributes 0.5.
pub fn balanced_accuracy(truth: &[bool], said: &[bool]) -> f64 {
    let rate = |class: bool| {
        let members: Vec<bool> = truth
            .iter()
            .zip(said)
            .filter(|(t, _)| **t == class)
            .map(|(_, s)| *s == class)
            .collect();
        if members.is_empty() {
            0.5
        } else {
            members.iter().filter(|r| **r).count() as f64 / members.len() as f64
        }
    };
    (rate(true) + rate(false)) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_accuracy_weighs_classes_equally() {
        assert_eq!(balanced_accuracy(&[true, false], &[true, false]), 1.0);
        assert_eq!(balanced_accuracy(&[true, false], &[true, true]), 0.5);
        assert_eq!(
            balanced_accuracy(&[true, false, false, false], &[true, true, false, false]),
            (1.0 + 2.0 / 3.0) / 2.0
        );
        assert_eq!(balanced_accuracy(&[true, true], &[false, false]), 0.25);
    }
}
