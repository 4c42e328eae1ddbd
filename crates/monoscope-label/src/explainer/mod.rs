//! Explainers: who writes a feature's label, and who judges a label against contexts.
//!
//! One trait, [`Explainer`], three implementations:
//! - [`LocalExplainer`]: an instruction-tuned model through monoscope's own runtime (the
//!   default model, or any model `monoscope-lm` loads); writes the labels of several features
//!   as one batch and judges by comparing the next-token logits of `yes` and `no`, all of a
//!   label's contexts in one batch after their shared prompt prefix.
//! - [`HttpExplainer`]: any OpenAI-compatible chat endpoint, with timeouts, retries with
//!   backoff and a concurrency limit (worker threads in the stage).
//! - [`StatisticalExplainer`]: common firing tokens and the top promoted tokens; always works,
//!   and is the baseline the others are compared with.
//!
//! Model answers go through a [`ResponseCache`] keyed by backend, model, prompt and
//! parameters, so a rerun costs nothing.

mod cache;
mod http;
mod local;
mod statistical;

use std::sync::atomic::{AtomicU64, Ordering};

pub use cache::ResponseCache;
pub use http::{HttpExplainer, HttpSettings};
pub use local::LocalExplainer;
pub use statistical::StatisticalExplainer;

use crate::LabelError;
use crate::format::FeatureEvidence;
pub use crate::prompt::Explanation;
use crate::prompt::{JudgeTask, Shown};

/// Writes labels and judges them.
pub trait Explainer: Sync {
    /// Which explainer, for `labels.jsonl` and the summary (never an API key).
    fn describe(&self) -> String;

    /// A label for the feature from its evidence; `examples` top contexts are shown.
    fn explain(
        &self,
        evidence: &FeatureEvidence,
        examples: usize,
    ) -> Result<Explanation, LabelError>;

    /// Labels for several features; a model explainer may run them as one batch. By default
    /// they are explained one by one.
    fn explain_batch(
        &self,
        evidence: &[&FeatureEvidence],
        examples: usize,
    ) -> Vec<Result<Explanation, LabelError>> {
        evidence.iter().map(|e| self.explain(e, examples)).collect()
    }

    /// For each shown context: does the label say the feature fires there (detection), or on
    /// the marked tokens (fuzzing)?
    fn judge(
        &self,
        task: JudgeTask,
        explanation: &Explanation,
        shown: &[Shown],
    ) -> Result<Vec<bool>, LabelError>;

    /// Tokens sent and received, and answers served from the cache, so far.
    fn usage(&self) -> Usage;
}

/// Running totals of an explainer's cost.
#[derive(Debug, Default)]
pub struct UsageCounter {
    tokens_in: AtomicU64,
    tokens_out: AtomicU64,
    cache_hits: AtomicU64,
}

/// A snapshot of a [`UsageCounter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cache_hits: u64,
}

impl UsageCounter {
    pub fn add(&self, tokens_in: u64, tokens_out: u64) {
        self.tokens_in.fetch_add(tokens_in, Ordering::Relaxed);
        self.tokens_out.fetch_add(tokens_out, Ordering::Relaxed);
    }

    pub fn hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Usage {
        Usage {
            tokens_in: self.tokens_in.load(Ordering::Relaxed),
            tokens_out: self.tokens_out.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
        }
    }
}
