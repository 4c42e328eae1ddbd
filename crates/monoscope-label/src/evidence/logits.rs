//! Logit effects: each live feature's decoder direction, carried into the residual stream by the
//! projection after its hook (see [`Model::residual_direction`]), through the model's final norm
//! and unembedding, and the tokens it promotes and suppresses most.

use monoscope_lm::{HookName, Model, Tensor, to_host};
use monoscope_sae::Sae;
use rayon::prelude::*;

use crate::LabelError;
use crate::format::{FeatureEvidence, LogitEffects, LogitToken};

/// Decoder rows per product: bounds the `[rows, vocab]` logits buffer (~50 MB at a 49k vocab).
const ROWS_PER_PRODUCT: usize = 256;

/// Fills `logits` of every live feature in `evidence` with its `n` most promoted and
/// suppressed tokens.
pub fn logit_effects(
    model: &Model,
    sae: &Sae,
    hook: &HookName,
    evidence: &mut [FeatureEvidence],
    n: usize,
    token_text: &(dyn Fn(u32) -> String + Sync),
) -> Result<(), LabelError> {
    let width = model.hook_width(hook);
    if width != sae.d_in {
        return Err(LabelError::Invalid(format!(
            "{hook} of the model {} is {width} wide but the SAE takes d_in = {}",
            model.name(),
            sae.d_in
        )));
    }
    let probe = Tensor::<2>::zeros([1, width], model.device());
    if model.residual_direction(hook, probe).is_none() {
        tracing::info!("{hook} has no linear path to the residual stream: no logit effects");
        return Ok(());
    }
    let d = sae.d_in;
    let live: Vec<usize> = evidence
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.is_dead())
        .map(|(i, _)| i)
        .collect();
    for chunk in live.chunks(ROWS_PER_PRODUCT) {
        let mut rows = Vec::with_capacity(chunk.len() * d);
        for &i in chunk {
            let f = evidence[i].feature as usize;
            rows.extend_from_slice(&sae.w_dec[f * d..(f + 1) * d]);
        }
        let directions = Tensor::<2>::from_data(
            burn::tensor::TensorData::new(rows, [chunk.len(), d]),
            model.device(),
        );
        let resid = model
            .residual_direction(hook, directions)
            .expect("checked above")
            .unsqueeze::<3>();
        let logits = to_host(model.logits_from_residual(resid), "logit effects")?;
        let vocab = logits.len() / chunk.len();
        let effects: Vec<LogitEffects> = logits
            .par_chunks(vocab)
            .map(|row| extremes(row, n, token_text))
            .collect();
        for (&i, e) in chunk.iter().zip(effects) {
            evidence[i].logits = e;
        }
    }
    Ok(())
}

fn extremes(row: &[f32], n: usize, token_text: &dyn Fn(u32) -> String) -> LogitEffects {
    let n = n.min(row.len());
    let mut ids: Vec<u32> = (0..row.len() as u32).collect();
    let by_value = |a: &u32, b: &u32| row[*a as usize].total_cmp(&row[*b as usize]);
    let token = |id: u32| LogitToken {
        token: token_text(id),
        value: row[id as usize],
    };
    if n == 0 {
        return LogitEffects::default();
    }
    ids.select_nth_unstable_by(n - 1, by_value);
    let mut low: Vec<u32> = ids[..n].to_vec();
    low.sort_by(by_value);
    ids.select_nth_unstable_by(row.len() - n, by_value);
    let mut high: Vec<u32> = ids[row.len() - n..].to_vec();
    high.sort_by(|a, b| by_value(b, a));
    LogitEffects {
        promoted: high.into_iter().map(token).collect(),
        suppressed: low.into_iter().map(token).collect(),
    }
}
