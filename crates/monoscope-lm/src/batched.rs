//! Many prompts at once: next-token logits and generation for a set of token sequences, with
//! the tokens they all start with run once.
//!
//! Autointerp asks a model hundreds of questions that differ only at the end (the same
//! instructions and label, another context). The rows' longest common prefix is run as one
//! sequence, its KV cache copied to every row, and only the rest of each row is run as a
//! left-padded batch after it. Padding sits between the prefix and a row's own tokens; the
//! mask and the valid-token positions make that compute exactly what the unpadded row does.
//! Generation then feeds one token per row per step; a row that has stopped is fed a padding
//! token (masked, its output ignored) so the others continue in the same batch. Off the host
//! path (a GPU device), greedy steps pick each row's token on the device and read back one id
//! per row instead of the last position's logits.

use burn::prelude::{Device, Tensor};

use crate::forward::{KvCache, Logits, to_host};
use crate::sampling::{Rng, pick};
use crate::{
    ForwardOptions, GenerateOptions, Generation, LmError, Model, PadSide, Sampling, TokenBatch,
};

/// What one step of generation hands to the next.
enum Next {
    /// Each row's last logits, for the host to pick from.
    Logits(Vec<Vec<f32>>),
    /// Each row's greedy pick, made on the device.
    Picked(Vec<u32>),
}

/// How many leading tokens every row shares, leaving each row at least one token of its own
/// (whose logits are the answer).
pub fn shared_prefix_len(rows: &[Vec<u32>]) -> usize {
    let Some(first) = rows.first() else {
        return 0;
    };
    let mut len = rows
        .iter()
        .map(Vec::len)
        .min()
        .unwrap_or(0)
        .saturating_sub(1);
    for row in &rows[1..] {
        len = first[..len]
            .iter()
            .zip(row)
            .take_while(|(a, b)| a == b)
            .count();
    }
    len
}

impl Model {
    /// The logits of the token after each row (`vocab` floats per row), running the rows'
    /// shared prefix once. `pad_id` fills the padding (any id; it is masked).
    pub fn next_token_logits(
        &self,
        rows: &[Vec<u32>],
        pad_id: u32,
        options: &ForwardOptions,
    ) -> Result<Vec<Vec<f32>>, LmError> {
        let (_, logits) = self.prefill(rows, pad_id, options)?;
        Ok(split_rows(to_host(logits, "logits")?, rows.len()))
    }

