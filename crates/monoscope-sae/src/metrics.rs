//! What a training run reports every `metrics_every` steps: one JSON line per report
//! ([`StepMetrics`], a record of `metrics.jsonl`).

pub use monoscope_artifacts::train::StepMetrics;
