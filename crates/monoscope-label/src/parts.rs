//! `parts = N` for the label stage: part `i` keeps the `i`-th of `N` contiguous feature ranges
//! (its evidence, its share of the whole run's sample of features, their labels); the merge
//! joins the parts' files in feature order and sums their summaries.

use std::path::{Path, PathBuf};

use crate::LabelError;
use crate::format::{LabelOutputs, Summary};

/// Joins the parts' evidence, labels and summaries (in `dirs`, in part order) into `out_dir`.
pub(crate) fn merge(dirs: &[PathBuf], out_dir: &Path) -> Result<Summary, LabelError> {
    let parts: Vec<LabelOutputs> = dirs.iter().map(LabelOutputs::new).collect();
    let out = LabelOutputs::new(out_dir);
    let mut evidence = Vec::new();
    let mut labels = Vec::new();
    let mut summaries = Vec::new();
    for part in &parts {
        evidence.extend(part.evidence()?);
        labels.extend(part.labels()?);
        summaries.push(part.summary()?.ok_or_else(|| {
            LabelError::Invalid(format!(
                "{}: missing; this part did not finish",
                part.summary_path().display()
            ))
        })?);
    }
    let meta = parts[0].meta()?;
    out.write_evidence(&evidence)?;
    out.write_evidence_meta(&meta)?;
    out.write_labels(&labels)?;
    let summary = sum(summaries, &labels);
    out.write_summary(&summary)?;
    Ok(summary)
}

/// The parts' counts added up; the score distributions are those of all the labels (the
/// explainer's, not the statistical rest's, as in a run in one piece).
fn sum(parts: Vec<Summary>, labels: &[crate::format::LabelRecord]) -> Summary {
    let mut parts = parts.into_iter();
    let mut total = parts.next().expect("a merge has at least one part");
    for part in parts {
        total.features += part.features;
        total.live += part.live;
        total.dead += part.dead;
        total.labelled += part.labelled;
        total.statistical_rest += part.statistical_rest;
        for (reason, count) in part.skipped {
            *total.skipped.entry(reason).or_default() += count;
        }
        total.tokens_in += part.tokens_in;
        total.tokens_out += part.tokens_out;
        total.cache_hits += part.cache_hits;
        total.seconds_evidence += part.seconds_evidence;
        total.seconds_labelling += part.seconds_labelling;
    }
    use crate::explainer::{Explainer, StatisticalExplainer};
    let statistical = StatisticalExplainer.describe();
    let by_explainer: Vec<crate::format::LabelRecord> = match total.statistical_rest {
        0 => labels.to_vec(),
        _ => labels
            .iter()
            .filter(|r| r.explainer != statistical)
            .cloned()
            .collect(),
    };
    (total.scores, total.baseline_scores) = crate::summary::summarise(&by_explainer);
    total
}
