//! The stage's parameters (`[stage]` table of a pipeline file), with defaults and checks.

use monoscope_core::StageConfig;
use monoscope_lm::{MatmulKind, Precision};
use serde::{Deserialize, Serialize};

/// Who writes the labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExplainerKind {
    /// An instruction-tuned model through monoscope's runtime (the `model` input, or
    /// `explainer_model`).
    Local,
    /// An OpenAI-compatible chat endpoint (`[stage.http]`).
    Http,
    /// Common firing tokens and promoted tokens; no model.
    Statistical,
}

/// An OpenAI-compatible endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Base URL (`http://127.0.0.1:8080/v1`) or the full `.../chat/completions` URL.
    pub url: String,
    /// The `model` field of each request.
    pub model: String,
    /// Name of the environment variable holding the API key (the key is never written to
    /// run files). No key is sent when unset.
    pub api_key_env: Option<String>,
    /// Seconds one request may take, connection to last byte.
    pub timeout_s: f64,
    /// Retries after a timeout, connection error, HTTP 408/429/5xx or malformed answer.
    pub max_retries: u32,
    /// Milliseconds before the first retry (doubling each time).
    pub backoff_ms: u64,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Answer length limit of an explanation, in tokens.
    pub max_tokens: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            url: "http://127.0.0.1:8080/v1".into(),
            model: "default".into(),
            api_key_env: Default::default(),
            timeout_s: 60.0,
            max_retries: 3,
            backoff_ms: 500,
            concurrency: 4,
            max_tokens: 120,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LabelConfig {
    pub explainer: ExplainerKind,
    /// The model the store was captured from, when the `model` input is not connected: a path
    /// or a known name. Its tokenizer decodes the contexts and its unembedding gives the logit
    /// effects; it is also the local explainer unless `explainer_model` is set.
    pub model: String,
    /// A different model (path or known name) for the local explainer.
    pub explainer_model: Option<String>,
    /// Hook of the store to read (default: the SAE's `hook_name`, else the store's only hook).
    pub hook: Option<String>,
    /// How many live features a model explainer labels: a seeded random sample, so that the
    /// scores describe a typical feature. The statistical explainer labels every live one.
    pub max_features: usize,
    /// Highest-activation contexts kept per feature.
    pub top_n: usize,
    /// Tokens kept on each side of a selected token.
    pub window: usize,
    /// Activation quantiles sampled per feature.
    pub quantiles: usize,
    /// Contexts kept per quantile.
    pub quantile_examples: usize,
    /// Random contexts where the feature does not fire, kept per feature.
    pub random_examples: usize,
    pub histogram_bins: usize,
    /// Promoted and suppressed tokens kept per feature.
    pub logit_tokens: usize,
    /// Top contexts shown to the explainer.
    pub explain_examples: usize,
    /// Run the detection and fuzzing scorers.
    pub score: bool,
    /// Contexts per class (firing, not firing) for each scorer.
    pub score_examples: usize,
    /// With a model explainer, also label with the statistical labeller and score it with
    /// the same judge.
    pub baseline: bool,
    /// With a model explainer, give every live feature outside its sample a statistical
    /// label (scored by the statistical judge), so that every live feature can be searched.
    /// Their records say `"explainer": "statistical"`; `summary.json` counts them apart.
    pub statistical_rest: bool,
    /// Arithmetic of the local model's linear layers: `int8` (the default here: labelling runs
    /// many generations) or `f32` (the reference).
    pub matmul: MatmulKind,
    /// Float type of the model's weights and matrix products on a GPU device: `f32`, `f16` or
    /// `bf16` (residual stream, norms and softmax stay f32). The CPU takes `f32` only.
    pub precision: Precision,
    /// Features whose labels the local explainer writes as one batch (their shared prompt
    /// prefix runs once; generation steps serve every row).
    pub explain_batch: usize,
    /// Answer length limit of the local explainer, in tokens.
    pub max_new_tokens: usize,
    /// Keep model answers in the response cache (`<monoscope cache>/label-responses`).
    pub cache: bool,
    /// Seed of every sample (default: the pipeline seed).
    pub seed: Option<u64>,
    /// The fraction of the features asked of a model explainer that may fail (a request that
    /// failed after its retries, an unusable answer) with the stage still succeeding. Beyond
    /// it the stage fails without its completion marker, keeping the labels obtained, and
    /// a rerun asks only for the missing ones (the others are in the response cache).
    pub max_failed_fraction: f64,
    pub http: HttpConfig,
}

