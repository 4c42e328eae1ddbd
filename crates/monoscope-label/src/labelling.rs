//! Labelling a set of features: explain, score, and (for model explainers) the statistical
//! baseline judged by the same model; failures become skip reasons, never lost work.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::LabelError;
use crate::explainer::{Explainer, Explanation, StatisticalExplainer};
use crate::format::{Baseline, FeatureEvidence, LabelRecord};
use crate::score::score;

/// How each feature is labelled.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelOptions {
    /// Top contexts shown to the explainer.
    pub explain_examples: usize,
    pub score: bool,
    /// Contexts per class for each scorer.
    pub score_examples: usize,
    /// Also label with the statistical labeller (scored by the same judge).
    pub baseline: bool,
    /// Features explained at once (worker threads; HTTP explainers).
    pub concurrency: usize,
    /// Features whose labels a worker asks for in one call (one batch for a local model).
    pub batch: usize,
    pub seed: u64,
}

/// Labels and skip reasons.
#[derive(Debug, Default)]
pub struct Labelled {
    /// In feature order.
    pub records: Vec<LabelRecord>,
    pub skipped: BTreeMap<String, usize>,
}

/// Labels one feature.
pub fn label_feature(
    explainer: &dyn Explainer,
    evidence: &FeatureEvidence,
    options: &LabelOptions,
) -> Result<LabelRecord, LabelError> {
    let explanation = explainer.explain(evidence, options.explain_examples)?;
    Ok(scored_record(explainer, evidence, explanation, options))
}

/// The record of a feature whose label is written: scores and the baseline added.
fn scored_record(
    explainer: &dyn Explainer,
    evidence: &FeatureEvidence,
    explanation: Explanation,
    options: &LabelOptions,
) -> LabelRecord {
    // A label already written is kept even when its scoring fails: the scores become null.
    let scored = |explanation: &Explanation| match options.score {
        true => score(
            explainer,
            explanation,
            evidence,
            options.score_examples,
            options.seed,
        )
        .unwrap_or_else(|e| {
            tracing::warn!(
                "feature {}: scoring failed, scores left null: {e}",
                evidence.feature
            );
            Default::default()
        }),
        false => Default::default(),
    };
    let scores = scored(&explanation);
    let statistical = StatisticalExplainer;
    let baseline = match options.baseline && explainer.describe() != statistical.describe() {
        true => statistical
            .explain(evidence, options.explain_examples)
            .ok()
            .map(|b| Baseline {
                scores: scored(&b),
                label: b.label,
            }),
        false => None,
    };
    LabelRecord {
        feature: evidence.feature,
        label: explanation.label,
        explanation: explanation.explanation,
        explainer: explainer.describe(),
        scores,
        baseline,
    }
}

/// Labels `features`, `options.batch` per explainer call and up to `options.concurrency`
/// calls at once; `progress` is called after each feature, `cancelled` checked before each.
pub fn label_features(
    explainer: &dyn Explainer,
    features: &[&FeatureEvidence],
    options: &LabelOptions,
    progress: &(dyn Fn(&Result<LabelRecord, LabelError>) + Sync),
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Labelled, LabelError> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<LabelRecord, LabelError>)>> = Mutex::new(Vec::new());
    let worker = || {
        loop {
            if cancelled() {
                return;
            }
            let batch = options.batch.max(1);
            let start = next.fetch_add(batch, Ordering::Relaxed);
            let Some(chunk) = features.get(start..(start + batch).min(features.len())) else {
                return;
            };
            if chunk.is_empty() {
                return;
            }
            let explanations = explainer.explain_batch(chunk, options.explain_examples);
            for (k, (evidence, explanation)) in chunk.iter().zip(explanations).enumerate() {
                if cancelled() {
                    return;
                }
                let result = explanation.map(|e| scored_record(explainer, evidence, e, options));
                if let Err(e) = &result {
                    tracing::warn!("feature {}: {e}", evidence.feature);
                }
                progress(&result);
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((start + k, result));
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..options.concurrency.max(1) {
            s.spawn(worker);
        }
        worker();
    });
    if cancelled() {
        return Err(LabelError::Cancelled);
    }
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _)| *i);
    let mut out = Labelled::default();
    for (_, result) in results {
        match result {
            Ok(record) => out.records.push(record),
            Err(e) => *out.skipped.entry(skip_reason(&e)).or_default() += 1,
        }
    }
    Ok(out)
}

/// A reason short and stable enough to count features by.
fn skip_reason(e: &LabelError) -> String {
    match e {
        LabelError::Http { message, .. } => {
            let kind = message.split([':', '(']).next().unwrap_or(message).trim();
            format!("explainer request failed: {kind}")
        }
        LabelError::Answer(m) if m.starts_with("empty answer") || m.contains("empty answer") => {
            "explainer gave an empty answer".into()
        }
        LabelError::Answer(m) => format!("explainer answer unusable: {m}"),
        other => format!("error: {other}"),
    }
}
