//! The statistical labeller: the tokens the feature fires on most often in its top contexts,
//! the token before them, and the tokens it promotes. Deterministic, free, always available.
//!
//! Its own judge matches words: a text "fires" when it contains one of the label's keywords
//! (detection); marked tokens are "right" when most of them are keywords (fuzzing).

use std::collections::HashMap;

use super::{Explainer, Explanation, Usage};
use crate::LabelError;
use crate::format::FeatureEvidence;
use crate::prompt::{JudgeTask, Shown};

/// Keywords in a statistical label.
const KEYWORDS: usize = 3;

#[derive(Debug, Default)]
pub struct StatisticalExplainer;

/// A token as the statistical labeller compares it: trimmed and lower-cased.
fn normal(token: &str) -> String {
    token.trim().to_lowercase()
}

/// Counts, per key, in how many contexts it appears, ranked by that then by total weight.
fn ranked(counts: HashMap<String, (usize, f32)>) -> Vec<(String, usize)> {
    let mut v: Vec<(String, (usize, f32))> = counts.into_iter().collect();
    v.sort_by(|a, b| {
        b.1.0
            .cmp(&a.1.0)
            .then(b.1.1.total_cmp(&a.1.1))
            .then(a.0.cmp(&b.0))
    });
    v.into_iter().map(|(k, (n, _))| (k, n)).collect()
}

impl Explainer for StatisticalExplainer {
    fn describe(&self) -> String {
        "statistical".into()
    }

    fn explain(
        &self,
        evidence: &FeatureEvidence,
        examples: usize,
    ) -> Result<Explanation, LabelError> {
        let contexts = &evidence.top[..evidence.top.len().min(examples.max(1))];
        if contexts.is_empty() {
            return Err(LabelError::Answer("no activating contexts".into()));
        }
        let mut tokens: HashMap<String, (usize, f32)> = HashMap::new();
        let mut before: HashMap<String, (usize, f32)> = HashMap::new();
        for c in contexts {
            let mut seen = Vec::new();
            let mut seen_before = Vec::new();
            for (i, (&a, t)) in c.activations.iter().zip(&c.tokens).enumerate() {
                let key = normal(t);
                if a <= 0.0 || key.is_empty() {
                    continue;
                }
                let entry = tokens.entry(key.clone()).or_default();
                entry.1 += a;
                if !seen.contains(&key) {
                    entry.0 += 1;
                    seen.push(key);
                }
                if let Some(prev) = i.checked_sub(1).map(|j| normal(&c.tokens[j]))
                    && !prev.is_empty()
                {
                    let entry = before.entry(prev.clone()).or_default();
                    entry.1 += a;
                    if !seen_before.contains(&prev) {
                        entry.0 += 1;
                        seen_before.push(prev);
                    }
                }
            }
        }
        let top_tokens = ranked(tokens);
        if top_tokens.is_empty() {
            return Err(LabelError::Answer("no firing token with text".into()));
        }
        let keywords: Vec<String> = top_tokens
            .iter()
            .take(KEYWORDS)
            .map(|(k, _)| k.clone())
            .collect();
        let n = contexts.len();
        let quoted = |items: &[(String, usize)]| {
            items
                .iter()
                .map(|(k, c)| format!("\"{k}\" ({c}/{n})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut explanation = format!(
            "Fires on {} of the top contexts",
            quoted(&top_tokens[..top_tokens.len().min(KEYWORDS)])
        );
        let before = ranked(before);
        if let Some((prev, count)) = before.first().filter(|(_, c)| 2 * c >= n) {
            explanation += &format!(", often after \"{prev}\" ({count}/{n})");
        }
        let promoted: Vec<String> = evidence
            .logits
            .promoted
            .iter()
            .take(KEYWORDS)
            .map(|t| format!("\"{}\"", t.token.trim()))
            .collect();
        if !promoted.is_empty() {
            explanation += &format!("; promotes {}", promoted.join(", "));
        }
        explanation.push('.');
        Ok(Explanation {
            label: keywords.join(" / "),
            explanation,
            keywords,
        })
    }

    fn judge(
        &self,
        task: JudgeTask,
        explanation: &Explanation,
        shown: &[Shown],
    ) -> Result<Vec<bool>, LabelError> {
        let keywords: Vec<String> = if explanation.keywords.is_empty() {
            explanation
                .label
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect()
        } else {
            explanation.keywords.clone()
        };
        let is_keyword = |t: &String| keywords.contains(&normal(t));
        Ok(shown
            .iter()
            .map(|s| match task {
                JudgeTask::Detection => s.tokens.iter().any(is_keyword),
                JudgeTask::Fuzzing => {
                    let marked: Vec<&String> = s
                        .tokens
                        .iter()
                        .zip(&s.marked)
                        .filter(|(_, m)| **m)
                        .map(|(t, _)| t)
                        .collect();
                    let hits = marked.iter().filter(|t| is_keyword(t)).count();
                    !marked.is_empty() && 2 * hits >= marked.len()
                }
            })
            .collect())
    }

    fn usage(&self) -> Usage {
        Usage::default()
    }
}