impl Default for LabelConfig {
    fn default() -> Self {
        LabelConfig {
            explainer: ExplainerKind::Local,
            model: "smollm2".into(),
            explainer_model: Default::default(),
            hook: Default::default(),
            max_features: 200,
            top_n: 10,
            window: 8,
            quantiles: 5,
            quantile_examples: 4,
            random_examples: 10,
            histogram_bins: 20,
            logit_tokens: 10,
            explain_examples: 8,
            score: true,
            score_examples: 5,
            baseline: true,
            statistical_rest: true,
            matmul: MatmulKind::Int8,
            precision: Precision::F32,
            explain_batch: 8,
            max_new_tokens: 40,
            cache: true,
            seed: Default::default(),
            max_failed_fraction: 0.1,
            http: Default::default(),
        }
    }
}

impl StageConfig for LabelConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("top_n", self.top_n),
            ("quantiles", self.quantiles),
            ("histogram_bins", self.histogram_bins),
            ("explain_examples", self.explain_examples),
            ("max_new_tokens", self.max_new_tokens),
            ("explain_batch", self.explain_batch),
            ("http.concurrency", self.http.concurrency),
            ("http.max_tokens", self.http.max_tokens),
        ] {
            if value == 0 {
                problems.push((key.to_string(), "= 0: expected at least 1".to_string()));
            }
        }
        if self.score && (self.score_examples == 0 || self.random_examples == 0) {
            problems.push((
                "score_examples".into(),
                format!(
                    "= {} with random_examples = {}: scoring needs at least 1 of each (or set score = false)",
                    self.score_examples, self.random_examples
                ),
            ));
        }
        if self.score && self.quantile_examples == 0 {
            problems.push((
                "quantile_examples".into(),
                "= 0: scoring draws its firing contexts from the quantile samples (or set score = false)".into(),
            ));
        }
        if self.window > 256 {
            problems.push((
                "window".into(),
                format!("= {}: expected at most 256", self.window),
            ));
        }
        if !(0.0..=1.0).contains(&self.max_failed_fraction) {
            problems.push((
                "max_failed_fraction".into(),
                format!(
                    "= {}: expected a fraction from 0 to 1",
                    self.max_failed_fraction
                ),
            ));
        }
        if !(self.http.timeout_s.is_finite() && self.http.timeout_s > 0.0) {
            problems.push((
                "http.timeout_s".into(),
                format!(
                    "= {}: expected a positive number of seconds",
                    self.http.timeout_s
                ),
            ));
        }
        if self.explainer == ExplainerKind::Http {
            let url = self.http.url.trim();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push((
                    "http.url".into(),
                    format!("= {url:?}: expected an http:// or https:// URL"),
                ));
            }
        }
        if let Some(var) = &self.http.api_key_env
            && (var.is_empty() || var.contains('='))
        {
            problems.push((
                "http.api_key_env".into(),
                format!("= {var:?}: expected the name of an environment variable"),
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(LabelConfig::default().validate().is_empty());
        let mut c = LabelConfig {
            top_n: 0,
            explainer: ExplainerKind::Http,
            ..LabelConfig::default()
        };
        c.http.url = "localhost:8080".into();
        c.http.timeout_s = f64::NAN;
        let keys: Vec<String> = c.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["top_n", "http.timeout_s", "http.url"]);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err =
            serde_json::from_value::<LabelConfig>(serde_json::json!({"top_k": 3})).unwrap_err();
        assert!(err.to_string().contains("top_k"), "{err}");
        let err = serde_json::from_value::<LabelConfig>(serde_json::json!({"http": {"key": "x"}}))
            .unwrap_err();
        assert!(err.to_string().contains("key"), "{err}");
    }
}
