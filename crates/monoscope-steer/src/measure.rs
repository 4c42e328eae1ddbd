//! Effects measured without sampling: how much more likely the target words become, and how
//! far the next-token distribution on neutral text moves (how much else broke).
//!
//! * A target string's log-probability after a context is the sum of its tokens'
//!   log-probabilities under teacher forcing, the target encoded on its own (no BOS) and
//!   appended to the context. A target that does not start with whitespace also counts with
//!   one leading space (`"bridge"` is `"bridge"` or `" bridge"`, disjoint continuations, so
//!   their probabilities add).
//! * The neutral-text KL is `KL(P_plain ‖ P_steered)` of the next-token distributions, in nats,
//!   averaged over every position of the text (BOS included as a context).

use monoscope_lm::{ForwardOptions, Interventions, PadSide, TokenBatch};

use crate::SteerError;
use crate::steerer::Steerer;

/// `log_softmax` of one row of logits, in f64.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let log_z = max
        + logits
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    logits.iter().map(|&x| x as f64 - log_z).collect()
}

/// `KL(softmax(p) ‖ softmax(q))` in nats.
pub fn kl_from_logits(p: &[f32], q: &[f32]) -> f64 {
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter()
        .zip(&lq)
        .map(|(&a, &b)| {
            if a == f64::NEG_INFINITY {
                0.0
            } else {
                a.exp() * (a - b)
            }
        })
        .sum::<f64>()
        .max(0.0)
}

/// Mean of [`kl_from_logits`] over the rows of two `[rows, vocab]` matrices.
pub fn mean_kl(p: &[f32], q: &[f32], vocab: usize) -> f64 {
    let rows = p.len() / vocab.max(1);
    if rows == 0 {
        return 0.0;
    }
    p.chunks(vocab)
        .zip(q.chunks(vocab))
        .map(|(a, b)| kl_from_logits(a, b))
        .sum::<f64>()
        / rows as f64
}

/// `log Σ exp(v)`, stable; `-∞` for no values.
pub fn log_sum_exp(values: &[f64]) -> f64 {
    let max = values.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + values.iter().map(|&x| (x - max).exp()).sum::<f64>().ln()
}

/// The spellings a target string counts as (see the module docs).
pub fn target_variants(target: &str) -> Vec<String> {
    let mut variants = vec![target.to_string()];
    if !target.starts_with(char::is_whitespace) {
        variants.push(format!(" {target}"));
    }
    variants
}

impl Steerer<'_> {
    /// Logits `[len, vocab]` of `ids` under `interventions`.
    pub fn logits(
        &self,
        ids: &[u32],
        interventions: &Interventions,
    ) -> Result<Vec<f32>, SteerError> {
        let out = self.model().forward(
            &TokenBatch::single(ids)?,
            &ForwardOptions::logits(interventions.clone()),
        )?;
        Ok(out.logits_host()?)
    }

    /// Mean next-token KL over `ids` between `plain_logits` (from [`Steerer::logits`] without
    /// interventions) and the model under `interventions`.
    pub fn kl_against(
        &self,
        ids: &[u32],
        plain_logits: &[f32],
        interventions: &Interventions,
    ) -> Result<f64, SteerError> {
        let steered = self.logits(ids, interventions)?;
        Ok(mean_kl(
            plain_logits,
            &steered,
            self.model().config().vocab_size,
        ))
    }

    /// `log P(target | context)` of each target (its variants combined), under `interventions`.
    pub fn target_logprobs(
        &self,
        context: &[u32],
        targets: &[String],
        interventions: &Interventions,
    ) -> Result<Vec<f64>, SteerError> {
        if context.is_empty() {
            return Err(SteerError::config(
                "prompt",
                "\"\"",
                "an empty context has no next token",
            ));
        }
        let tokenizer = self.model().tokenizer();
        let mut rows = Vec::new();
        let mut owners = Vec::new();
        for (t, target) in targets.iter().enumerate() {
            for variant in target_variants(target) {
                let ids = tokenizer.encode(&variant, false)?;
                if ids.is_empty() {
                    return Err(SteerError::config(
                        "targets",
                        format!("{target:?}"),
                        "encodes to no tokens",
                    ));
                }
                rows.push(context.iter().copied().chain(ids).collect::<Vec<u32>>());
                owners.push(t);
            }
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let batch = TokenBatch::padded(&rows, PadSide::Right, 0)?;
        let logp = self.model().log_probs(&batch, interventions)?;
        let width = batch.seq() - 1;
        let mut per_target = vec![Vec::new(); targets.len()];
        for (r, row) in rows.iter().enumerate() {
            // Entry c is log p(token c+1 | ..=c): the target's tokens are c+1 in len(context)..len(row).
            let sum: f64 = (context.len() - 1..row.len() - 1)
                .map(|c| logp[r * width + c] as f64)
                .sum();
            per_target[owners[r]].push(sum);
        }
        Ok(per_target.iter().map(|v| log_sum_exp(v)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_of_hand_computed_distributions() {
        // softmax([0, ln 3]) = [1/4, 3/4]; softmax([0, 0]) = [1/2, 1/2].
        let p = [0.0, 3f32.ln()];
        let q = [0.0, 0.0];
        let want = 0.25 * (0.25f64 / 0.5).ln() + 0.75 * (0.75f64 / 0.5).ln();
        assert!((kl_from_logits(&p, &q) - want).abs() < 1e-7);
        // Identical rows: exactly zero; a shift of all logits changes nothing.
        assert_eq!(kl_from_logits(&p, &p), 0.0);
        assert!(kl_from_logits(&p, &[5.0, 5.0 + 3f32.ln()]) < 1e-7);
        let two_rows = mean_kl(&[0.0, 3f32.ln(), 1.0, 1.0], &[0.0, 0.0, 1.0, 1.0], 2);
        assert!((two_rows - want / 2.0).abs() < 1e-7);
    }

    #[test]
    fn log_sum_exp_adds_probabilities() {
        let v = [0.25f64.ln(), 0.5f64.ln()];
        assert!((log_sum_exp(&v) - 0.75f64.ln()).abs() < 1e-12);
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
        assert_eq!(target_variants("bridge"), ["bridge", " bridge"]);
        assert_eq!(target_variants(" bridge"), [" bridge"]);
    }
}