    /// Continues every prompt as [`Model::generate`] would on its own (row `i` with the same
    /// options gives the same tokens, up to floating-point summation order), in one batch.
    pub fn generate_batch(
        &self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Vec<Generation>, LmError> {
        options.sampling.validate()?;
        let stop = options
            .stop_tokens
            .clone()
            .unwrap_or_else(|| self.config.eos_token_ids.clone());
        let pad = stop.first().copied().unwrap_or(0);
        let seed = match options.sampling {
            crate::Sampling::Sample { seed, .. } => seed,
            crate::Sampling::Greedy => 0,
        };
        let mut out: Vec<Generation> = prompts
            .iter()
            .map(|_| Generation {
                tokens: Vec::new(),
                stopped_on: None,
                logits: Vec::new(),
            })
            .collect();
        if prompts.is_empty() || options.max_new_tokens == 0 {
            return Ok(out);
        }
        let forward = ForwardOptions {
            interventions: options.interventions.clone(),
            logits: Logits::Last,
            ..ForwardOptions::default()
        };
        let mut rngs: Vec<Rng> = prompts.iter().map(|_| Rng::new(seed)).collect();
        // The host path reads logits where they are; elsewhere a greedy step that keeps no
        // logits takes its argmax on the device (ties may resolve to another maximum there
        // than the host's first one).
        let on_host = self.host_kernels() && *self.device() == Device::flex();
        let picks_on_device =
            !on_host && matches!(options.sampling, Sampling::Greedy) && !options.keep_logits;
        let rows = prompts.len();
        let read = |logits: Tensor<3>| -> Result<Next, LmError> {
            Ok(match picks_on_device {
                true => Next::Picked(argmax_rows(logits)?),
                false => Next::Logits(split_rows(to_host(logits, "logits")?, rows)),
            })
        };
        let (mut cache, logits) = self.prefill(prompts, pad, &forward)?;
        let mut next = read(logits)?;
        let mut active = vec![true; rows];
        loop {
            let mut step = Vec::with_capacity(rows);
            for (row, generation) in out.iter_mut().enumerate() {
                if !active[row] {
                    step.push(pad);
                    continue;
                }
                let token = match &mut next {
                    Next::Picked(tokens) => tokens[row],
                    Next::Logits(logits) => {
                        let token = pick(&logits[row], &options.sampling, &mut rngs[row]);
                        if options.keep_logits {
                            generation.logits.push(std::mem::take(&mut logits[row]));
                        }
                        token
                    }
                };
                generation.tokens.push(token);
                if stop.contains(&token) {
                    generation.stopped_on = Some(token);
                    active[row] = false;
                } else if generation.tokens.len() >= options.max_new_tokens {
                    active[row] = false;
                }
                step.push(token);
            }
            if !active.iter().any(|&a| a) {
                return Ok(out);
            }
            let batch = TokenBatch::with_mask(step, rows, 1, active.clone())?;
            let logits = self
                .forward_cached(&batch, &forward, &mut cache)?
                .logits
                .ok_or_else(|| LmError::EmptyInput("the step returned no logits".into()))?;
            next = read(logits)?;
        }
    }

    /// Runs the shared prefix once, then every row's remainder; returns the cache over all
    /// rows and each row's last logits, `[rows, 1, vocab]` on the model's device.
    fn prefill(
        &self,
        rows: &[Vec<u32>],
        pad_id: u32,
        options: &ForwardOptions,
    ) -> Result<(KvCache, Tensor<3>), LmError> {
        if rows.is_empty() {
            return Err(LmError::EmptyInput("no rows to run".into()));
        }
        if let Some(r) = rows.iter().position(Vec::is_empty) {
            return Err(LmError::EmptyInput(format!("batch row {r} has no tokens")));
        }
        let options = ForwardOptions {
            logits: Logits::Last,
            ..options.clone()
        };
        // One row has nothing to share: it runs as one pass, as a plain forward would.
        let shared = match rows.len() {
            1 => 0,
            _ => shared_prefix_len(rows),
        };
        let mut cache = KvCache::new(self.config.n_layers);
        if shared > 0 {
            let prefix = ForwardOptions {
                logits: Logits::Skip,
                ..options.clone()
            };
            self.forward_cached(
                &TokenBatch::single(&rows[0][..shared])?,
                &prefix,
                &mut cache,
            )?;
            cache = cache.repeat_rows(rows.len())?;
        }
        let rest: Vec<Vec<u32>> = rows.iter().map(|r| r[shared..].to_vec()).collect();
        let batch = TokenBatch::padded(&rest, PadSide::Left, pad_id)?;
        let logits = self
            .forward_cached(&batch, &options, &mut cache)?
            .logits
            .ok_or_else(|| LmError::EmptyInput("the prefill returned no logits".into()))?;
        Ok((cache, logits))
    }
}

/// Each row's argmax of `[rows, 1, vocab]` logits, taken on their device; one id per row comes
/// back.
fn argmax_rows(logits: Tensor<3>) -> Result<Vec<u32>, LmError> {
    let [rows, _, vocab] = logits.dims();
    let ids = logits
        .reshape([rows, vocab])
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .map_err(|e| LmError::TensorRead {
            what: "greedy picks".into(),
            detail: format!("{e:?}"),
        })?;
    Ok(ids.into_iter().map(|id| id as u32).collect())
}

fn split_rows(flat: Vec<f32>, rows: usize) -> Vec<Vec<f32>> {
    let width = flat.len() / rows.max(1);
    flat.chunks(width.max(1)).map(<[f32]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::shared_prefix_len;

    #[test]
    fn shared_prefix_leaves_every_row_a_token() {
        assert_eq!(shared_prefix_len(&[vec![1, 2, 3], vec![1, 2, 4, 5]]), 2);
        assert_eq!(shared_prefix_len(&[vec![1, 2, 3], vec![1, 2, 3, 4]]), 2);
        assert_eq!(shared_prefix_len(&[vec![1, 2, 3]]), 2);
        assert_eq!(shared_prefix_len(&[vec![7], vec![7]]), 0);
        assert_eq!(shared_prefix_len(&[vec![1, 2], vec![3, 2]]), 0);
        assert_eq!(shared_prefix_len(&[]), 0);
    }
}
